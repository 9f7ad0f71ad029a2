//! OpenBSD kernels (and any ELF kernel without a PVH note), booted the way
//! vmd's built-in loader does it (docs/machine.md, "Boot"), so a kernel that boots
//! under vmd boots here:
//!
//! - program segments at their physical address masked to 256 MiB, BSS
//!   zeroed, the `.openbsd.randomdata` segment filled with random bytes;
//! - after the kernel: a copy of the ELF header, the section headers, and
//!   the symbol and string tables (what `boot(8)` leaves for ddb);
//! - the boot-argument page at 0x2000 (memory map, serial console, the
//!   boot MAC for `boot device net`), the argument stack at 0xF000, the
//!   GDT at 0x10000 and identity page tables from 0x11000;
//! - 64-bit kernels start in compatibility mode under long mode, 32-bit
//!   ones in protected mode with 4 MiB pages.
//!
//! linux-loader does not fit here: it loads 64-bit images only, at the
//! unmasked physical address, and knows neither the random-data segment
//! nor the symbol layout.

use vm_memory::{Bytes, GuestAddress};

use super::BootError;
use super::cpu_state::{EntryState, Paging, Segment, identity_map_long, identity_map_pse32};
use super::elf::{self, ElfImage};
use crate::memory::{GuestMemoryMmap, GuestRam, Layout, RangeKind};

pub const BOOTARGS_ADDR: u64 = 0x2000;
pub const STACK_PAGE: u64 = 0xf000;
pub const GDT_ADDR: u64 = 0x10000;
pub const PML4_ADDR: u64 = 0x11000;
/// The 32-bit page directory (the page the 64-bit PDPT uses otherwise).
pub const PD32_ADDR: u64 = 0x12000;
const PAGE: u64 = 0x1000;

/// What the loader itself puts in low memory after the kernel: the boot
/// arguments, the argument stack, the GDT and the page tables (the 64-bit
/// PML4, PDPT and one page directory; the 32-bit directory shares the
/// PDPT's page). A kernel loaded over it would be overwritten.
pub const LOADER_AREAS: [std::ops::Range<u64>; 2] = [
    BOOTARGS_ADDR..BOOTARGS_ADDR + PAGE,
    STACK_PAGE..PML4_ADDR + 3 * PAGE,
];

/// Kernels link at high virtual addresses; their load address is the
/// physical address with the top bits dropped.
pub const LOAD_MASK: u64 = 0x0fff_ffff;

const PT_LOAD: u32 = 1;
const PT_OPENBSD_RANDOMIZE: u32 = 0x65a3_dbe6;
const PF_RWX: u32 = 0x7;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHF_ALLOC: u64 = 0x2;

const BOOTARG_MEMMAP: u32 = 0;
const BOOTARG_CONSDEV: u32 = 5;
const BOOTARG_BOOTMAC: u32 = 7;
const BOOTARG_END: u32 = 0xffff_ffff;
const BIOS_MAP_FREE: u32 = 1;
const BIOS_MAP_RES: u32 = 2;
/// com0: major 8, minor 0 (`makedev(8, 0)`), at 0x3f8, 115200 baud.
const CONSDEV_COM0: u32 = 8 << 8;
const CONSOLE_SPEED: u32 = 115_200;
const CONSOLE_PORT: u32 = 0x3f8;
/// The boot-argument API version the kernel expects.
const BOOTARG_APIVER: u32 = 0x0e;
/// sd0a: MAKEBOOTDEV(4, 0, 0, 0, 0) with the B_DEVMAGIC bits.
const BOOTDEV_SD0A: u32 = 0xa000_0004;

// GDT selectors (indices): 0x08 32-bit code, 0x10 data, 0x18 64-bit code.
const CODE32: usize = 1;
const DATA: usize = 2;

/// An OpenBSD ELF kernel, ready to load.
pub struct Kernel {
    image: Vec<u8>,
    boot_mac: Option<[u8; 6]>,
}

/// Where the loaded kernel ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub entry: u64,
    /// First byte after the kernel and its symbols (`esym`).
    pub end: u64,
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

impl Kernel {
    pub fn prepare(image: Vec<u8>, boot_mac: Option<[u8; 6]>) -> Result<Kernel, BootError> {
        let elf = elf::parse(&image)?;
        if !elf.segments.iter().any(|s| s.kind == PT_LOAD) {
            return Err(BootError::image("the ELF kernel has nothing to load"));
        }
        Ok(Kernel { image, boot_mac })
    }

