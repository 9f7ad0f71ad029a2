//! What a virtio device model is to the rest of the virtio code: the
//! traits the transport and the I/O thread drive it through, the error
//! that makes it need a reset, and the features every device offers.
//!
//! The bottom of the virtio modules: it uses none of them, and they all
//! may use it (see the layering in the parent module).

use std::os::fd::RawFd;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;
use vmm_sys_util::epoll::EventSet;

use crate::devices::persist::Persist;
use crate::memory::GuestMemoryMmap;

/// Largest queue a driver may choose (docs/machine.md, "Limits").
pub const MAX_QUEUE_SIZE: u16 = 1024;

/// Features every device of this project offers: modern only, indirect
/// descriptors and event-idx notification suppression (docs/machine.md,
/// "virtio devices").
pub const TRANSPORT_FEATURES: u64 =
    1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_INDIRECT_DESC | 1 << VIRTIO_RING_F_EVENT_IDX;

pub fn has_feature(features: u64, bit: u32) -> bool {
    features & (1 << bit) != 0
}

/// How a device model tells the driver something happened.
pub trait Interrupt: Send + Sync {
    /// Buffers of queue `queue` were used.
    fn signal_queue(&self, queue: u16);
    /// The device configuration (or the device status: NEEDS_RESET)
    /// changed.
    fn signal_config(&self);
}

/// The driver broke the rules in a way the device cannot answer with an
/// error status: the device needs a reset (status NEEDS_RESET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBroken(pub String);

impl std::fmt::Display for DeviceBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serves a device's queues once the driver set DRIVER_OK. Runs on the
/// device's I/O thread.
pub trait QueueHandler: Send {
    /// The driver notified queue `index` (or work is left from an earlier
    /// pass). Serves at most `budget` chains; returns whether chains are
    /// left, so the worker can come back after looking at other events.
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        interrupt: &dyn Interrupt,
        budget: usize,
    ) -> Result<bool, DeviceBroken>;

    /// The part of activation that needs the host (a network device
    /// tells its tap the offloads the driver took). Called once, on the
    /// device's I/O thread, when the handler is handed to it; the
    /// driver's DRIVER_OK write completes only after it. Not in
    /// [`VirtioDevice::activate`]: that runs on the vCPU thread that took
    /// the write, whose seccomp filter allows KVM's ioctls and nothing
    /// else of the kind.
    fn start(&mut self) {}

    /// Queues (bit n for queue n) that serving another queue gave work
    /// to, to be served next; asked after every pass.
    fn take_woken(&mut self) -> u64 {
        0
    }

    /// Chains of queue `index` the handler took off the ring and keeps
    /// unused (receive buffers taken ahead of need). A saved queue position
    /// gives them back: they are the last ones taken, and using a buffer
    /// the device only writes into has no effect until it is used, so the
    /// receiving device takes them again.
    fn held_chains(&self, _index: usize) -> u16 {
        0
    }
}

/// A virtio device model, independent of the transport. Its [`Persist`]
/// state is what the model itself keeps beyond the transport's registers
/// and queues (the transport saves those).
pub trait VirtioDevice: Send + Persist {
    /// The virtio device type (2 for block); the PCI device id is
    /// 0x1040 plus this.
    fn device_type(&self) -> u16;
    /// The size each queue starts with; their number is the length.
    fn queue_sizes(&self) -> &[u16];
    /// Feature bits offered, including [`TRANSPORT_FEATURES`].
    fn features(&self) -> u64;
    /// Bytes of device-specific configuration.
    fn config_len(&self) -> u64;
    /// Reads the device-specific configuration.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration (most are read-only).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver reset the device: configuration the driver may write
    /// goes back to its initial values.
    fn reset(&mut self) {}
    /// The handler for the queues, given the features the driver
    /// accepted.
    fn activate(&mut self, features: u64) -> Box<dyn QueueHandler>;
    /// What the device's I/O thread watches besides the queues.
    fn event_sources(&self) -> Vec<EventSource> {
        Vec::new()
    }
    /// What the I/O thread does before a send takes the device's state.
    fn flusher(&self) -> Option<Flusher> {
        None
    }
}

/// Something besides its queues a device's I/O thread waits on — a
/// network device's tap — and the queues to serve when it is ready.
pub struct EventSource {
    /// Watched, not owned: the device keeps it open at least as long as
    /// the worker lives.
    pub fd: RawFd,
    pub events: EventSet,
    pub queues: Vec<usize>,
}

/// What a device does on its I/O thread before its state is taken, so
/// that what it wrote reaches the host (the block device flushes its
/// image's caches and metadata into the file).
pub type Flusher = Box<dyn Fn() -> std::io::Result<()> + Send>;
