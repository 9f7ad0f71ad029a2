//! PCI: configuration mechanism #1 on bus 0, the devices in its slots, and
//! what a device needs to be reachable: BARs, capabilities, MSI-X.

pub mod bars;
pub mod config_space;
pub mod host_bridge;
pub mod irq_lines;
pub mod msix;
pub mod persist;
pub mod root;

pub use bars::{BarAllocator, BarKind, BarRange};
pub use config_space::{ConfigSpace, Identity};
pub use root::{PciConfigPorts, PciDevice, PciRoot};
