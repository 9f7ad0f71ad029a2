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
        let loaded = Elf::load(mem, None, &mut Cursor::new(&self.image), None)
            .map_err(|e| BootError::memory("the kernel", e))?;
        let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
            return Err(BootError::image("the ELF kernel has no usable PVH entry"));
        };

        let initrd =
            initrd::place_and_load(ram, self.initrd.as_mut(), loaded.kernel_end, FOUR_GIB - 1)?;

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
