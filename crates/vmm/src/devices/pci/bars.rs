//! Base address registers: what a device asks for, where it decodes now,
//! and where vmd puts it before firmware runs.
//!
//! The register file itself lives in [`ConfigSpace`](super::ConfigSpace);
//! this file knows the encodings. The root ([`super::root`]) maps decoded
//! BARs on the port and MMIO buses after every configuration write, so a
//! BAR that firmware or the guest moves is found at its new place.

use crate::memory::PCI_HOLE_START;

/// The kinds of BAR vmd's devices use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// Port I/O (bit 0 set).
    Io,
    /// 32-bit memory, not prefetchable.
    Memory32,
    /// 64-bit memory, not prefetchable; takes two registers.
    Memory64,
}

impl BarKind {
    /// The read-only low bits of the register.
    pub fn flag_bits(self) -> u32 {
        match self {
            BarKind::Io => 0x1,
            BarKind::Memory32 => 0x0,
            BarKind::Memory64 => 0x4,
        }
    }

    /// Low bits that are flags, not address.
    pub fn flag_mask(self) -> u32 {
        match self {
            BarKind::Io => 0x3,
            BarKind::Memory32 | BarKind::Memory64 => 0xf,
        }
    }

    pub fn is_io(self) -> bool {
        self == BarKind::Io
    }
}

/// A BAR as it decodes right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRange {
    pub index: u8,
    pub kind: BarKind,
    pub base: u64,
    pub size: u64,
}

impl BarRange {
    /// Whether the range can be decoded at all: port I/O lives below
    /// 64 KiB, and address 0 means "not assigned".
    pub fn is_decodable(&self) -> bool {
        let Some(end) = self.base.checked_add(self.size) else {
            return false;
        };
        self.base != 0 && (!self.kind.is_io() || end <= 0x1_0000)
    }
}

/// First port vmd hands out (docs/machine.md, "PCI devices": BARs from 0x1000, in order).
pub const IO_ALLOCATION_START: u64 = 0x1000;

/// Memory BARs stay below the IOAPIC and LAPIC pages.
pub const MEMORY_ALLOCATION_END: u64 = 0xFEC0_0000;

/// Assigns initial BAR addresses in creation order: port BARs from 0x1000
/// upward like vmd, memory BARs from the start of the PCI hole, each
/// aligned to its size.
#[derive(Debug)]
pub struct BarAllocator {
    next_io: u64,
    next_memory: u64,
}

impl Default for BarAllocator {
    fn default() -> Self {
        BarAllocator {
            next_io: IO_ALLOCATION_START,
            next_memory: PCI_HOLE_START,
        }
    }
}

impl BarAllocator {
    pub fn new() -> BarAllocator {
        BarAllocator::default()
    }

    /// An address for a BAR of `kind` and `size` (a power of two), or
    /// `None` when its space is exhausted.
    pub fn allocate(&mut self, kind: BarKind, size: u64) -> Option<u64> {
        let (next, limit) = match kind {
            BarKind::Io => (&mut self.next_io, 0x1_0000),
            BarKind::Memory32 | BarKind::Memory64 => (&mut self.next_memory, MEMORY_ALLOCATION_END),
        };
        let base = next.checked_next_multiple_of(size)?;
        let end = base.checked_add(size)?;
        if end > limit {
            return None;
        }
        *next = end;
        Some(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_sequential_and_aligned() {
        let mut a = BarAllocator::new();
        assert_eq!(a.allocate(BarKind::Io, 0x1000), Some(0x1000));
        assert_eq!(a.allocate(BarKind::Io, 0x1000), Some(0x2000));
        assert_eq!(a.allocate(BarKind::Memory32, 0x1000), Some(PCI_HOLE_START));
        assert_eq!(
            a.allocate(BarKind::Memory32, 0x4000),
            Some(PCI_HOLE_START + 0x4000)
        );
        for _ in 0..13 {
            assert!(a.allocate(BarKind::Io, 0x1000).is_some());
        }
        assert_eq!(a.allocate(BarKind::Io, 0x1000), None, "port space ends");
    }

    #[test]
    fn decodable_ranges() {
        let r = |kind, base| BarRange {
            index: 0,
            kind,
            base,
            size: 0x1000,
        };
        assert!(r(BarKind::Io, 0x1000).is_decodable());
        assert!(!r(BarKind::Io, 0).is_decodable());
        assert!(
            !r(BarKind::Io, 0xffff_f000).is_decodable(),
            "sizing pattern"
        );
        assert!(r(BarKind::Memory32, 0xfebf_f000).is_decodable());
    }
}
