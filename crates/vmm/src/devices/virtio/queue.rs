//! Descriptor chains off the rust-vmm split virtqueue, checked before any
//! device looks at them.
//!
//! `virtio_queue` walks descriptors with a loop guard, but it ends a walk
//! silently on a broken link (index out of range, bad indirect table, too
//! many hops). [`read_chain_into`] tells those apart from a proper end: a chain
//! is well formed only if its last descriptor has no NEXT flag. It also
//! checks the direction order (device-readable first), the number of
//! descriptors and that every buffer lies in guest memory, so devices get
//! plain lists of guest ranges they may touch. Devices take chains through
//! [`super::avail::AvailRing`], which reads most of them from a mapping of
//! the rings and reaches the same verdicts.

use std::num::Wrapping;

use smallvec::SmallVec;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestAddress;

use super::avail::AvailRing;
use super::guest::in_memory;
use super::used::UsedBatch;
use super::{DeviceBroken, Interrupt};
use crate::memory::GuestMemoryMmap;

/// One buffer of a chain: a range of guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// The buffers of one direction of a chain. Requests rarely have more
/// than a few, so they live inline: no allocation per request.
pub type Segments = SmallVec<[Segment; 4]>;

/// A well-formed descriptor chain: device-readable buffers, then
/// device-writable ones, all inside guest memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub readable: Segments,
    pub writable: Segments,
}

impl Chain {
    pub fn readable_len(&self) -> u64 {
        total_len(&self.readable)
    }

    pub fn writable_len(&self) -> u64 {
        total_len(&self.writable)
    }
}

pub fn total_len(segments: &[Segment]) -> u64 {
    segments.iter().map(|s| u64::from(s.len)).sum()
}

/// Why a chain is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// The walk stopped on a descriptor that still points further: a loop,
    /// a next index outside the table, an unreadable descriptor or a bad
    /// indirect table.
    Broken,
    /// More descriptors than the device accepts in one chain.
    TooLong,
    /// A device-readable buffer after a device-writable one.
    Misordered,
    /// A buffer that is not entirely guest memory.
    OutsideMemory { addr: u64, len: u32 },
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::Broken => f.write_str("broken descriptor chain (loop or bad link)"),
            ChainError::TooLong => f.write_str("descriptor chain too long"),
            ChainError::Misordered => f.write_str("readable descriptor after a writable one"),
            ChainError::OutsideMemory { addr, len } => {
                write!(f, "buffer {addr:#x}+{len:#x} outside guest memory")
            }
        }
    }
}

/// Walks `chain` and checks it (see the module comment) into `out`, whose
/// storage is reused. At most `max_descriptors` descriptors are read, so
/// a hostile table costs bounded work. After an error `out` holds part of
/// the chain and means nothing.
pub fn read_chain_into(
    chain: DescriptorChain<&GuestMemoryMmap>,
    max_descriptors: usize,
    out: &mut Chain,
) -> Result<(), ChainError> {
    out.head = chain.head_index();
    out.readable.clear();
    out.writable.clear();
    let mem = chain.memory();
    let mut count = 0usize;
    let mut ended = false;
    for desc in chain.clone() {
        count += 1;
        if count > max_descriptors {
            return Err(ChainError::TooLong);
        }
        let segment = Segment {
            addr: desc.addr(),
            len: desc.len(),
        };
        if !in_memory(mem, segment.addr, segment.len as usize) {
            return Err(ChainError::OutsideMemory {
                addr: segment.addr.0,
                len: segment.len,
            });
        }
        if desc.is_write_only() {
            out.writable.push(segment);
        } else if !out.writable.is_empty() {
            return Err(ChainError::Misordered);
        } else {
            out.readable.push(segment);
        }
        ended = !desc.has_next();
    }
    if !ended {
        return Err(ChainError::Broken);
    }
    Ok(())
}

/// Requests a pass completes before it makes them visible to the driver,
/// which may take them while the pass goes on.
const PUBLISH_EVERY: usize = 16;

/// What [`serve_requests`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Served {
    pub chains: usize,
    /// The budget ran out with chains still available.
    pub more: bool,
}

/// The loop of every request/response device (block, SCSI, entropy):
/// takes the available chains, checks each, lets `serve` answer it (it
/// returns the number of bytes it wrote into the chain), puts it on the
/// used ring and interrupts the driver as event-idx or the ring flags
/// ask. Stops after `budget` chains. A malformed chain, an impossible
/// available index or a ring outside memory mean the device needs a reset.
pub fn serve_requests(
    index: usize,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &dyn Interrupt,
    max_descriptors: usize,
    budget: usize,
    serve: impl FnMut(&Chain) -> Result<u32, DeviceBroken>,
) -> Result<Served, DeviceBroken> {
    serve_requests_while(
        index,
        queue,
        mem,
        interrupt,
        (max_descriptors, budget),
        || true,
        serve,
    )
}

/// [`serve_requests`] for a device that rations its work: before each
/// chain it asks `may_take`, and leaves the chains where they are once
/// that says no (`more` then tells whether any are waiting). `limits`
/// are the descriptors per chain and the budget of chains.
pub fn serve_requests_while(
    index: usize,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &dyn Interrupt,
    (max_descriptors, budget): (usize, usize),
    mut may_take: impl FnMut() -> bool,
    mut serve: impl FnMut(&Chain) -> Result<u32, DeviceBroken>,
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
            if !may_take() {
                if pending_chains(queue, mem) > 0 {
                    served.more = true;
                    return Ok(());
                }
                // Nothing waits: notifications go back on as for an
                // empty ring, or the next chain would never be noticed.
                break;
            }
            if !ring
                .take(queue, max_descriptors, &mut chain)
                .map_err(|e| broken(e.to_string()))?
            {
                break;
            }
            let written = serve(&chain)?;
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
/// not taken yet (for tests and the benchmark).
pub fn pending_chains(queue: &Queue, mem: &GuestMemoryMmap) -> u16 {
    queue
        .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
        .map(|idx| (idx - Wrapping(queue.next_avail())).0)
        .unwrap_or(0)
}
