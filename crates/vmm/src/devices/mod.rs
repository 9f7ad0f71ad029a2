//! The devices of the VM, one per file: what happens when the guest touches
//! a port or an address is found in the file named after the device.

pub mod acpi_pm;
pub mod cmos;
pub mod debug_port;
pub mod fw_cfg;
pub mod i8042;
pub mod level_irq;
pub mod pci;
pub mod persist;
pub mod serial;
pub mod virtio;
pub mod vmmci;
