//! PVH direct boot of an ELF kernel (Linux `vmlinux`): linux-loader loads
//! the segments at their physical addresses and finds the entry in the
//! Xen PHYS32_ENTRY note; this file writes `hvm_start_info` (command line,
//! RSDP, memory map, the initrd as the first module) and enters the kernel
//! in 32-bit protected mode without paging, EBX pointing at the start info.
//!
//! Low memory used: the GDT at 0x500, the start info at 0x6000 with its
//! module list and memory map after it, the command line at 0x20000.

use std::io::Cursor;

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{Cmdline, KernelLoader, load_cmdline};
use vm_memory::GuestAddress;

use super::cpu_state::{EntryState, Paging, Segment};
use super::initrd::{self, Initrd, Placement};
use super::{BootError, command_line};
use crate::memory::{FOUR_GIB, GuestMemoryMmap, GuestRam, Layout};

pub const GDT_ADDR: u64 = 0x500;
pub const START_INFO_ADDR: u64 = 0x6000;
pub const MODLIST_ADDR: u64 = 0x6040;
pub const MEMMAP_ADDR: u64 = 0x6080;
pub const CMDLINE_ADDR: u64 = 0x2_0000;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Version 1 of the start info has the memory map fields.
const START_INFO_VERSION: u32 = 1;
/// The PVH entry carries no header saying how long a command line the
/// kernel takes; Linux copies at most COMMAND_LINE_SIZE (2048 on x86)
/// bytes including the NUL, and would cut a longer one silently.
pub const CMDLINE_LIMIT: usize = 2047;

const CODE: usize = 1;
const DATA: usize = 2;

/// What this loader writes to low memory after the kernel (the GDT, the
/// start info with its module list and memory map, the command line) and
/// must not write over it.
pub const LOADER_AREAS: [std::ops::Range<u64>; 3] = [
    GDT_ADDR..GDT_ADDR + 0x100,
    START_INFO_ADDR..START_INFO_ADDR + 0x1000,
    CMDLINE_ADDR..CMDLINE_ADDR + CMDLINE_LIMIT as u64 + 1,
];

/// Checks where the kernel's segments (PT_LOAD, at their physical
/// address, file contents and BSS) lie: in guest RAM, not in the reserved
/// areas (where the ACPI tables and firmware are) or nowhere, and clear of
/// [`LOADER_AREAS`]; linux-loader writes wherever guest memory is backed.
/// Returns where the highest ends: linux-loader's `kernel_end` leaves out
/// the file contents past `p_memsz` and segments without any.
fn check_segments(layout: &Layout, image: &[u8]) -> Result<u64, BootError> {
    const PT_LOAD: u32 = 1;
    let elf = super::elf::parse(image)?;
    let mut end = 0;
    for s in elf
        .segments
        .iter()
        .filter(|s| s.kind == PT_LOAD && s.filesz.max(s.memsz) != 0)
    {
        let (addr, len) = (s.paddr, s.filesz.max(s.memsz));
        if !layout.in_ram(addr, len) {
            return Err(BootError::memory(
                "the kernel",
                format!("a segment at {addr:#x}+{len:#x} is not in the guest's RAM"),
            ));
        }
        if let Some(area) = LOADER_AREAS
            .iter()
            .find(|a| addr < a.end && a.start < addr + len)
        {
            return Err(BootError::image(format!(
                "a kernel segment at {addr:#x}+{len:#x} overlaps the boot loader's data at {:#x}..{:#x}",
                area.start, area.end
            )));
        }
        end = end.max(addr + len);
    }
    Ok(end)
}

/// A PVH-capable ELF kernel, ready to load.
pub struct Kernel {
    image: Vec<u8>,
    cmdline: Cmdline,
    initrd: Option<Initrd>,
}

/// The memory map in PVH's format.
fn memmap(layout: &Layout) -> Vec<hvm_memmap_table_entry> {
    layout
        .ranges
        .iter()
        .map(|r| hvm_memmap_table_entry {
            addr: r.start,
            size: r.size,
            type_: r.kind.e820_type(),
            reserved: 0,
        })
        .collect()
}

impl Kernel {
    pub fn prepare(
        image: Vec<u8>,
        cmdline: Option<&str>,
        initrd: Option<Initrd>,
    ) -> Result<Kernel, BootError> {
        Ok(Kernel {
            cmdline: command_line(cmdline, CMDLINE_LIMIT)?,
            image,
            initrd,
        })
    }

    pub fn load(
        mut self,
        ram: &GuestRam,
        rsdp: u64,
    ) -> Result<(EntryState, Option<Placement>), BootError> {
        let mem: &GuestMemoryMmap = &ram.mem;
        let kernel_end = check_segments(&ram.layout, &self.image)?;
        let loaded = Elf::load(mem, None, &mut Cursor::new(&self.image), None)
            .map_err(|e| BootError::memory("the kernel", e))?;
        let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
            return Err(BootError::image("the ELF kernel has no usable PVH entry"));
        };

        let kernel_end = kernel_end.max(loaded.kernel_end);
        let initrd = initrd::place_and_load(ram, self.initrd.as_mut(), kernel_end, FOUR_GIB - 1)?;

