//! The network device's [`QueueHandler`]: it sends each queue's work to
//! [`super::rx`] or [`super::tx`], with the state they share
//! ([`NetIo`]), and tells the tap its offloads when the I/O thread starts
//! it.

use std::os::fd::AsFd;

use guestnet::tap;
use virtio_queue::Queue;

use super::state::NetIo;
use super::{RX, TX, rx, tx};
use crate::devices::virtio::device::{DeviceBroken, Interrupt, QueueHandler};
use crate::memory::GuestMemoryMmap;

/// The counters the handler keeps, named here for the device's users.
pub use super::state::NetStats;

/// The handler a network device's activation gives its I/O thread.
pub struct NetHandler {
    io: NetIo,
    /// The tap's `TUNSETOFFLOAD` flags, set by [`QueueHandler::start`].
    tap_offloads: u32,
}

impl NetHandler {
    /// A handler serving `io`'s queues, which tells the tap
    /// `tap_offloads` when it starts.
    pub fn new(io: NetIo, tap_offloads: u32) -> NetHandler {
        NetHandler { io, tap_offloads }
    }
}

impl QueueHandler for NetHandler {
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        interrupt: &dyn Interrupt,
        budget: usize,
    ) -> Result<bool, DeviceBroken> {
        match index {
            RX => rx::process(&mut self.io, queue, mem, interrupt, budget),
            TX => tx::process(&mut self.io, queue, mem, interrupt, budget),
            _ => Ok(false),
        }
    }

    /// Tells the tap which offloads the guest takes, before any frame
    /// moves either way.
    ///
    /// Here, on the device's I/O thread, whose seccomp filter allows the
    /// tap's ioctls, rather than in [`super::Net`]'s activation on the
    /// vCPU thread that took the DRIVER_OK write: a vCPU thread may issue
    /// KVM's ioctls only, and `TUNSETOFFLOAD` there kills the VM. Letting
    /// vCPU threads, the threads a hostile guest drives most directly,
    /// issue it would widen their filter for one call at activation that
    /// this thread can make as well.
    fn start(&mut self) {
        let flags = self.tap_offloads;
        if let Err(e) = tap::set_offloads(self.io.tap.as_fd(), flags) {
            // Without them the kernel finishes every frame itself; the
            // guest is told nothing it did not ask for either way.
            tracing::warn!("{}: TUNSETOFFLOAD {flags:#x}: {e}", self.io.name);
        }
    }

    fn take_woken(&mut self) -> u64 {
        std::mem::take(&mut self.io.woken)
    }

    fn held_chains(&self, index: usize) -> u16 {
        match index {
            RX => self.io.rx_buffers.len() as u16,
            _ => 0,
        }
    }
}
