//! A PCI type-0 configuration space: 256 bytes and the mask of bits the
//! guest may change.
//!
//! Writes only touch writable bits, so sizing a BAR (write all ones, read
//! back) yields its size mask with no special case, unimplemented BARs read
//! 0, and read-only identity registers stay intact. The interrupt-line
//! register is read-only here: it holds the IRQ the device really uses
//! (docs/machine.md, "PCI devices" keeps IRQs fixed), which stock SeaBIOS would otherwise
//! overwrite with "unknown" on a host bridge it does not recognise.
//!
//! BARs and capabilities are declared by the device at creation; the
//! writable mask of a BAR is its size mask, so the register file alone
//! answers sizing and relocation.

use super::bars::{BarKind, BarRange};

pub const VENDOR_ID: usize = 0x00;
pub const DEVICE_ID: usize = 0x02;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION: usize = 0x08;
pub const PROG_IF: usize = 0x09;
pub const SUBCLASS: usize = 0x0a;
pub const CLASS: usize = 0x0b;
pub const HEADER_TYPE: usize = 0x0e;
pub const BAR0: usize = 0x10;
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const SUBSYSTEM_ID: usize = 0x2e;
pub const EXPANSION_ROM: usize = 0x30;
pub const CAPABILITIES: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3c;
pub const INTERRUPT_PIN: usize = 0x3d;

pub const COMMAND_IO: u16 = 0x1;
pub const COMMAND_MEMORY: u16 = 0x2;
pub const COMMAND_BUS_MASTER: u16 = 0x4;
pub const COMMAND_INTX_DISABLE: u16 = 0x400;
pub const STATUS_CAPABILITIES: u16 = 0x10;
pub const STATUS_INTERRUPT: u16 = 0x08;

pub const CONFIG_SIZE: usize = 256;
pub const BAR_COUNT: usize = 6;
/// The expansion ROM BAR goes by this index next to BARs 0–5.
pub const ROM_BAR: u8 = 6;
/// Bit 0 of the expansion ROM BAR: decode the ROM.
const ROM_ENABLE: u32 = 0x1;
/// Low bits of the expansion ROM BAR that are not address.
const ROM_FLAG_MASK: u32 = 0x7ff;
/// Where the capability list starts: right after the type-0 header.
const FIRST_CAPABILITY: usize = 0x40;

/// What a device says about itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity {
    pub vendor: u16,
    pub device: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
}

#[derive(Clone)]
pub struct ConfigSpace {
    pub(super) bytes: [u8; CONFIG_SIZE],
    writable: [u8; CONFIG_SIZE],
    /// Declared BARs: kind and size by index.
    bars: [Option<(BarKind, u64)>; BAR_COUNT],
    /// Size of the expansion ROM, if the device has one.
    rom: Option<u64>,
    /// Offset of the last capability, to link the next one.
    last_capability: Option<usize>,
    /// Where the next capability goes.
    next_capability: usize,
}

impl ConfigSpace {
    pub fn new(id: Identity) -> ConfigSpace {
        let mut cs = ConfigSpace {
            bytes: [0; CONFIG_SIZE],
            writable: [0; CONFIG_SIZE],
            bars: [None; BAR_COUNT],
            rom: None,
            last_capability: None,
            next_capability: FIRST_CAPABILITY,
        };
        cs.set_u16(VENDOR_ID, id.vendor);
        cs.set_u16(DEVICE_ID, id.device);
        cs.bytes[REVISION] = id.revision;
        cs.bytes[PROG_IF] = id.prog_if;
        cs.bytes[SUBCLASS] = id.subclass;
        cs.bytes[CLASS] = id.class;
        cs.set_u16(SUBSYSTEM_VENDOR_ID, id.subsystem_vendor);
        cs.set_u16(SUBSYSTEM_ID, id.subsystem);
        // Command: I/O, memory, bus master, INTx disable are the guest's.
        cs.set_writable_u16(
            COMMAND,
            COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE,
        );
        // Cache line size and latency timer are plain storage.
        cs.writable[0x0c] = 0xff;
        cs.writable[0x0d] = 0xff;
        cs
    }

    /// Declares the device's INTx pin (INTA) and the IRQ it raises.
    pub fn set_interrupt(&mut self, irq: u8) {
        self.bytes[INTERRUPT_PIN] = 1;
        self.bytes[INTERRUPT_LINE] = irq;
    }

