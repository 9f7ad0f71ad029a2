//! The serving loop of the request/response devices (block, SCSI,
//! entropy), above the ring code it drives: chains come off the available
//! ring through [`AvailRing`] (checked by it, or by the walk in
//! [`super::queue`]), each goes to the device's [`Requests::serve`] step,
//! and the answers go back through [`UsedBatch`].
//!
//! A device implements [`Requests`] and is a [`QueueHandler`] by that:
//! the one `process_queue` here is every such device's. The network
//! device streams frames rather than answering requests (receive buffers
//! wait for frames, transmitted frames go to the tap in batches), so it
//! has loops of its own over the same ring code.

use std::num::Wrapping;

use virtio_queue::{Queue, QueueT};

use super::avail::AvailRing;
use super::device::{DeviceBroken, Interrupt, QueueHandler};
use super::queue::Chain;
use super::used::UsedBatch;
use crate::memory::GuestMemoryMmap;

/// A device that answers requests: the driver offers a chain holding a
/// request and room for the answer, the device reads the one and writes
/// the other, and hands the chain back.
pub trait Requests: Send {
    /// Descriptors accepted in one chain; a longer chain is malformed.
    const MAX_DESCRIPTORS: usize;

    /// Whether queue `index` carries requests. A queue that does not (a
    /// SCSI host's event queue, whose buffers wait for events the device
    /// never sends) is left as it is.
    fn serves(&self, _index: usize) -> bool {
        true
    }

    /// Asked before each chain: whether the device takes another one now.
    /// A device that rations its work says no, and the chains stay where
    /// they are.
    fn may_take(&mut self) -> bool {
        true
    }

    /// Answers one chain of queue `index`; returns the number of bytes it
    /// wrote into the chain.
    fn serve(
        &mut self,
        index: usize,
        chain: &Chain,
        mem: &GuestMemoryMmap,
    ) -> Result<u32, DeviceBroken>;

    /// Called after a pass that left chains waiting, before the I/O thread
    /// looks at its other events and comes back.
    fn chains_left(&mut self) {}
}

impl<R: Requests> QueueHandler for R {
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        interrupt: &dyn Interrupt,
        budget: usize,
    ) -> Result<bool, DeviceBroken> {
        if !self.serves(index) {
            return Ok(false);
        }
        let served = serve_requests(self, index, queue, mem, interrupt, budget)?;
        if served.more {
            self.chains_left();
        }
        Ok(served.more)
    }
}

/// Requests a pass completes before it makes them visible to the driver,
/// which may take them while the pass goes on.
const PUBLISH_EVERY: usize = 16;

/// What [`serve_requests`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Served {
    pub chains: usize,
    /// Chains are still available: the budget ran out, or the device
    /// would take no more for now.
    pub more: bool,
}

/// Takes the available chains of queue `index`, checks each, lets
/// `device` answer it, puts it on the used ring and interrupts the driver
/// as event-idx or the ring flags ask. Stops after `budget` chains, or
/// when the device takes no more ([`Requests::may_take`]). A malformed
/// chain, an impossible available index or a ring outside memory mean the
/// device needs a reset.
pub fn serve_requests<R: Requests + ?Sized>(
    device: &mut R,
    index: usize,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &dyn Interrupt,
    budget: usize,
) -> Result<Served, DeviceBroken> {
    let broken = |what: String| DeviceBroken(format!("queue {index}: {what}"));
    let mut served = Served::default();
    let mut ring = AvailRing::new(queue, mem);
    let mut used = UsedBatch::new(queue);
    let mut chain = Chain::default();
    let result = (|| loop {
        queue
            .disable_notification(mem)
            .map_err(|e| broken(e.to_string()))?;
        loop {
            if served.chains >= budget {
                served.more = true;
                return Ok(());
            }
            if !device.may_take() {
                if pending_chains(queue, mem) > 0 {
                    served.more = true;
                    return Ok(());
                }
                // Nothing waits: notifications go back on as for an
                // empty ring, or the next chain would never be noticed.
                break;
            }
            if !ring
                .take(queue, R::MAX_DESCRIPTORS, &mut chain)
                .map_err(|e| broken(e.to_string()))?
            {
                break;
            }
            let written = device.serve(index, &chain, mem)?;
            used.add(chain.head, written);
            served.chains += 1;
            if served.chains % PUBLISH_EVERY == 0 {
                used.publish(queue, mem)
                    .map_err(|e| broken(e.to_string()))?;
            }
        }
        // Re-enable notifications; chains that arrived meanwhile are
        // served now rather than waiting for a kick that won't come.
        if !queue
            .enable_notification(mem)
            .map_err(|e| broken(e.to_string()))?
        {
            return Ok(());
        }
    })();
    // Whatever was completed is announced, even if a later chain broke.
    let published = used
        .finish(queue, mem, interrupt, index as u16)
        .map_err(|e| broken(e.to_string()));
    result.and(published).map(|()| served)
}

/// The number of chains the driver has made available and the device has
/// not taken yet.
pub fn pending_chains(queue: &Queue, mem: &GuestMemoryMmap) -> u16 {
    queue
        .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
        .map(|idx| (idx - Wrapping(queue.next_avail())).0)
        .unwrap_or(0)
}
