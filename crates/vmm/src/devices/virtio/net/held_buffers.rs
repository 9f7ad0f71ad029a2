//! Receive buffers the receive path took off the queue ahead of need and
//! keeps between frames and passes, so that a pass does not walk the same
//! descriptors again for every frame. They lie in guest memory, which
//! they keep mapped for as long as they are held.

use std::collections::VecDeque;

use vm_memory::GuestMemoryBackend;

use crate::devices::virtio::avail::WritableChain;
use crate::memory::GuestMemoryMmap;

/// Receive buffers taken off the queue and not yet used, in order: their
/// chains' heads, lengths and host views, found once when they are taken.
/// The views outlive the pass that found them, so the buffers keep the
/// guest memory they lie in mapped.
#[derive(Default)]
pub(super) struct HeldBuffers {
    /// A clone of the memory the buffers were taken from: its regions are
    /// unmapped only when the last clone goes.
    mem: Option<GuestMemoryMmap>,
    /// `'static` here since they outlive the pass; lent out only for
    /// borrows of `self`, during which `mem` keeps them mapped.
    buffers: VecDeque<WritableChain<'static>>,
    /// Bytes they hold.
    bytes: usize,
}

impl HeldBuffers {
    pub(super) fn len(&self) -> usize {
        self.buffers.len()
    }

    /// Bytes they hold.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }

    pub(super) fn front(&self) -> Option<&WritableChain<'_>> {
        self.buffers.front()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &WritableChain<'_>> {
        self.buffers.iter()
    }

    /// Holds `buffer`, which the walk found in `mem`.
    pub(super) fn hold<'m>(&mut self, mem: &'m GuestMemoryMmap, buffer: WritableChain<'m>) {
        if !self.mem.as_ref().is_some_and(|kept| same_memory(kept, mem)) {
            if !self.buffers.is_empty() {
                // The worker serves a handler with one memory for its
                // life; buffers of another cannot be given back.
                tracing::warn!("receive buffers of other guest memory dropped");
                self.buffers.clear();
                self.bytes = 0;
            }
            self.mem = Some(mem.clone());
        }
        self.bytes += buffer.len as usize;
        // SAFETY: `self.mem` shares `mem`'s regions, so the views stay
        // mapped while `self` keeps it; it is replaced only once no buffer
        // is held (above), and the buffers are lent out only for borrows
        // of `self`.
        self.buffers.push_back(unsafe { buffer.extend_lifetime() });
    }

    /// The first buffer's head and length, given up.
    pub(super) fn pop_front(&mut self) -> Option<(u16, u32)> {
        let buffer = self.buffers.pop_front()?;
        self.bytes -= buffer.len as usize;
        Some((buffer.head, buffer.len))
    }
}

/// Whether two guest memories are clones of one: the same regions.
fn same_memory(a: &GuestMemoryMmap, b: &GuestMemoryMmap) -> bool {
    a.num_regions() == b.num_regions() && a.iter().zip(b.iter()).all(|(x, y)| std::ptr::eq(x, y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::guest::HostViews;
    use vm_memory::{Bytes, GuestAddress};

    fn buffer<'m>(mem: &'m GuestMemoryMmap, head: u16, addr: u64, len: u32) -> WritableChain<'m> {
        let mut views = HostViews::new();
        assert!(views.add_range(mem, GuestAddress(addr), len as usize));
        WritableChain {
            head,
            len,
            mixed: false,
            views,
        }
    }

    #[test]
    fn held_buffers_keep_their_memory_mapped() {
        let mut held = HeldBuffers::default();
        let reader = {
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
            mem.write_slice(b"held", GuestAddress(0x1000)).unwrap();
            held.hold(&mem, buffer(&mem, 3, 0x1000, 64));
            held.hold(&mem, buffer(&mem, 4, 0x2000, 32));
            mem.clone()
        };
        // Only the buffers' own clone keeps the memory now.
        drop(reader);
        assert_eq!((held.len(), held.bytes), (2, 96));
        let first = held.front().unwrap();
        assert_eq!(first.views.read_array::<4>(0), Some(*b"held"));
        assert_eq!(held.pop_front(), Some((3, 64)));
        assert_eq!((held.len(), held.bytes), (1, 32));

        // Buffers of other memory cannot be given back; they are dropped
        // rather than kept without their mapping.
        let other = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        held.hold(&other, buffer(&other, 9, 0x3000, 16));
        assert_eq!((held.len(), held.bytes), (1, 16));
        assert_eq!(held.pop_front(), Some((9, 16)));
    }
}