    pub fn u8(&self, offset: usize) -> u8 {
        self.bytes.get(offset).copied().unwrap_or(0xff)
    }

    pub fn u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.u8(offset), self.u8(offset + 1)])
    }

    pub fn u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes([
            self.u8(offset),
            self.u8(offset + 1),
            self.u8(offset + 2),
            self.u8(offset + 3),
        ])
    }

    /// Device-side write, ignoring the mask.
    pub fn set_u8(&mut self, offset: usize, value: u8) {
        if let Some(b) = self.bytes.get_mut(offset) {
            *b = value;
        }
    }

    pub fn set_u16(&mut self, offset: usize, value: u16) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            self.set_u8(offset + i, b);
        }
    }

    pub fn set_u32(&mut self, offset: usize, value: u32) {
        for (i, b) in value.to_le_bytes().into_iter().enumerate() {
            self.set_u8(offset + i, b);
        }
    }

    pub fn set_writable_u16(&mut self, offset: usize, mask: u16) {
        for (i, b) in mask.to_le_bytes().into_iter().enumerate() {
            if let Some(w) = self.writable.get_mut(offset + i) {
                *w = b;
            }
        }
    }

    pub fn set_writable_u32(&mut self, offset: usize, mask: u32) {
        for (i, b) in mask.to_le_bytes().into_iter().enumerate() {
            if let Some(w) = self.writable.get_mut(offset + i) {
                *w = b;
            }
        }
    }

    /// Guest read of `data.len()` bytes at `offset`.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.u8(offset + i);
        }
    }

    /// Guest write: only writable bits change.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            let at = offset + i;
            if at >= CONFIG_SIZE {
                return;
            }
            let mask = self.writable[at];
            self.bytes[at] = (self.bytes[at] & !mask) | (value & mask);
        }
    }

    pub fn command(&self) -> u16 {
        self.u16(COMMAND)
    }

    /// Declares BAR `index` (a 64-bit BAR also takes `index + 1`) of
    /// `size` bytes, a power of two of at least 16.
    pub fn add_bar(&mut self, index: usize, kind: BarKind, size: u64) {
        assert!(size.is_power_of_two() && size >= 16, "BAR size {size:#x}");
        assert!(index < BAR_COUNT && (kind != BarKind::Memory64 || index + 1 < BAR_COUNT));
        self.bars[index] = Some((kind, size));
        let offset = BAR0 + 4 * index;
        let mask = !(size - 1);
        self.set_u32(offset, kind.flag_bits());
        self.set_writable_u32(offset, (mask as u32) & !kind.flag_mask());
        if kind == BarKind::Memory64 {
            self.set_writable_u32(offset + 4, (mask >> 32) as u32);
        }
    }

    /// Declares an expansion ROM of `size` bytes (a power of two of at
    /// least 2 KiB). Firmware sizes it, places it and sets its enable bit
    /// before copying the ROM out.
    pub fn add_rom(&mut self, size: u64) {
        assert!(size.is_power_of_two() && size >= 2048, "ROM size {size:#x}");
        self.rom = Some(size);
        self.set_writable_u32(EXPANSION_ROM, !(size as u32 - 1) | ROM_ENABLE);
    }

    /// The expansion ROM BAR with its current address.
    fn rom_bar(&self) -> Option<BarRange> {
        Some(BarRange {
            index: ROM_BAR,
            kind: BarKind::Memory32,
            base: u64::from(self.u32(EXPANSION_ROM) & !ROM_FLAG_MASK),
            size: self.rom?,
        })
    }

    /// Puts BAR `index` at `base` (device side: vmd's initial placement).
    /// The expansion ROM gets an address but stays disabled.
    pub fn set_bar_address(&mut self, index: usize, base: u64) {
        if index == usize::from(ROM_BAR) {
            if self.rom.is_some() {
                self.set_u32(EXPANSION_ROM, base as u32 & !ROM_FLAG_MASK);
            }
            return;
        }
        let Some((kind, _)) = self.bars.get(index).copied().flatten() else {
            return;
        };
        let offset = BAR0 + 4 * index;
        self.set_u32(offset, (base as u32 & !kind.flag_mask()) | kind.flag_bits());
        if kind == BarKind::Memory64 {
            self.set_u32(offset + 4, (base >> 32) as u32);
        }
    }

    /// The declared BARs with their current addresses.
    pub fn bars(&self) -> Vec<BarRange> {
        let mut out = Vec::new();
        for (index, bar) in self.bars.iter().enumerate() {
            let Some((kind, size)) = *bar else { continue };
            let offset = BAR0 + 4 * index;
            let mut base = u64::from(self.u32(offset) & !kind.flag_mask());
            if kind == BarKind::Memory64 {
                base |= u64::from(self.u32(offset + 4)) << 32;
            }
            out.push(BarRange {
                index: index as u8,
                kind,
                base,
                size,
            });
        }
        out.extend(self.rom_bar());
        out
    }

    /// The BARs the device answers at now: enabled by the command
    /// register's I/O or memory bit and at a usable address.
    pub fn decoded_bars(&self) -> Vec<BarRange> {
        let command = self.command();
        self.bars()
            .into_iter()
            .filter(|bar| {
                let enabled = if bar.kind.is_io() {
                    command & COMMAND_IO != 0
                } else if bar.index == ROM_BAR {
                    command & COMMAND_MEMORY != 0 && self.u32(EXPANSION_ROM) & ROM_ENABLE != 0
                } else {
                    command & COMMAND_MEMORY != 0
                };
                enabled && bar.is_decodable()
            })
            .collect()
    }

    /// Appends a capability with `id` and `body` (the bytes after the id
    /// and next-pointer). `writable` marks the body bits the guest may
    /// change (same length as `body`, or empty for none). Returns the
    /// capability's offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u8]) -> usize {
        let offset = self.next_capability;
        assert!(
            offset + 2 + body.len() <= CONFIG_SIZE,
            "capabilities overflow"
        );
        self.bytes[offset] = id;
        self.bytes[offset + 1] = 0;
        self.bytes[offset + 2..offset + 2 + body.len()].copy_from_slice(body);
        for (i, &mask) in writable.iter().enumerate() {
            self.writable[offset + 2 + i] = mask;
        }
        match self.last_capability {
            None => {
                self.bytes[CAPABILITIES] = offset as u8;
                let status = self.u16(STATUS) | STATUS_CAPABILITIES;
                self.set_u16(STATUS, status);
            }
            Some(last) => self.bytes[last + 1] = offset as u8,
        }
        self.last_capability = Some(offset);
        self.next_capability = (offset + 2 + body.len()).next_multiple_of(4);
        offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expansion_rom_is_sized_placed_and_decoded_only_when_enabled() {
        let mut cs = ConfigSpace::new(Identity::default());
        assert_eq!(cs.bars(), vec![], "no ROM, no ROM BAR");
        cs.write(EXPANSION_ROM, &(!ROM_ENABLE).to_le_bytes());
        assert_eq!(cs.u32(EXPANSION_ROM), 0, "absent ROM reads 0 after sizing");

        cs.add_rom(0x40000);
        cs.write(EXPANSION_ROM, &(!ROM_ENABLE).to_le_bytes());
        assert_eq!(cs.u32(EXPANSION_ROM), 0xfffc_0000, "size mask");
        cs.write(EXPANSION_ROM, &0xfeb0_0000u32.to_le_bytes());
        cs.write(COMMAND, &COMMAND_MEMORY.to_le_bytes());
        let rom = cs.bars().into_iter().find(|b| b.index == ROM_BAR).unwrap();
        assert_eq!((rom.base, rom.size), (0xfeb0_0000, 0x40000));
        assert!(cs.decoded_bars().is_empty(), "not enabled yet");
        cs.write(EXPANSION_ROM, &(0xfeb0_0000u32 | ROM_ENABLE).to_le_bytes());
        assert_eq!(cs.decoded_bars(), vec![rom]);
        cs.write(COMMAND, &0u16.to_le_bytes());
        assert!(cs.decoded_bars().is_empty(), "memory decoding off");
        // vmd's own placement leaves it disabled.
        cs.set_bar_address(usize::from(ROM_BAR), 0xfe00_0000);
        assert_eq!(cs.u32(EXPANSION_ROM), 0xfe00_0000);
    }

    #[test]
    fn identity_is_read_only_and_command_is_writable() {
        let mut cs = ConfigSpace::new(Identity {
            vendor: 0x0b5d,
            device: 0x0666,
            class: 6,
            ..Default::default()
        });
        cs.write(0, &[0xff; 4]);
        assert_eq!(cs.u32(0), 0x0666_0b5d);
        cs.write(COMMAND, &[0x07, 0x04]);
        assert_eq!(cs.command(), 0x0407);
        cs.write(COMMAND, &[0xff, 0xff]);
        assert_eq!(cs.command(), 0x0407);
        assert_eq!(cs.u32(BAR0), 0, "no BAR reads 0");
        cs.write(BAR0, &[0xff; 4]);
        assert_eq!(cs.u32(BAR0), 0);
        assert_eq!(cs.u8(300), 0xff);
    }

    #[test]
    fn interrupt_line_keeps_the_assigned_irq() {
        let mut cs = ConfigSpace::new(Identity::default());
        cs.set_interrupt(5);
        cs.write(INTERRUPT_LINE, &[0xff]);
        assert_eq!(cs.u8(INTERRUPT_LINE), 5);
        assert_eq!(cs.u8(INTERRUPT_PIN), 1);
    }

    #[test]
    fn bars_size_relocate_and_decode() {
        let mut cs = ConfigSpace::new(Identity::default());
        cs.add_bar(0, BarKind::Io, 0x1000);
        cs.add_bar(1, BarKind::Memory32, 0x1000);
        cs.add_bar(2, BarKind::Memory64, 0x4000);
        cs.set_bar_address(0, 0x1000);
        assert_eq!(cs.u32(BAR0), 0x1001);
        // Sizing: all ones reads back the size mask and the flag bits.
        cs.write(BAR0, &[0xff; 4]);
        assert_eq!(cs.u32(BAR0), 0xffff_f001);
        cs.write(BAR0 + 4, &[0xff; 4]);
        assert_eq!(cs.u32(BAR0 + 4), 0xffff_f000);
        cs.write(BAR0 + 8, &[0xff; 4]);
        cs.write(BAR0 + 12, &[0xff; 4]);
        assert_eq!(cs.u32(BAR0 + 8), 0xffff_c004);
        assert_eq!(cs.u32(BAR0 + 12), 0xffff_ffff);
        assert_eq!(cs.u32(BAR0 + 16), 0, "no BAR 4");
        // Relocation.
        cs.write(BAR0, &0xc000u32.to_le_bytes());
        cs.write(BAR0 + 4, &0xfebf_0000u32.to_le_bytes());
        cs.write(BAR0 + 8, &0x0000_0000u32.to_le_bytes());
        cs.write(BAR0 + 12, &0x1u32.to_le_bytes());
        let bars = cs.bars();
        assert_eq!(bars[0].base, 0xc000);
        assert_eq!(bars[1].base, 0xfebf_0000);
        assert_eq!(bars[2].base, 0x1_0000_0000);
        assert!(cs.decoded_bars().is_empty(), "decoding disabled");
        cs.write(COMMAND, &[COMMAND_IO as u8, 0]);
        let decoded = cs.decoded_bars();
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].kind, BarKind::Io);
        cs.write(COMMAND, &[(COMMAND_IO | COMMAND_MEMORY) as u8, 0]);
        assert_eq!(cs.decoded_bars().len(), 3);
    }

    #[test]
    fn capability_list_links_and_masks() {
        let mut cs = ConfigSpace::new(Identity::default());
        assert_eq!(cs.u16(STATUS) & STATUS_CAPABILITIES, 0);
        let a = cs.add_capability(0x11, &[0, 0, 1, 2, 3, 4, 5, 6, 7, 8], &[0, 0xc0]);
        let b = cs.add_capability(0x09, &[14, 1, 2], &[]);
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x4c);
        assert_ne!(cs.u16(STATUS) & STATUS_CAPABILITIES, 0);
        assert_eq!(cs.u8(CAPABILITIES), 0x40);
        assert_eq!(cs.u8(a + 1), 0x4c);
        assert_eq!(cs.u8(b + 1), 0);
        cs.write(a + 2, &[0xff, 0xff]);
        assert_eq!(cs.u16(a + 2), 0xc000);
        cs.write(b + 2, &[0xff]);
        assert_eq!(cs.u8(b + 2), 14);
    }
}
