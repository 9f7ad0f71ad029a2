//! virtio-net (docs/machine.md, "virtio devices" and "The network device";
//! docs/networking.md): one tap as a network device.
//!
//! The modules form layers, each using only those below it, so data flows
//! one way (the crate's `tests/module_graph.rs` checks that they form no
//! cycle); all of them use this module's constants, and it names the
//! device's types.
//!
//! 1. [`frame`]: what the guest's virtio-net header says and whether a
//!    frame may pass: the only code that interprets guest-controlled
//!    bytes, and the fuzz target. `held_buffers`: the receive buffers
//!    taken off the queue and kept between frames.
//! 2. [`state`]: what the two queues' paths share on the I/O thread
//!    ([`state::NetIo`]: the tap, the offloads and transmit policy, the
//!    held buffers, the responder's replies) and the counters
//!    ([`state::NetStats`]).
//! 3. [`rx`] fills receive buffers from the tap (and with the DHCP
//!    responder's replies), [`tx`] sends transmit buffers to the tap,
//!    both batched.
//! 4. [`handler`]: the device's queue handler, which sends each queue's
//!    work to [`rx`] or [`tx`] and tells the tap its offloads.
//! 5. [`device`]: identity, features, configuration space (the MAC),
//!    activation (the tap's offloads follow what the driver accepted).
//! 6. [`driver`]: a driver without a guest, for tests and the benchmark;
//!    `persist`: the saved state.

pub mod device;
// Test drivers: the crate's own tests, its integration tests, examples and
// fuzz targets enable `test-drivers`; the production library leaves them out.
#[cfg(any(test, feature = "test-drivers"))]
pub mod driver;
pub mod frame;
pub mod handler;
mod held_buffers;
mod persist;
pub mod rx;
pub mod state;
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
