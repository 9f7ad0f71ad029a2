//! Slot 0: vmd's host bridge, 0b5d:0666 (docs/machine.md, "PCI devices").
//!
//! Stock SeaBIOS does not know this bridge; it then warns that no QEMU
//! northbridge was found and carries on as on QEMU, which is all we need:
//! it still reads fw_cfg, probes the bus and assigns BARs.

use super::config_space::{ConfigSpace, Identity};
use super::root::PciDevice;

pub struct HostBridge {
    pub(super) config: ConfigSpace,
}

impl HostBridge {
    pub fn new() -> HostBridge {
        HostBridge {
            config: ConfigSpace::new(Identity {
                vendor: 0x0b5d,
                device: 0x0666,
                class: 0x06,
                subclass: 0x00,
                prog_if: 0,
                revision: 0,
                subsystem_vendor: 0x0b5d,
                subsystem: 0x0000,
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        HostBridge::new()
    }
}

impl PciDevice for HostBridge {
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
    }
}