    pub fn load(self, ram: &GuestRam) -> Result<EntryState, BootError> {
        let mem = &ram.mem;
        let elf = elf::parse(&self.image)?;
        let loaded = load_image(ram, &self.image, &elf)?;

        let boot_args = boot_arguments(&ram.layout, self.boot_mac);
        mem.write_slice(&boot_args, GuestAddress(BOOTARGS_ADDR))
            .map_err(|e| BootError::memory("the boot arguments", e))?;
        let stack = argument_stack(boot_args.len() as u32, loaded.end as u32);
        let rsp = STACK_PAGE + PAGE - stack.len() as u64;
        mem.write_slice(&stack, GuestAddress(rsp))
            .map_err(|e| BootError::memory("the boot stack", e))?;

        let paging = if elf.class64 {
            identity_map_long(mem, PML4_ADDR, 1)
                .map_err(|e| BootError::memory("page tables", e))?;
            Paging::Long { cr3: PML4_ADDR }
        } else {
            identity_map_pse32(mem, PD32_ADDR).map_err(|e| BootError::memory("page tables", e))?;
            Paging::Pse32 { cr3: PD32_ADDR }
        };
        let state = EntryState {
            gdt_addr: GDT_ADDR,
            gdt: vec![
                None,
                Some(Segment::Code32),
                Some(Segment::Data),
                Some(Segment::Code64),
            ],
            // Even 64-bit kernels start on the 32-bit code segment: long
            // mode is active, and their first instructions run in
            // compatibility mode.
            code: CODE32,
            data: DATA,
            paging,
            rip: loaded.entry,
            rsp,
            rsi: 0,
            rbx: 0,
        };
        state
            .write_gdt(mem)
            .map_err(|e| BootError::memory("the GDT", e))?;
        Ok(state)
    }
}

/// Loads the segments and the symbol tables; returns the entry and end.
/// Everything goes to guest RAM clear of the loader's own areas
/// ([`LOADER_AREAS`]): a segment (with its BSS), the random-data segment
/// or the symbols anywhere else (the reserved areas, no memory at all,
/// where the boot arguments or page tables go) is an error, and so is a
/// segment whose bytes are not in the file.
pub fn load_image(ram: &GuestRam, image: &[u8], elf: &ElfImage) -> Result<Loaded, BootError> {
    let mem = &ram.mem;
    fn fits(what: &str, e: impl std::fmt::Display) -> BootError {
        BootError::memory(what, e)
    }
    let in_ram = |what: &str, addr: u64, len: u64| {
        if !ram.layout.in_ram(addr, len) {
            return Err(fits(
                what,
                format!("{addr:#x}+{len:#x} is not in the guest's RAM"),
            ));
        }
        let end = addr + len;
        match LOADER_AREAS
            .iter()
            .find(|area| len > 0 && addr < area.end && area.start < end)
        {
            Some(area) => Err(BootError::image(format!(
                "{what} at {addr:#x}+{len:#x} overlaps the boot loader's data at {:#x}..{:#x}",
                area.start, area.end
            ))),
            None => Ok(()),
        }
    };
    let mut end = 0u64;
    for segment in &elf.segments {
        if segment.kind != PT_LOAD || segment.flags & PF_RWX == 0 {
            continue;
        }
        let addr = segment.paddr & LOAD_MASK;
        in_ram("the kernel", addr, segment.filesz.max(segment.memsz))?;
        let data = usize::try_from(segment.offset)
            .ok()
            .zip(usize::try_from(segment.filesz).ok())
            .and_then(|(start, len)| image.get(start..start.checked_add(len)?))
            .ok_or_else(|| BootError::image("an ELF segment lies outside the file"))?;
        mem.write_slice(data, GuestAddress(addr))
            .map_err(|e| fits("the kernel", e))?;
        if segment.memsz > segment.filesz {
            zero(mem, addr + segment.filesz, segment.memsz - segment.filesz)
                .map_err(|e| fits("the kernel's BSS", e))?;
        }
        end = end.max(addr + segment.memsz);
    }
    // The random-data segment lies inside a loaded one: fill it last.
    for segment in elf
        .segments
        .iter()
        .filter(|s| s.kind == PT_OPENBSD_RANDOMIZE)
    {
        let addr = segment.paddr & LOAD_MASK;
        in_ram("the random data segment", addr, segment.filesz)?;
        let mut random = [0u8; 4096];
        let mut done = 0;
        while done < segment.filesz {
            let n = (segment.filesz - done).min(random.len() as u64) as usize;
            fill_random(&mut random[..n]);
            mem.write_slice(&random[..n], GuestAddress(addr + done))
                .map_err(|e| fits("the random data segment", e))?;
            done += n as u64;
        }
    }
    let symbols_at = round_up(end, word(elf));
    // The RAM left after the kernel bounds the symbol area: kept sections
    // may all name the same bytes of the file, many times over.
    let room = ram
        .layout
        .ranges
        .iter()
        .filter(|r| r.kind == RangeKind::Ram && (r.start..r.start + r.size).contains(&symbols_at))
        .map(|r| r.start + r.size - symbols_at)
        .next()
        .unwrap_or(0);
    let symbols = symbol_area(image, elf, room)?;
    in_ram("the kernel's symbols", symbols_at, symbols.len() as u64)?;
    mem.write_slice(&symbols, GuestAddress(symbols_at))
        .map_err(|e| fits("the kernel's symbols", e))?;
    Ok(Loaded {
        entry: elf.entry & LOAD_MASK,
        end: symbols_at + symbols.len() as u64,
    })
}

