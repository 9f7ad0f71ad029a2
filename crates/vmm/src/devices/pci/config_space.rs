//! A PCI type-0 configuration space: 256 bytes and the mask of bits the
//! guest may change.
//!
//! Writes only touch writable bits, so sizing a BAR (write all ones, read
//! back) yields its size mask with no special case, unimplemented BARs read
//! 0, and read-only identity registers stay intact. The interrupt-line
//! register is read-only here: it holds the IRQ the device really uses
//! (vmd.md §8.5 keeps IRQs fixed), which stock SeaBIOS would otherwise
//! overwrite with "unknown" on a host bridge it does not recognise.

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
    bytes: [u8; CONFIG_SIZE],
    writable: [u8; CONFIG_SIZE],
}

impl ConfigSpace {
    pub fn new(id: Identity) -> ConfigSpace {
        let mut cs = ConfigSpace {
            bytes: [0; CONFIG_SIZE],
            writable: [0; CONFIG_SIZE],
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
