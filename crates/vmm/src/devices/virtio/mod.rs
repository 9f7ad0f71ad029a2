//! virtio 1.x devices (docs/machine.md, "virtio devices"): the device models and the PCI
//! transport that carries them.
//!
//! The modules form layers, and a module uses only modules of layers below
//! its own, so data flows one way: up from guest memory and the rings to
//! the devices, and from the transport down to them through the traits of
//! the bottom layer. `layers::the_modules_keep_their_layers` checks the
//! `use` lines against this list.
//!
//! 1. [`device`]: what a device model is ([`VirtioDevice`],
//!    [`QueueHandler`], [`Interrupt`], [`DeviceBroken`]) and the features
//!    every device offers.
//! 2. [`guest`]: where guest buffers are in this process
//!    ([`guest::HostViews`]), and the copies and raw iovecs through which
//!    devices touch them. [`used`]: putting chains on the used ring and
//!    interrupting the driver.
//! 3. [`queue`]: the chain types ([`queue::Chain`], [`queue::Segment`])
//!    and the checked walk of a chain the rust-vmm split virtqueue found.
//! 4. [`avail`]: taking chains off the available ring, walked from a
//!    mapping of the rings and checked as [`queue`] checks them (the
//!    two walks of descriptors; tests and a fuzz target hold them to the
//!    same verdicts). [`buffers`]: a chain's buffers as byte streams.
//! 5. [`serve`]: the serving loop of every request/response device and
//!    the one `process_queue` they share. [`worker`]: the I/O thread of
//!    one device: epoll on the queue notifications and the interrupt
//!    resample, off the vCPU threads. [`driver`]: a guest driver's side
//!    of a queue, for tests, the fuzz targets and the benchmarks.
//! 6. [`pci`]: the modern virtio-pci transport (common, notify, ISR and
//!    device configuration in BAR0, MSI-X in BAR1), ioeventfds and irqfds,
//!    which drives any [`VirtioDevice`] through the [`worker`].
//! 7. The devices: [`blk`] (block), [`net`] (network), [`scsi`] (the SCSI
//!    host with the CD-ROM), [`rng`] (entropy). Each names its PCI
//!    identity through [`pci`].
//!
//! This module only declares them and names the bottom layer's items for
//! the rest of the crate.

pub mod avail;
pub mod blk;
pub mod buffers;
pub mod device;
// Test drivers: the crate's own tests, its integration tests, examples and
// fuzz targets enable `test-drivers`; the production library leaves them out.
#[cfg(any(test, feature = "test-drivers"))]
pub mod driver;
pub mod guest;
pub mod net;
pub mod pci;
pub mod queue;
pub mod rng;
pub mod scsi;
pub mod serve;
pub mod used;
pub mod worker;

pub use device::{
    DeviceBroken, Interrupt, MAX_QUEUE_SIZE, QueueHandler, TRANSPORT_FEATURES, VirtioDevice,
    has_feature,
};

#[cfg(test)]
mod layers;