/// Zeroes `len` bytes of guest memory at `addr`, a page at a time: a BSS
/// may be as large as the guest.
fn zero(mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<(), vm_memory::GuestMemoryError> {
    let page = [0u8; PAGE as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(PAGE) as usize;
        mem.write_slice(&page[..n], GuestAddress(addr + done))?;
        done += n as u64;
    }
    Ok(())
}

fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most the given length into the
        // slice's remaining bytes.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
}

/// Pointer size of the ELF class: what the symbol area aligns to.
fn word(elf: &ElfImage) -> u64 {
    if elf.class64 { 8 } else { 4 }
}

/// The ELF header (pointing at section headers right after it), all
/// section headers, and the contents of the symbol table, string tables,
/// `.debug_line` and CTF sections, each rounded up to the word size. Kept
/// sections have their offsets rewritten relative to the header copy and
/// are marked allocated, so the kernel can find them from `end`. A kept
/// section whose contents are not in the file is an error, and so is an
/// area of more than `room` bytes (checked before it is built).
fn symbol_area(image: &[u8], elf: &ElfImage, room: u64) -> Result<Vec<u8>, BootError> {
    let word = word(elf) as usize;
    let kept = |s: &elf::Section| {
        s.kind == SHT_SYMTAB
            || s.kind == SHT_STRTAB
            || s.name == b".debug_line"
            || s.name == b".SUNW_ctf"
    };
    let has_symbols = elf.sections.iter().any(|s| s.kind == SHT_SYMTAB);

    let mut header = elf.header.to_vec();
    let section_table = elf.sections.iter().map(|s| s.raw.len()).sum::<usize>();
    let mut offset = round_up((header.len() + section_table) as u64, word as u64);
    let too_large = |size: u64| {
        BootError::memory(
            "the kernel's symbols",
            format!("{size:#x} bytes after the kernel, {room:#x} left in its RAM"),
        )
    };
    if offset > room {
        return Err(too_large(offset));
    }
    let mut table = Vec::with_capacity(section_table);
    let mut contents = Vec::new();
    for section in &elf.sections {
        let mut raw = section.raw.to_vec();
        if has_symbols && kept(section) {
            let data = usize::try_from(section.offset)
                .ok()
                .zip(usize::try_from(section.size).ok())
                .and_then(|(start, len)| image.get(start..start.checked_add(len)?))
                .ok_or_else(|| BootError::image("an ELF symbol section lies outside the file"))?;
            let grown = offset + round_up(section.size, word as u64);
            if grown > room {
                return Err(too_large(grown));
            }
            contents.extend_from_slice(data);
            contents.resize(round_up(contents.len() as u64, word as u64) as usize, 0);
            set_section(&mut raw, elf.class64, offset);
            offset += round_up(section.size, word as u64);
        }
        table.extend_from_slice(&raw);
    }
    // e_phoff = 0, e_shoff = the header's size, no program headers.
    let header_len = header.len() as u64;
    if elf.class64 {
        header[32..40].copy_from_slice(&0u64.to_le_bytes());
        header[40..48].copy_from_slice(&header_len.to_le_bytes());
        header[54..56].copy_from_slice(&0u16.to_le_bytes());
        header[56..58].copy_from_slice(&0u16.to_le_bytes());
    } else {
        header[28..32].copy_from_slice(&0u32.to_le_bytes());
        header[32..36].copy_from_slice(&(header_len as u32).to_le_bytes());
        header[42..44].copy_from_slice(&0u16.to_le_bytes());
        header[44..46].copy_from_slice(&0u16.to_le_bytes());
    }
    let mut out = header;
    out.extend_from_slice(&table);
    out.resize(round_up(out.len() as u64, word as u64) as usize, 0);
    out.extend_from_slice(&contents);
    Ok(out)
}

