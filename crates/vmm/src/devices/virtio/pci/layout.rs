//! Where things are in a virtio-pci device: vmd's BAR0 layout (docs/machine.md,
//! "PCI devices": common configuration at 0x000, notification at 0x100 with
//! multiplier 0, ISR at 0x200, device configuration at 0x300, in a 4 KiB
//! port I/O BAR), the MSI-X BAR this project adds, and the vendor
//! capabilities that tell the driver so (virtio 1.x §4.1.4).

use crate::devices::pci::ConfigSpace;
use crate::devices::pci::bars::BarKind;
use crate::devices::pci::msix;

use super::common_config::COMMON_CONFIG_LEN;

pub const REGISTERS_BAR: u8 = 0;
pub const REGISTERS_BAR_KIND: BarKind = BarKind::Io;
pub const REGISTERS_BAR_SIZE: u64 = 0x1000;
pub const COMMON_OFFSET: u64 = 0x000;
pub const NOTIFY_OFFSET: u64 = 0x100;
pub const NOTIFY_LEN: u64 = 2;
pub const ISR_OFFSET: u64 = 0x200;
pub const DEVICE_CONFIG_OFFSET: u64 = 0x300;
pub const DEVICE_CONFIG_MAX: u64 = REGISTERS_BAR_SIZE - DEVICE_CONFIG_OFFSET;

pub const MSIX_BAR: u8 = 1;
pub const MSIX_BAR_SIZE: u64 = 0x1000;
pub const MSIX_TABLE_OFFSET: u64 = 0x000;
pub const MSIX_PBA_OFFSET: u64 = 0x800;

const VENDOR_CAPABILITY: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;

/// Offsets of the capabilities the transport acts on.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    pub msix: usize,
    pub pci_cfg: usize,
}

impl Capabilities {
    /// Offset of the MSI-X message control register.
    pub fn msix_control(&self) -> usize {
        self.msix + 2
    }

    /// The VIRTIO_PCI_CAP_PCI_CFG window: BAR, offset and length chosen by
    /// the driver, and the data register that accesses them.
    pub fn pci_cfg_bar(&self) -> usize {
        self.pci_cfg + 4
    }

    pub fn pci_cfg_offset(&self) -> usize {
        self.pci_cfg + 8
    }

    pub fn pci_cfg_length(&self) -> usize {
        self.pci_cfg + 12
    }

    pub fn pci_cfg_data(&self) -> usize {
        self.pci_cfg + 16
    }
}

/// The body of a `virtio_pci_cap` after id and next pointer.
fn virtio_cap(cfg_type: u8, bar: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    let mut body = vec![(16 + extra.len()) as u8, cfg_type, bar, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(length as u32).to_le_bytes());
    body.extend_from_slice(extra);
    body
}

/// Declares the BARs and capabilities of a virtio-pci device whose
/// device configuration is `device_config_len` bytes (none: no device
/// configuration capability) and which has `vectors` MSI-X vectors.
pub fn declare(config: &mut ConfigSpace, device_config_len: u64, vectors: u16) -> Capabilities {
    config.add_bar(
        usize::from(REGISTERS_BAR),
        REGISTERS_BAR_KIND,
        REGISTERS_BAR_SIZE,
    );
    config.add_bar(usize::from(MSIX_BAR), BarKind::Memory32, MSIX_BAR_SIZE);
    let r = REGISTERS_BAR;
    let cap = |config: &mut ConfigSpace, body: Vec<u8>| {
        config.add_capability(VENDOR_CAPABILITY, &body, &[])
    };
    cap(
        config,
        virtio_cap(CFG_COMMON, r, COMMON_OFFSET, COMMON_CONFIG_LEN, &[]),
    );
    // notify_off_multiplier 0: one address for every queue.
    cap(
        config,
        virtio_cap(
            CFG_NOTIFY,
            r,
            NOTIFY_OFFSET,
            NOTIFY_LEN,
            &0u32.to_le_bytes(),
        ),
    );
    cap(config, virtio_cap(CFG_ISR, r, ISR_OFFSET, 1, &[]));
    // A device without device-specific configuration (the entropy device)
    // declares no such structure: Linux refuses a capability of length 0
    // and with it the whole device.
    if device_config_len > 0 {
        cap(
            config,
            virtio_cap(CFG_DEVICE, r, DEVICE_CONFIG_OFFSET, device_config_len, &[]),
        );
    }
    // The PCI configuration access window: bar, offset, length and data
    // are the driver's to write.
    let body = virtio_cap(CFG_PCI, 0, 0, 0, &[0; 4]);
    let mut writable = vec![0u8; body.len()];
    writable[2] = 0xff;
    writable[6..18].fill(0xff);
    let pci_cfg = config.add_capability(VENDOR_CAPABILITY, &body, &writable);
    let (body, writable) = msix::capability(
        vectors,
        MSIX_BAR,
        MSIX_TABLE_OFFSET as u32,
        MSIX_PBA_OFFSET as u32,
    );
    let msix = config.add_capability(msix::CAPABILITY_ID, &body, &writable);
    Capabilities { msix, pci_cfg }
}
