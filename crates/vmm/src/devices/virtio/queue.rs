//! Descriptor chains off the rust-vmm split virtqueue, checked before any
//! device looks at them.
//!
//! `virtio_queue` walks descriptors with a loop guard, but it ends a walk
//! silently on a broken link (index out of range, bad indirect table, too
//! many hops). [`read_chain_into`] tells those apart from a proper end: a chain
//! is well formed only if its last descriptor has no NEXT flag. It also
//! checks the direction order (device-readable first), the number of
//! descriptors and that every buffer lies in guest memory, so devices get
//! plain lists of guest ranges they may touch.
//!
//! The layer below the rest of the ring code: [`super::avail::AvailRing`],
//! through which devices take chains, reads most of them from a mapping of
//! the rings and falls back to this walk for the others, reaching the same
//! verdicts; the serving loops are above both, in [`super::serve`].

use smallvec::SmallVec;
use virtio_queue::DescriptorChain;
use vm_memory::GuestAddress;

use super::guest::in_memory;
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