/// Points a section header at `offset` (from the header copy) and marks
/// it allocated.
fn set_section(raw: &mut [u8], class64: bool, offset: u64) {
    if class64 {
        let flags = u64::from_le_bytes(raw[8..16].try_into().unwrap_or_default()) | SHF_ALLOC;
        raw[8..16].copy_from_slice(&flags.to_le_bytes());
        raw[24..32].copy_from_slice(&offset.to_le_bytes());
    } else {
        let flags =
            u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default()) | SHF_ALLOC as u32;
        raw[8..12].copy_from_slice(&flags.to_le_bytes());
        raw[16..20].copy_from_slice(&(offset as u32).to_le_bytes());
    }
}

/// One boot argument: {type, size, size of this record again, data}.
fn record(out: &mut Vec<u8>, kind: u32, data: &[u8]) {
    let padded = round_up(data.len() as u64, 4) as usize;
    let size = (12 + padded) as u32;
    for v in [kind, size, size] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(data);
    out.resize(out.len() + padded - data.len(), 0);
}

/// The boot-argument page's contents (docs/machine.md, "Boot").
pub fn boot_arguments(layout: &Layout, boot_mac: Option<[u8; 6]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut map = Vec::new();
    for range in &layout.ranges {
        map.extend_from_slice(&range.start.to_le_bytes());
        map.extend_from_slice(&range.size.to_le_bytes());
        let kind = match range.kind {
            crate::memory::RangeKind::Ram => BIOS_MAP_FREE,
            crate::memory::RangeKind::Reserved => BIOS_MAP_RES,
        };
        map.extend_from_slice(&kind.to_le_bytes());
    }
    // The terminating entry.
    map.extend_from_slice(&[0u8; 20]);
    record(&mut out, BOOTARG_MEMMAP, &map);

    let mut console = Vec::new();
    for v in [CONSDEV_COM0, CONSOLE_SPEED, CONSOLE_PORT, 0] {
        console.extend_from_slice(&v.to_le_bytes());
    }
    record(&mut out, BOOTARG_CONSDEV, &console);
    if let Some(mac) = boot_mac {
        record(&mut out, BOOTARG_BOOTMAC, &mac);
    }
    out.extend_from_slice(&BOOTARG_END.to_le_bytes());
    out
}

