//! The PCI root: 32 slots on bus 0, reached through configuration
//! mechanism #1 (address at 0xCF8, data at 0xCFC–0xCFF), plus the reset
//! control register at 0xCF9 that shares the address port's range.

use std::sync::{Arc, Mutex};

use super::config_space::INTERRUPT_LINE;
use crate::bus::BusDevice;
use crate::platform::PciInterrupt;

pub const CONFIG_PORTS_BASE: u64 = 0xcf8;
pub const CONFIG_PORTS_LEN: u64 = 8;
pub const SLOTS: usize = 32;

/// Reset control: a write with RST_CPU set resets the machine.
const RESET_CONTROL_OFFSET: u64 = 1;
const RESET_CPU: u8 = 0x04;
/// The reset control register's port, and the value (SYS_RST | RST_CPU)
/// the FADT's reset register tells guests to write there.
pub const RESET_CONTROL_PORT: u16 = (CONFIG_PORTS_BASE + RESET_CONTROL_OFFSET) as u16;
pub const RESET_VALUE: u8 = 0x06;

/// A function on bus 0.
pub trait PciDevice: Send {
    /// Reads `data.len()` bytes of configuration space at `offset`.
    fn config_read(&mut self, offset: usize, data: &mut [u8]);
    /// Writes configuration space at `offset`.
    fn config_write(&mut self, offset: usize, data: &[u8]);
}

pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Bus 0: one function per slot, slots taken in creation order.
#[derive(Default)]
pub struct PciRoot {
    slots: Vec<SharedPciDevice>,
}

impl PciRoot {
    pub fn new() -> PciRoot {
        PciRoot::default()
    }

    /// Puts `device` in the next free slot and returns the slot number.
    pub fn add(&mut self, device: SharedPciDevice) -> Option<usize> {
        if self.slots.len() >= SLOTS {
            return None;
        }
        self.slots.push(device);
        Some(self.slots.len() - 1)
    }

    /// The INTx routing of the bus as the platform tables describe it:
    /// every function that declares an interrupt pin, with the IRQ its
    /// interrupt-line register holds (fixed at creation, vmd.md §8.5).
    pub fn interrupts(&self) -> Vec<PciInterrupt> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, device)| {
                let mut pin_and_line = [0u8; 2];
                let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
                device.config_read(INTERRUPT_LINE, &mut pin_and_line);
                let [irq, pin] = pin_and_line;
                (pin != 0 && pin != 0xff).then_some(PciInterrupt {
                    slot: slot as u8,
                    irq,
                })
            })
            .collect()
    }

    fn device(&self, bus: u32, slot: u32, function: u32) -> Option<&SharedPciDevice> {
        if bus != 0 || function != 0 {
            return None;
        }
        self.slots.get(slot as usize)
    }
}

/// The I/O ports of configuration mechanism #1.
pub struct PciConfigPorts {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
    reset_control: u8,
    on_reset: Box<dyn Fn() + Send>,
}

impl PciConfigPorts {
    pub fn new(root: Arc<Mutex<PciRoot>>, on_reset: Box<dyn Fn() + Send>) -> PciConfigPorts {
        PciConfigPorts {
            root,
            address: 0,
            reset_control: 0,
            on_reset,
        }
    }

    /// The function and register the address port selects, if enabled.
    fn target(&self, data_offset: u64) -> Option<(u32, u32, u32, usize)> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let bus = (self.address >> 16) & 0xff;
        let slot = (self.address >> 11) & 0x1f;
        let function = (self.address >> 8) & 0x7;
        let register = (self.address & 0xfc) as usize + data_offset as usize;
        Some((bus, slot, function, register))
    }
}

impl BusDevice for PciConfigPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            RESET_CONTROL_OFFSET if data.len() == 1 => data[0] = self.reset_control,
            4..=7 => {
                data.fill(0xff);
                let Some((bus, slot, function, register)) = self.target(offset - 4) else {
                    return;
                };
                let root = self.root.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(device) = root.device(bus, slot, function) {
                    device
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .config_read(register, data);
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            RESET_CONTROL_OFFSET if data.len() == 1 => {
                self.reset_control = data[0] & 0x0e;
                if data[0] & RESET_CPU != 0 {
                    (self.on_reset)();
                }
            }
            4..=7 => {
                let Some((bus, slot, function, register)) = self.target(offset - 4) else {
                    return;
                };
                let root = self.root.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(device) = root.device(bus, slot, function) {
                    device
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .config_write(register, data);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::pci::host_bridge::HostBridge;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn ports() -> (PciConfigPorts, Arc<AtomicBool>) {
        let mut root = PciRoot::new();
        assert_eq!(root.add(Arc::new(Mutex::new(HostBridge::new()))), Some(0));
        let reset = Arc::new(AtomicBool::new(false));
        let r = reset.clone();
        let ports = PciConfigPorts::new(
            Arc::new(Mutex::new(root)),
            Box::new(move || r.store(true, Ordering::SeqCst)),
        );
        (ports, reset)
    }

    fn config_read32(p: &mut PciConfigPorts, bdf_reg: u32) -> u32 {
        p.write(0, &(0x8000_0000 | bdf_reg).to_le_bytes());
        let mut d = [0u8; 4];
        p.read(4, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn host_bridge_identity_and_absent_slots() {
        let (mut p, _) = ports();
        assert_eq!(config_read32(&mut p, 0), 0x0666_0b5d);
        assert_eq!(config_read32(&mut p, 0x08) >> 16, 0x0600, "class 06/00");
        assert_eq!(config_read32(&mut p, 1 << 11), 0xffff_ffff, "empty slot");
        assert_eq!(config_read32(&mut p, 1 << 8), 0xffff_ffff, "function 1");
        assert_eq!(config_read32(&mut p, 1 << 16), 0xffff_ffff, "bus 1");
        // Byte read of the vendor id's high byte through 0xCFD.
        p.write(0, &0x8000_0000u32.to_le_bytes());
        let mut b = [0u8];
        p.read(5, &mut b);
        assert_eq!(b[0], 0x0b);
        // The address register reads back what was written.
        let mut a = [0u8; 4];
        p.read(0, &mut a);
        assert_eq!(u32::from_le_bytes(a), 0x8000_0000);
    }

    #[test]
    fn reset_control_register() {
        let (mut p, reset) = ports();
        p.write(1, &[0x02]);
        assert!(!reset.load(Ordering::SeqCst));
        p.write(1, &[0x06]);
        assert!(reset.load(Ordering::SeqCst));
    }
}
