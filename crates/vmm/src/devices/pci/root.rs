//! The PCI root: 32 slots on bus 0, reached through configuration
//! mechanism #1 (address at 0xCF8, data at 0xCFC–0xCFF), plus the reset
//! control register at 0xCF9 that shares the address port's range.
//!
//! The root also owns BAR decoding: after every configuration write it
//! compares what the device decodes now with what is on the port and MMIO
//! buses and moves the ranges, so firmware and guests may relocate BARs
//! (docs/machine.md, "PCI devices") and devices re-register their ioeventfds.

use std::sync::{Arc, Mutex, Weak};

use super::bars::{BarAllocator, BarRange};
use super::config_space::INTERRUPT_LINE;
use crate::bus::{Bus, BusDevice};
use crate::devices::persist::Persist;
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

/// A function on bus 0. Its [`Persist`] state covers its configuration
/// space and whatever is behind its BARs.
pub trait PciDevice: Send + Persist {
    /// Reads `data.len()` bytes of configuration space at `offset`.
    fn config_read(&mut self, offset: usize, data: &mut [u8]);
    /// Writes configuration space at `offset`.
    fn config_write(&mut self, offset: usize, data: &[u8]);
    /// Every BAR the device has, with its current address (decoding or
    /// not). The root assigns initial addresses to these.
    fn bars(&self) -> Vec<BarRange> {
        Vec::new()
    }
    /// Device side: puts BAR `index` at `base` before the guest runs.
    fn set_bar_address(&mut self, _index: u8, _base: u64) {}
    /// The BARs that decode now (command register enables, usable
    /// addresses); the root keeps the buses in step with this.
    fn decoded_bars(&self) -> Vec<BarRange> {
        Vec::new()
    }
    /// A read at `offset` inside BAR `bar`.
    fn bar_read(&mut self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    /// A write at `offset` inside BAR `bar`.
    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
    /// The root put `bar` on a bus (`true`) or took it off (`false`):
    /// devices with ioeventfds inside the BAR move them here.
    fn bar_mapped(&mut self, _bar: BarRange, _mapped: bool) {}
}

pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// One BAR of one device as a bus range.
struct BarWindow {
    device: SharedPciDevice,
    bar: u8,
}

impl BusDevice for BarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.device).bar_read(self.bar, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        lock(&self.device).bar_write(self.bar, offset, data);
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Slot {
    device: SharedPciDevice,
    /// The BARs currently on a bus.
    mapped: Vec<BarRange>,
}

/// Bus 0: one function per slot, slots taken in creation order.
pub struct PciRoot {
    slots: Vec<Slot>,
    allocator: BarAllocator,
    // Weak: the port bus holds the configuration ports, which hold us.
    pio: Weak<Bus>,
    mmio: Weak<Bus>,
}

impl PciRoot {
    /// A root whose devices' BARs go on `pio` and `mmio`.
    pub fn new(pio: &Arc<Bus>, mmio: &Arc<Bus>) -> PciRoot {
        PciRoot {
            slots: Vec::new(),
            allocator: BarAllocator::new(),
            pio: Arc::downgrade(pio),
            mmio: Arc::downgrade(mmio),
        }
    }

    /// Puts `device` in the next free slot, gives its BARs their initial
    /// addresses and maps them. Returns the slot number, or `None` when
    /// the bus is full or a BAR finds no room.
    pub fn add(&mut self, device: SharedPciDevice) -> Option<usize> {
        if self.slots.len() >= SLOTS {
            return None;
        }
        {
            let mut dev = lock(&device);
            for bar in dev.bars() {
                let base = self.allocator.allocate(bar.kind, bar.size)?;
                dev.set_bar_address(bar.index, base);
            }
        }
        self.slots.push(Slot {
            device,
            mapped: Vec::new(),
        });
        let slot = self.slots.len() - 1;
        self.sync_bars(slot);
        Some(slot)
    }

    /// The functions in slot order.
    pub fn devices(&self) -> Vec<SharedPciDevice> {
        self.slots.iter().map(|s| s.device.clone()).collect()
    }

    /// Maps every function's BARs where their restored configuration
    /// says, as after a configuration write.
    pub fn sync_all_bars(&mut self) {
        for slot in 0..self.slots.len() {
            self.sync_bars(slot);
        }
    }

    /// The INTx routing of the bus as the platform tables describe it:
    /// every function that declares an interrupt pin, with the IRQ its
    /// interrupt-line register holds (fixed at creation, docs/machine.md, "PCI devices").
    pub fn interrupts(&self) -> Vec<PciInterrupt> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, entry)| {
                let mut pin_and_line = [0u8; 2];
                let mut device = lock(&entry.device);
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
        self.slots.get(slot as usize).map(|s| &s.device)
    }

    fn bus_for(&self, bar: &BarRange) -> Option<Arc<Bus>> {
        if bar.kind.is_io() {
            self.pio.upgrade()
        } else {
            self.mmio.upgrade()
        }
    }

    /// Brings the buses in line with what the device in `slot` decodes.
    fn sync_bars(&mut self, slot: usize) {
        let Some(entry) = self.slots.get(slot) else {
            return;
        };
        let device = entry.device.clone();
        let wanted = lock(&device).decoded_bars();
        let current = std::mem::take(&mut self.slots[slot].mapped);
        let mut kept = Vec::new();
        for bar in current {
            if wanted.contains(&bar) {
                kept.push(bar);
                continue;
            }
            if let Some(bus) = self.bus_for(&bar) {
                bus.remove(bar.base);
            }
            lock(&device).bar_mapped(bar, false);
        }
        for bar in wanted {
            if kept.contains(&bar) {
                continue;
            }
            let Some(bus) = self.bus_for(&bar) else {
                continue;
            };
            let window = Arc::new(Mutex::new(BarWindow {
                device: device.clone(),
                bar: bar.index,
            }));
            match bus.insert(bar.base, bar.size, window) {
                Ok(()) => {
                    lock(&device).bar_mapped(bar, true);
                    kept.push(bar);
                }
                // The guest put a BAR on top of something else; it stays
                // unreachable until moved, as on hardware with a clash.
                Err(e) => tracing::debug!("pci slot {slot}: BAR {}: {e}", bar.index),
            }
        }
        self.slots[slot].mapped = kept;
    }
}

/// The I/O ports of configuration mechanism #1.
pub struct PciConfigPorts {
    root: Arc<Mutex<PciRoot>>,
    pub(super) address: u32,
    pub(super) reset_control: u8,
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
                let mut root = self.root.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(device) = root.device(bus, slot, function) {
                    device
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .config_write(register, data);
                    root.sync_bars(slot as usize);
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
        let (pio, mmio) = (Arc::new(Bus::new()), Arc::new(Bus::new()));
        let mut root = PciRoot::new(&pio, &mmio);
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