/// The 32-bit slots a boot loader leaves on the stack, lowest first: a
/// return address, boot flags, boot device, API version, kernel end,
/// extended and base memory (0: the kernel uses the memory map), size and
/// address of the boot arguments.
pub fn argument_stack(boot_args_size: u32, end: u32) -> Vec<u8> {
    [
        0,
        0,
        BOOTDEV_SD0A,
        BOOTARG_APIVER,
        end,
        0,
        0,
        boot_args_size,
        BOOTARGS_ADDR as u32,
    ]
    .iter()
    .flat_map(|v| v.to_le_bytes())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MIB;

    #[test]
    fn boot_arguments_layout() {
        let layout = Layout::new(64 * MIB);
        let args = boot_arguments(&layout, Some([2, 0, 0, 0, 0, 1]));
        let u32_at = |at: usize| u32::from_le_bytes(args[at..at + 4].try_into().unwrap());
        assert_eq!(u32_at(0), BOOTARG_MEMMAP);
        let map_size = u32_at(4) as usize;
        assert_eq!(map_size, 12 + 20 * (layout.ranges.len() + 1));
        assert_eq!(u32_at(8), map_size as u32);
        // First entry: low RAM, free.
        assert_eq!(u32_at(12 + 16), BIOS_MAP_FREE);
        assert_eq!(u32_at(map_size), BOOTARG_CONSDEV);
        assert_eq!(u32_at(map_size + 12), 0x800);
        assert_eq!(u32_at(map_size + 16), 115_200);
        assert_eq!(u32_at(map_size + 20), 0x3f8);
        let mac_at = map_size + 28;
        assert_eq!(u32_at(mac_at), BOOTARG_BOOTMAC);
        assert_eq!(&args[mac_at + 12..mac_at + 18], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(u32_at(args.len() - 4), BOOTARG_END);
        assert!(args.len() <= PAGE as usize);
    }

    const KERNEL: u64 = 0xffff_ffff_8020_0000;

    /// A program header: type, flags, file offset, physical address, file
    /// and memory size.
    type Ph = (u32, u32, u64, u64, u64, u64);
    /// A section header: type, file offset, size.
    type Sh = (u32, u64, u64);

    /// Where the contents start after the headers of a 64-bit ELF file
    /// with `segments` program and `sections` section headers (and the
    /// null section and section name table [`elf64`] adds).
    fn body_at(segments: usize, sections: usize) -> u64 {
        (64 + 56 * segments + 64 * (sections + 2)) as u64
    }

    /// A little-endian 64-bit ELF executable: the file header, the program
    /// headers, the section headers (a null one first, a one-byte name
    /// table last), then `body`.
    fn elf64(segments: &[Ph], sections: &[Sh], body: &[u8]) -> Vec<u8> {
        let sections: Vec<Sh> = std::iter::once((0, 0, 0))
            .chain(sections.iter().copied())
            .chain(std::iter::once((SHT_STRTAB, 0, 1)))
            .collect();
        let mut f = vec![0u8; 64];
        f[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&KERNEL.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        let shoff = 64 + 56 * segments.len() as u64;
        f[40..48].copy_from_slice(&shoff.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes());
        f[60..62].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        f[62..64].copy_from_slice(&(sections.len() as u16 - 1).to_le_bytes());
        for &(kind, flags, offset, paddr, filesz, memsz) in segments {
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(&flags.to_le_bytes());
            for v in [offset, paddr, paddr, filesz, memsz, 8] {
                f.extend_from_slice(&v.to_le_bytes());
            }
        }
        for &(kind, offset, size) in &sections {
            f.extend_from_slice(&0u32.to_le_bytes());
            f.extend_from_slice(&kind.to_le_bytes());
            for v in [0, 0, offset, size, 0, 8, 0] {
                f.extend_from_slice(&v.to_le_bytes());
            }
        }
        assert_eq!(f.len() as u64, body_at(segments.len(), sections.len() - 2));
        f.extend_from_slice(body);
        f
    }

    fn ram() -> GuestRam {
        GuestRam::new(Layout::new(8 * MIB), "openbsd-test").unwrap()
    }

    /// Loads `image` as the VM process does.
    fn load(image: Vec<u8>) -> Result<(GuestRam, EntryState), BootError> {
        let ram = ram();
        let state = Kernel::prepare(image, None)?.load(&ram)?;
        Ok((ram, state))
    }

    fn text(segments: usize, sections: usize) -> Ph {
        (PT_LOAD, 5, body_at(segments, sections), KERNEL, 16, 0x1000)
    }

    #[test]
    fn loads_segments_randomness_and_symbols() {
        let at = body_at(2, 2);
        let image = elf64(
            &[
                (PT_LOAD, 5, at, KERNEL, 16, 0x1000),
                (PT_OPENBSD_RANDOMIZE, 4, at, KERNEL + 0x80, 32, 32),
            ],
            &[(SHT_SYMTAB, at + 16, 48), (SHT_STRTAB, at + 64, 8)],
            &[0xf4; 72],
        );
        let (ram, state) = load(image).unwrap();
        assert_eq!(state.rip, 0x20_0000);
        let mut text = [0u8; 16];
        ram.mem
            .read_slice(&mut text, GuestAddress(0x20_0000))
            .unwrap();
        assert_eq!(text, [0xf4; 16]);
        // The header copy right after the BSS, then the sections.
        let mut magic = [0u8; 4];
        ram.mem
            .read_slice(&mut magic, GuestAddress(0x20_1000))
            .unwrap();
        assert_eq!(&magic, b"\x7fELF");
    }

    #[test]
    fn a_random_data_segment_larger_than_ram_is_an_error() {
        // Was a vec of the segment's size: an abort for 0xbfbf…
        let at = body_at(2, 0);
        let image = elf64(
            &[
                text(2, 0),
                (
                    PT_OPENBSD_RANDOMIZE,
                    4,
                    at,
                    KERNEL + 0x80,
                    0xbfbf_bfbf_bfbf_bfbf,
                    0,
                ),
            ],
            &[],
            &[0xf4; 16],
        );
        let err = load(image).err().unwrap();
        assert!(err.message.contains("random data"), "{}", err.message);
    }

    #[test]
    fn a_bss_larger_than_ram_is_an_error() {
        // Was a vec of zeros of the BSS's size.
        let image = elf64(
            &[(PT_LOAD, 5, body_at(1, 0), KERNEL, 16, 1 << 40)],
            &[],
            &[0xf4; 16],
        );
        let err = load(image).err().unwrap();
        assert!(
            err.message.contains("not in the guest's RAM"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_segment_past_the_end_of_the_file_is_an_error() {
        // Was an overflowing `offset + filesz` (a panic in debug builds).
        for offset in [u64::MAX - 4, 4096] {
            let image = elf64(&[(PT_LOAD, 5, offset, KERNEL, 16, 16)], &[], &[0xf4; 16]);
            let err = load(image).err().unwrap();
            assert!(err.message.contains("outside the file"), "{}", err.message);
        }
    }

    #[test]
    fn a_kernel_outside_ram_is_an_error() {
        // The legacy hole below 1 MiB, past the end of RAM, and across it.
        for (paddr, memsz) in [(0xe_0000, 16), (0x7f_f000, 0x2000), (0x0fff_0000, 16)] {
            let image = elf64(
                &[(PT_LOAD, 5, body_at(1, 0), paddr, 16, memsz)],
                &[],
                &[1; 16],
            );
            let err = load(image).err().unwrap();
            assert!(
                err.message.contains("not in the guest's RAM"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn a_kernel_over_the_boot_loader_data_is_refused() {
        // The boot arguments, the stack page, the GDT and the page tables
        // would overwrite it (and its symbols) after it is loaded.
        for (paddr, memsz) in [(0, 0x2001), (0x2ff0, 16), (0xe000, 0x1001), (0x13fff, 1)] {
            let image = elf64(&[(PT_LOAD, 5, body_at(1, 0), paddr, 1, memsz)], &[], &[1]);
            let err = load(image).err().unwrap();
            assert!(
                err.message.contains("boot loader"),
                "{paddr:#x}: {}",
                err.message
            );
        }
        // Right up to it (the symbol area included) and
        // right after it is fine.
        for (paddr, memsz) in [(0x1000, 0xf40), (0x3000, 0x1000), (0x14000, 0x1000)] {
            let image = elf64(&[(PT_LOAD, 5, body_at(1, 0), paddr, 1, memsz)], &[], &[1]);
            load(image).unwrap();
        }
        // The symbols after a kernel that ends below the stack page.
        let at = body_at(1, 1);
        let image = elf64(
            &[(PT_LOAD, 5, at, 0x3000, 1, 0xbfc0)],
            &[(SHT_SYMTAB, at, 48)],
            &[0; 48],
        );
        let err = load(image).err().unwrap();
        assert!(err.message.contains("symbols"), "{}", err.message);
    }

    #[test]
    fn a_symbol_section_outside_the_file_is_an_error() {
        // Was an overflowing `offset + size`, or an empty section.
        for (offset, size) in [(16, u64::MAX), (1 << 20, 16)] {
            let image = elf64(&[text(1, 1)], &[(SHT_SYMTAB, offset, size)], &[0xf4; 16]);
            let err = load(image).err().unwrap();
            assert!(err.message.contains("symbol section"), "{}", err.message);
        }
    }

    #[test]
    fn symbol_sections_repeating_the_file_are_bounded_by_ram() {
        // 60000 string tables naming the same MiB: 60 GB of symbol area,
        // which was built in host memory before anything was checked.
        let count = 60_000;
        let at = body_at(1, count);
        let mut sections = vec![(SHT_SYMTAB, at, 48)];
        sections.resize(count, (SHT_STRTAB, at, MIB));
        let image = elf64(&[text(1, count)], &sections, &vec![0u8; MIB as usize]);
        let err = load(image).err().unwrap();
        assert!(err.message.contains("symbols"), "{}", err.message);
    }

    #[test]
    fn stack_slots() {
        let stack = argument_stack(100, 0x0123_4567);
        assert_eq!(stack.len(), 36);
        let slot = |i: usize| u32::from_le_bytes(stack[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(slot(2), 0xa000_0004);
        assert_eq!(slot(3), 0x0e);
        assert_eq!(slot(4), 0x0123_4567);
        assert_eq!(slot(7), 100);
        assert_eq!(slot(8), 0x2000);
    }
}
