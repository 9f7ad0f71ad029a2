//! PCI: configuration mechanism #1 on bus 0 and the devices in its slots.

pub mod config_space;
pub mod host_bridge;
pub mod root;

pub use config_space::{ConfigSpace, Identity};
pub use root::{PciConfigPorts, PciDevice, PciRoot};
