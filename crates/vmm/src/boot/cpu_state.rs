//! The first vCPU's state when the VMM is the boot loader: the GDT, the
//! identity page tables and the registers a kernel's entry point expects.
//! (Firmware boot starts at the reset vector instead, see vcpu.rs.)

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::memory::{GIB, GuestMemoryMmap};

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PSE: u64 = 1 << 4;
pub const CR4_PAE: u64 = 1 << 5;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;

const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_LARGE: u64 = 1 << 7;
const PAGE: u64 = 0x1000;

/// A flat (base 0, 4 GiB) segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// 32-bit code (or compatibility-mode code under long mode).
    Code32,
    /// 64-bit code.
    Code64,
    Data,
}

impl Segment {
    /// The 8-byte GDT descriptor.
    fn descriptor(self) -> u64 {
        // Limit 0xFFFFF in 4 KiB units, present, DPL 0, S = 1.
        let base: u64 = 0x00_0000_ffff | (0xf << 48) | (1 << 47) | (1 << 44) | (1 << 55);
        match self {
            // Type 0xB: execute/read, accessed; D = 1.
            Segment::Code32 => base | (0xb << 40) | (1 << 54),
            // Type 0xB; L = 1, D = 0.
            Segment::Code64 => base | (0xb << 40) | (1 << 53),
            // Type 0x3: read/write, accessed; B = 1.
            Segment::Data => base | (0x3 << 40) | (1 << 54),
        }
    }

    /// The same segment as KVM's loaded (hidden) form.
    fn loaded(self, selector: u16) -> kvm_segment {
        let code = self != Segment::Data;
        kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_: if code { 0xb } else { 0x3 },
            present: 1,
            dpl: 0,
            db: u8::from(self != Segment::Code64),
            s: 1,
            l: u8::from(self == Segment::Code64),
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        }
    }
}

/// How paging is set up at entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// Protected mode without paging.
    Off,
    /// 32-bit paging with 4 MiB pages, page directory at `cr3`.
    Pse32 { cr3: u64 },
    /// Long mode with 4-level tables at `cr3`.
    Long { cr3: u64 },
}

/// Everything vCPU 0 needs to start at a kernel's entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryState {
    /// Where the GDT lives, and its descriptors by index (0 stays null).
    pub gdt_addr: u64,
    pub gdt: Vec<Option<Segment>>,
    /// GDT indices of the code and data segments loaded at entry.
    pub code: usize,
    pub data: usize,
    pub paging: Paging,
    pub rip: u64,
    pub rsp: u64,
    pub rsi: u64,
    pub rbx: u64,
}

impl EntryState {
    /// Writes the GDT into guest memory.
    pub fn write_gdt(&self, mem: &GuestMemoryMmap) -> Result<(), vm_memory::GuestMemoryError> {
        let bytes: Vec<u8> = self
            .gdt
            .iter()
            .flat_map(|entry| entry.map_or(0, Segment::descriptor).to_le_bytes())
            .collect();
        mem.write_slice(&bytes, GuestAddress(self.gdt_addr))
    }

    fn segment(&self, index: usize) -> kvm_segment {
        let kind = self.gdt[index].unwrap_or(Segment::Data);
        kind.loaded((index * 8) as u16)
    }

    /// The special registers at entry, on top of KVM's reset values.
    pub fn sregs(&self, mut sregs: kvm_sregs) -> kvm_sregs {
        sregs.cs = self.segment(self.code);
        let data = self.segment(self.data);
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.gdt.base = self.gdt_addr;
        sregs.gdt.limit = (self.gdt.len() * 8 - 1) as u16;
        sregs.cr0 = CR0_PE | CR0_ET;
        sregs.cr4 = 0;
        sregs.efer = 0;
        match self.paging {
            Paging::Off => {}
            Paging::Pse32 { cr3 } => {
                sregs.cr0 |= CR0_PG;
                sregs.cr3 = cr3;
                sregs.cr4 = CR4_PSE;
            }
            Paging::Long { cr3 } => {
                sregs.cr0 |= CR0_PG;
                sregs.cr3 = cr3;
                sregs.cr4 = CR4_PAE | CR4_PSE;
                sregs.efer = EFER_LME | EFER_LMA;
            }
        }
        sregs
    }

