//! virtio-net (docs/machine.md, "virtio devices" and "The network device";
//! docs/networking.md): one tap as a network device.
//!
//! * [`device`]: identity, features, configuration space (the MAC),
//!   activation (the tap's offloads follow what the driver accepted).
//! * [`frame`]: what the guest's virtio-net header says and whether a
//!   frame may pass: the only code that interprets guest-controlled
//!   bytes, and the fuzz target.
//! * [`handler`]: the I/O thread's side: [`rx`] fills receive buffers
//!   from the tap (and with the DHCP responder's replies), [`tx`] sends
//!   transmit buffers to the tap, both batched.
//! * [`driver`]: a driver without a guest, for tests and the benchmark.

pub mod device;
// Test drivers: the crate's own tests, its integration tests, examples and
// fuzz targets enable `test-drivers`; the production library leaves them out.
#[cfg(any(test, feature = "test-drivers"))]
pub mod driver;
pub mod frame;
pub mod handler;
mod persist;
pub mod rx;
pub mod tx;

pub use device::{Net, NetConfig};

/// The virtio device type of a network device.
pub const DEVICE_TYPE: u16 = 1;
/// vmd's queue size for vionet; drivers may choose up to 1024.
pub const QUEUE_SIZE: u16 = 256;
/// Queue indexes.
pub const RX: usize = 0;
pub const TX: usize = 1;

/// PCI class 08/80 and subsystem 0001, as vmd has it (docs/machine.md, "PCI devices").
pub fn pci_identity() -> crate::devices::pci::Identity {
    crate::devices::virtio::pci::identity(DEVICE_TYPE, 0x08, 0x80, 0x0001)
}