        let map = memmap(&ram.layout);
        let start_info = hvm_start_info {
            magic: XEN_HVM_START_MAGIC,
            version: START_INFO_VERSION,
            nr_modules: u32::from(initrd.is_some()),
            modlist_paddr: if initrd.is_some() { MODLIST_ADDR } else { 0 },
            cmdline_paddr: CMDLINE_ADDR,
            rsdp_paddr: rsdp,
            memmap_paddr: MEMMAP_ADDR,
            memmap_entries: map.len() as u32,
            ..Default::default()
        };
        let mut params = BootParams::new(&start_info, GuestAddress(START_INFO_ADDR));
        params.set_sections(&map, GuestAddress(MEMMAP_ADDR));
        if let Some(placement) = initrd {
            params.set_modules(
                &[hvm_modlist_entry {
                    paddr: placement.addr,
                    size: placement.size,
                    ..Default::default()
                }],
                GuestAddress(MODLIST_ADDR),
            );
        }
        PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
            .map_err(|e| BootError::memory("the start info", e))?;
        load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &self.cmdline)
            .map_err(|e| BootError::memory("the command line", e))?;

        let state = EntryState {
            gdt_addr: GDT_ADDR,
            gdt: vec![None, Some(Segment::Code32), Some(Segment::Data)],
            code: CODE,
            data: DATA,
            paging: Paging::Off,
            rip: entry.0,
            rsp: 0,
            rsi: 0,
            rbx: START_INFO_ADDR,
        };
        state
            .write_gdt(mem)
            .map_err(|e| BootError::memory("the GDT", e))?;
        Ok((state, initrd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MIB;

    /// A 64-bit ELF kernel with a PVH entry note at 0x200000 and one
    /// loadable segment of 16 bytes at `paddr`, `memsz` long in memory.
    fn kernel(paddr: u64, memsz: u64) -> Vec<u8> {
        let mut note = Vec::new();
        for v in [4u32, 4, 18] {
            note.extend_from_slice(&v.to_le_bytes());
        }
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&0x20_0000u32.to_le_bytes());
        let body = 64 + 2 * 56;
        let mut f = vec![0u8; 64];
        f[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&0x20_0000u64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let headers = [
            (4u32, body as u64, 0, note.len() as u64, note.len() as u64),
            (1, (body + note.len()) as u64, paddr, 16, memsz),
        ];
        for (kind, offset, paddr, filesz, memsz) in headers {
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(&5u32.to_le_bytes());
            for v in [offset, paddr, paddr, filesz, memsz, 4] {
                f.extend_from_slice(&v.to_le_bytes());
            }
        }
        f.extend_from_slice(&note);
        f.extend_from_slice(&[0xf4; 16]);
        f
    }

    fn load(image: Vec<u8>) -> Result<(EntryState, Option<Placement>), BootError> {
        load_with(image, None)
    }

    fn load_with(
        image: Vec<u8>,
        initrd: Option<Initrd>,
    ) -> Result<(EntryState, Option<Placement>), BootError> {
        let ram = GuestRam::new(Layout::new(8 * MIB), "pvh-test").unwrap();
        Kernel::prepare(image, None, initrd)?.load(&ram, 0xe0000)
    }

    #[test]
    fn the_initrd_stays_clear_of_file_contents_past_memsz() {
        // A segment at the last page of RAM whose file contents are longer
        // than its memory size: linux-loader's kernel_end (0x7ff000) left
        // that page to the initrd, over the kernel.
        let dir = testkit::tmp::TempDir::new("pvh");
        let path = dir.join("initrd");
        std::fs::write(&path, [0x5a; 4096]).unwrap();
        let initrd = || Some(Initrd::new(std::fs::File::open(&path).unwrap()).unwrap());
        let err = load_with(kernel(0x7f_f000, 0), initrd()).err().unwrap();
        assert_eq!(
            err.code,
            proto::ErrorCode::INITRD_TOO_LARGE,
            "{}",
            err.message
        );
        let (_, placement) = load_with(kernel(0x7f_e000, 0), initrd()).unwrap();
        assert_eq!(placement.unwrap().addr, 0x7f_f000);
    }

    #[test]
    fn loads_a_kernel_in_ram() {
        let (state, _) = load(kernel(0x20_0000, 0x1000)).unwrap();
        assert_eq!(state.rip, 0x20_0000);
        assert_eq!(state.rbx, START_INFO_ADDR);
    }

    #[test]
    fn a_segment_outside_ram_is_refused() {
        // linux-loader writes wherever memory is backed: the ACPI tables
        // and the MP table below 1 MiB, the firmware below 4 GiB.
        for (paddr, memsz) in [(0xe_0000, 16), (0xf_fff8, 16), (0xffff_0000, 16)] {
            let err = load(kernel(paddr, memsz)).err().unwrap();
            assert!(
                err.message.contains("not in the guest's RAM"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn a_segment_over_the_start_info_is_refused() {
        // The GDT, the start info and the command line were written over
        // the kernel after it was loaded.
        for paddr in [0x500, 0x5ff8, 0x6800, 0x2_0100] {
            let err = load(kernel(paddr, 16)).err().unwrap();
            assert!(
                err.message.contains("boot loader"),
                "{paddr:#x}: {}",
                err.message
            );
        }
        load(kernel(0x1000, 0x1000)).unwrap();
    }
}