    pub fn regs(&self) -> kvm_regs {
        kvm_regs {
            rip: self.rip,
            rsp: self.rsp,
            rsi: self.rsi,
            rbx: self.rbx,
            // Bit 1 is always set; interrupts stay off until the kernel
            // has its own tables.
            rflags: 0x2,
            ..Default::default()
        }
    }

    /// Loads the state into the vCPU.
    pub fn apply(&self, vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
        let sregs = self.sregs(vcpu.get_sregs()?);
        vcpu.set_sregs(&sregs)?;
        vcpu.set_regs(&self.regs())
    }
}

/// Identity-maps the first `gib` GiB with 2 MiB pages: the PML4 at
/// `pml4`, the PDPT in the next page, then one page directory per GiB.
/// Returns the address after the last table.
pub fn identity_map_long(
    mem: &GuestMemoryMmap,
    pml4: u64,
    gib: u64,
) -> Result<u64, vm_memory::GuestMemoryError> {
    let pdpt = pml4 + PAGE;
    let first_pd = pdpt + PAGE;
    let flags = PTE_PRESENT | PTE_WRITABLE;
    mem.write_obj(pdpt | flags, GuestAddress(pml4))?;
    for g in 0..gib {
        let pd = first_pd + g * PAGE;
        mem.write_obj(pd | flags, GuestAddress(pdpt + g * 8))?;
        let entries: Vec<u8> = (0..512u64)
            .flat_map(|i| ((g * GIB + i * (2 << 20)) | flags | PTE_LARGE).to_le_bytes())
            .collect();
        mem.write_slice(&entries, GuestAddress(pd))?;
    }
    Ok(first_pd + gib * PAGE)
}

/// Identity-maps all 4 GiB with 4 MiB pages in one 32-bit page directory.
pub fn identity_map_pse32(
    mem: &GuestMemoryMmap,
    pd: u64,
) -> Result<(), vm_memory::GuestMemoryError> {
    let entries: Vec<u8> = (0..1024u32)
        .flat_map(|i| ((i << 22) | (PTE_PRESENT | PTE_WRITABLE | PTE_LARGE) as u32).to_le_bytes())
        .collect();
    mem.write_slice(&entries, GuestAddress(pd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestRam, Layout, MIB};

    #[test]
    fn descriptors_are_the_classic_flat_ones() {
        assert_eq!(Segment::Code32.descriptor(), 0x00cf_9b00_0000_ffff);
        assert_eq!(Segment::Code64.descriptor(), 0x00af_9b00_0000_ffff);
        assert_eq!(Segment::Data.descriptor(), 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn long_mode_tables_map_every_gib() {
        let ram = GuestRam::new(Layout::new(64 * MIB), "pt-test").unwrap();
        let end = identity_map_long(&ram.mem, 0x9000, 4).unwrap();
        assert_eq!(end, 0xf000);
        let read = |a: u64| ram.mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        assert_eq!(read(0x9000), 0xa003);
        assert_eq!(read(0xa000 + 3 * 8), 0xe003);
        // The last 2 MiB page of the fourth GiB.
        assert_eq!(read(0xe000 + 511 * 8), (4 * GIB - (2 << 20)) | 0x83);
        identity_map_pse32(&ram.mem, 0x12000).unwrap();
        assert_eq!(
            ram.mem
                .read_obj::<u32>(GuestAddress(0x12000 + 4 * 1023))
                .unwrap(),
            0xffc0_0083
        );
    }

    #[test]
    fn long_mode_entry_state() {
        let state = EntryState {
            gdt_addr: 0x500,
            gdt: vec![None, None, Some(Segment::Code64), Some(Segment::Data)],
            code: 2,
            data: 3,
            paging: Paging::Long { cr3: 0x9000 },
            rip: 0x100200,
            rsp: 0,
            rsi: 0x7000,
            rbx: 0,
        };
        let s = state.sregs(kvm_sregs::default());
        assert_eq!(s.cs.selector, 0x10);
        assert_eq!(s.ds.selector, 0x18);
        assert_eq!((s.cs.l, s.cs.db), (1, 0));
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!(s.cr0 & CR0_PG, CR0_PG);
        assert_eq!(s.gdt.limit, 31);
        assert_eq!(state.regs().rsi, 0x7000);
    }
}
