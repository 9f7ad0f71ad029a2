//! OpenBSD kernels (and any ELF kernel without a PVH note), booted the way
//! vmd's built-in loader does it (vmd.md §8.4), so a kernel that boots
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
use crate::memory::{GuestMemoryMmap, GuestRam, Layout};

pub const BOOTARGS_ADDR: u64 = 0x2000;
pub const STACK_PAGE: u64 = 0xf000;
pub const GDT_ADDR: u64 = 0x10000;
pub const PML4_ADDR: u64 = 0x11000;
/// The 32-bit page directory (the page the 64-bit PDPT uses otherwise).
pub const PD32_ADDR: u64 = 0x12000;
const PAGE: u64 = 0x1000;

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
        let loaded = load_image(mem, &self.image, &elf)?;

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
pub fn load_image(
    mem: &GuestMemoryMmap,
    image: &[u8],
    elf: &ElfImage,
) -> Result<Loaded, BootError> {
    let fits = |what: &str, e| BootError::memory(what, e);
    let mut end = 0u64;
    for segment in &elf.segments {
        if segment.kind != PT_LOAD || segment.flags & PF_RWX == 0 {
            continue;
        }
        let addr = segment.paddr & LOAD_MASK;
        let data = image
            .get(segment.offset as usize..(segment.offset + segment.filesz) as usize)
            .ok_or_else(|| BootError::image("an ELF segment lies outside the file"))?;
        mem.write_slice(data, GuestAddress(addr))
            .map_err(|e| fits("the kernel", e))?;
        if segment.memsz > segment.filesz {
            let bss = vec![0u8; (segment.memsz - segment.filesz) as usize];
            mem.write_slice(&bss, GuestAddress(addr + segment.filesz))
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
        let mut random = vec![0u8; segment.filesz as usize];
        fill_random(&mut random);
        mem.write_slice(&random, GuestAddress(segment.paddr & LOAD_MASK))
            .map_err(|e| fits("the random data segment", e))?;
    }
    let symbols = symbol_area(image, elf);
    let symbols_at = round_up(end, word(elf));
    mem.write_slice(&symbols, GuestAddress(symbols_at))
        .map_err(|e| fits("the kernel's symbols", e))?;
    Ok(Loaded {
        entry: elf.entry & LOAD_MASK,
        end: symbols_at + symbols.len() as u64,
    })
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
/// are marked allocated, so the kernel can find them from `end`.
fn symbol_area(image: &[u8], elf: &ElfImage) -> Vec<u8> {
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
    let mut table = Vec::with_capacity(section_table);
    let mut contents = Vec::new();
    for section in &elf.sections {
        let mut raw = section.raw.to_vec();
        if has_symbols && kept(section) {
            let start = section.offset as usize;
            let data = image
                .get(start..start + section.size as usize)
                .unwrap_or_default();
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
    out
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

/// The boot-argument page's contents (vmd.md §8.4).
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
