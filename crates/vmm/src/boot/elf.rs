//! Reading ELF kernels (32- and 64-bit, little-endian) with the `object`
//! crate: which boot convention a kernel follows, and the headers the
//! OpenBSD loader copies for the kernel's symbol table.

use object::LittleEndian as LE;
use object::elf::{FileHeader32, FileHeader64, PT_NOTE};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};

use super::BootError;

/// The note (owner "Xen", type XEN_ELFNOTE_PHYS32_ENTRY) that gives the
/// 32-bit PVH entry point.
const XEN_OWNER: &[u8] = b"Xen";
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Linux kernels carry notes owned by "Linux".
const LINUX_OWNER: &[u8] = b"Linux";

/// Which boot convention an ELF kernel follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Has a PVH entry note (Linux `vmlinux` built with CONFIG_PVH).
    Pvh,
    /// A Linux ELF kernel without one: not bootable directly.
    LinuxWithoutPvh,
    /// Anything else: booted the way vmd boots OpenBSD kernels.
    Other,
}

/// A program header, class-independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// A section header: its raw bytes (copied for the kernel) and the fields
/// the loader reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section<'a> {
    pub raw: &'a [u8],
    pub name: &'a [u8],
    pub kind: u32,
    pub offset: u64,
    pub size: u64,
}

/// The parts of an ELF file the loaders need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfImage<'a> {
    pub class64: bool,
    pub entry: u64,
    /// The file header's raw bytes.
    pub header: &'a [u8],
    pub segments: Vec<Segment>,
    pub sections: Vec<Section<'a>>,
    pub notes: Vec<(&'a [u8], u32)>,
}

fn bad(err: object::read::Error) -> BootError {
    BootError::image(format!("ELF kernel: {err}"))
}

fn read<'a, Elf: FileHeader<Endian = LE>>(image: &'a [u8]) -> Result<ElfImage<'a>, BootError> {
    let header = Elf::parse(image).map_err(bad)?;
    if !header.is_little_endian() {
        return Err(BootError::image("big-endian ELF kernel"));
    }
    let endian = LE;
    let program_headers = header.program_headers(endian, image).map_err(bad)?;
    let segments = program_headers
        .iter()
        .map(|p| Segment {
            kind: p.p_type(endian),
            flags: p.p_flags(endian),
            offset: p.p_offset(endian).into(),
            paddr: p.p_paddr(endian).into(),
            filesz: p.p_filesz(endian).into(),
            memsz: p.p_memsz(endian).into(),
        })
        .collect();
    let mut notes = Vec::new();
    for p in program_headers
        .iter()
        .filter(|p| p.p_type(endian) == PT_NOTE)
    {
        if let Some(mut iter) = p.notes(endian, image).map_err(bad)? {
            while let Some(note) = iter.next().map_err(bad)? {
                notes.push((note.name(), note.n_type(endian)));
            }
        }
    }
    let section_headers = header.section_headers(endian, image).map_err(bad)?;
    let strings = header
        .section_strings(endian, image, section_headers)
        .map_err(bad)?;
    let size = std::mem::size_of::<Elf::SectionHeader>();
    let table_start: u64 = header.e_shoff(endian).into();
    let sections = section_headers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = table_start as usize + i * size;
            Section {
                raw: &image[at..at + size],
                name: s.name(endian, strings).unwrap_or_default(),
                kind: s.sh_type(endian),
                offset: s.sh_offset(endian).into(),
                size: s.sh_size(endian).into(),
            }
        })
        .collect();
    Ok(ElfImage {
        class64: Elf::is_type_64_sized(),
        entry: header.e_entry(endian).into(),
        header: &image[..std::mem::size_of::<Elf>()],
        segments,
        sections,
        notes,
    })
}

/// Parses a 32- or 64-bit little-endian ELF file.
pub fn parse(image: &[u8]) -> Result<ElfImage<'_>, BootError> {
    match image.get(4) {
        Some(1) => read::<FileHeader32<LE>>(image),
        Some(2) => read::<FileHeader64<LE>>(image),
        _ => Err(BootError::image("ELF kernel of unknown class")),
    }
}

/// Tells a PVH-capable kernel from a Linux kernel without PVH and from
/// everything else.
pub fn inspect(image: &[u8]) -> Result<Flavor, BootError> {
    let elf = parse(image)?;
    let has = |owner: &[u8], kind: Option<u32>| {
        elf.notes
            .iter()
            .any(|(name, t)| *name == owner && kind.is_none_or(|k| k == *t))
    };
    Ok(if has(XEN_OWNER, Some(XEN_ELFNOTE_PHYS32_ENTRY)) {
        Flavor::Pvh
    } else if has(LINUX_OWNER, None) {
        Flavor::LinuxWithoutPvh
    } else {
        Flavor::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit ELF file with one PT_NOTE segment holding one note.
    fn elf_with_note(owner: &[u8], kind: u32) -> Vec<u8> {
        let mut note = Vec::new();
        note.extend_from_slice(&(owner.len() as u32 + 1).to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&kind.to_le_bytes());
        note.extend_from_slice(owner);
        note.push(0);
        note.resize(note.len().div_ceil(4) * 4, 0);
        note.extend_from_slice(&0x0100_0000u32.to_le_bytes());

        let mut f = vec![0u8; 64 + 56];
        f[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // executable
        f[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&PT_NOTE.to_le_bytes());
        f[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        f[ph + 32..ph + 40].copy_from_slice(&(note.len() as u64).to_le_bytes());
        f[ph + 40..ph + 48].copy_from_slice(&(note.len() as u64).to_le_bytes());
        f[ph + 48..ph + 56].copy_from_slice(&4u64.to_le_bytes());
        f.extend_from_slice(&note);
        f
    }

    #[test]
    fn flavors() {
        assert_eq!(
            inspect(&elf_with_note(b"Xen", XEN_ELFNOTE_PHYS32_ENTRY)).unwrap(),
            Flavor::Pvh
        );
        assert_eq!(
            inspect(&elf_with_note(b"Linux", 1)).unwrap(),
            Flavor::LinuxWithoutPvh
        );
        assert_eq!(
            inspect(&elf_with_note(b"Xen", 5)).unwrap(),
            Flavor::Other,
            "another Xen note is no PVH entry"
        );
        assert_eq!(
            inspect(&elf_with_note(b"OpenBSD", 1)).unwrap(),
            Flavor::Other
        );
        assert!(inspect(b"\x7fELF\x03").is_err());
    }
}
