//! The used ring, a batch at a time, for devices that complete many small
//! chains per pass (virtio-net). `Queue::add_used` writes each element and
//! then the ring's index through guest-memory lookups of their own; here
//! the elements of a batch go into the ring through one mapping of it, and
//! the index is published once per batch.
//!
//! Whether the driver wants an interrupt for what a pass published is
//! decided as `Queue::needs_notification` decides it (virtio 1.2
//! §2.7.10: with event index, only when the pass crossed `used_event`),
//! counting from where the pass began, since `add_used`'s own count is
//! not kept on this path.

use std::num::Wrapping;
use std::sync::atomic::{Ordering, fence};

use smallvec::SmallVec;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::device::Interrupt;
use crate::memory::GuestMemoryMmap;

/// Bytes before the used ring's elements: flags and index.
const USED_HEADER: u64 = 4;
/// One used element: the chain's head (u32) and the bytes written (u32).
const USED_ELEMENT: u64 = 8;
/// Bytes before the available ring's entries; `used_event` follows them.
const AVAIL_HEADER: u64 = 4;

/// Why completed chains cannot go on the used ring: the device needs a
/// reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsedError {
    /// A head the driver never offered (beyond the ring).
    BadHead(u16),
    /// The used ring is not in guest memory.
    RingOutsideMemory,
}

impl std::fmt::Display for UsedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsedError::BadHead(head) => write!(f, "used descriptor {head} out of range"),
            UsedError::RingOutsideMemory => f.write_str("used ring outside guest memory"),
        }
    }
}

/// Completed chains of one pass over a queue.
pub struct UsedBatch {
    /// The ring's index when the pass began.
    first: Wrapping<u16>,
    /// Completed and not yet on the ring: (head, bytes written).
    pending: SmallVec<[(u16, u32); 64]>,
}

impl UsedBatch {
    pub fn new(queue: &Queue) -> UsedBatch {
        UsedBatch {
            first: Wrapping(queue.next_used()),
            pending: SmallVec::new(),
        }
    }

    /// A chain is done; `written` bytes of it were written.
    pub fn add(&mut self, head: u16, written: u32) {
        self.pending.push((head, written));
    }

    /// Puts the pending chains on the used ring, then makes them visible
    /// to the driver with one store of the ring's index.
    pub fn publish(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<(), UsedError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let size = queue.size();
        if let Some(&(head, _)) = self.pending.iter().find(|&&(head, _)| head >= size) {
            return Err(UsedError::BadHead(head));
        }
        let ring = GuestAddress(queue.used_ring());
        let ring_len = USED_HEADER + USED_ELEMENT * u64::from(size);
        let first = Wrapping(queue.next_used());
        let offset = |i: usize| {
            USED_HEADER + USED_ELEMENT * u64::from((first + Wrapping(i as u16)).0 % size)
        };
        let next = first + Wrapping(self.pending.len() as u16);
        let stored = match mem.get_slice(ring, ring_len as usize) {
            // The ring in one mapping (always, but for a ring across two
            // adjacent regions).
            Ok(slice) => {
                let ring = slice.ptr_guard_mut().as_ptr();
                let mut slot = usize::from(first.0 % size);
                for &(head, written) in &self.pending {
                    let mut element = [0u8; USED_ELEMENT as usize];
                    element[..4].copy_from_slice(&u32::from(head).to_le_bytes());
                    element[4..].copy_from_slice(&written.to_le_bytes());
                    // SAFETY: `slice` maps the whole ring, `ring_len`
                    // bytes of guest memory that stay mapped while `mem`
                    // lives, and `slot < size`; the driver only reads
                    // these elements.
                    unsafe {
                        ring.wrapping_add(USED_HEADER as usize + USED_ELEMENT as usize * slot)
                            .cast::<[u8; USED_ELEMENT as usize]>()
                            .write_volatile(element)
                    };
                    slot += 1;
                    if slot == usize::from(size) {
                        slot = 0;
                    }
                }
                // The elements before the index: a driver that sees the
                // index sees them.
                slice.store(next.0.to_le(), 2, Ordering::Release).is_ok()
            }
            Err(_) => self
                .pending
                .iter()
                .enumerate()
                .try_for_each(|(i, &(head, written))| {
                    let at = ring.unchecked_add(offset(i));
                    mem.write_obj(u32::from(head).to_le(), at)
                        .and_then(|()| mem.write_obj(written.to_le(), at.unchecked_add(4)))
                })
                .and_then(|()| mem.store(next.0.to_le(), ring.unchecked_add(2), Ordering::Release))
                .is_ok(),
        };
        if !stored {
            return Err(UsedError::RingOutsideMemory);
        }
        queue.set_next_used(next.0);
        self.pending.clear();
        Ok(())
    }

    /// Ends a pass over queue `index`: publishes what is pending and
    /// interrupts the driver if it asked to hear of what the pass
    /// completed. The interrupt goes out even when the publishing failed,
    /// for what earlier batches published.
    pub fn finish(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        interrupt: &dyn Interrupt,
        index: u16,
    ) -> Result<(), UsedError> {
        let published = self.publish(queue, mem);
        if self.needs_interrupt(queue, mem) {
            interrupt.signal_queue(index);
        }
        published
    }

    /// Whether the driver asked to be interrupted for the chains this
    /// pass published. When in doubt (its `used_event` unreadable), yes.
    pub fn needs_interrupt(&self, queue: &Queue, mem: &GuestMemoryMmap) -> bool {
        let new = Wrapping(queue.next_used());
        if new == self.first {
            return false;
        }
        if !queue.event_idx_enabled() {
            return true;
        }
        // The index store before the read of `used_event`: otherwise a
        // driver that just moved `used_event` and checked the ring could
        // be missed by both sides.
        fence(Ordering::SeqCst);
        let at = queue
            .avail_ring()
            .checked_add(AVAIL_HEADER + 2 * u64::from(queue.size()));
        let Some(used_event) = at.and_then(|at| {
            mem.load::<u16>(GuestAddress(at), Ordering::Relaxed)
                .ok()
                .map(u16::from_le)
        }) else {
            return true;
        };
        new - Wrapping(used_event) - Wrapping(1) < new - self.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::driver::{
        DriverQueue, guest_memory, guest_memory_split, read_guest,
    };

    const SIZE: u16 = 8;

    /// The used ring's bytes after `entries` went on it through `add_used`
    /// one by one, or through a batch; `start` entries were used before.
    fn used_ring_after(batched: bool, start: u16, entries: &[(u16, u32)]) -> Vec<u8> {
        let mem = guest_memory(1 << 16);
        let driver = DriverQueue::new(&mem, 0x1000, SIZE);
        let mut queue = driver.device_queue(false);
        queue.set_next_used(start);
        if batched {
            let mut batch = UsedBatch::new(&queue);
            for &(head, len) in entries {
                batch.add(head, len);
            }
            batch.publish(&mut queue, &mem).unwrap();
        } else {
            for &(head, len) in entries {
                queue.add_used(&mem, head, len).unwrap();
            }
        }
        let len = (USED_HEADER + USED_ELEMENT * u64::from(SIZE)) as usize;
        read_guest(&mem, driver.used_ring(), len)
    }

    #[test]
    fn a_batch_leaves_the_ring_as_add_used_would_across_its_end() {
        let entries = [(3, 60), (5, 0), (7, 1514), (0, 9), (2, 4096)];
        // From entry 6 of 8 the batch wraps around the ring's end.
        for start in [0, 6, u16::MAX - 1] {
            assert_eq!(
                used_ring_after(true, start, &entries),
                used_ring_after(false, start, &entries),
                "starting at {start}"
            );
        }
    }

    #[test]
    fn a_head_beyond_the_ring_breaks_the_batch_and_publishes_nothing() {
        let mem = guest_memory(1 << 16);
        let driver = DriverQueue::new(&mem, 0x1000, SIZE);
        let mut queue = driver.device_queue(false);
        let mut batch = UsedBatch::new(&queue);
        batch.add(1, 0);
        batch.add(SIZE, 0);
        assert_eq!(
            batch.publish(&mut queue, &mem),
            Err(UsedError::BadHead(SIZE))
        );
        assert_eq!(queue.next_used(), 0);
        assert_eq!(read_guest(&mem, driver.used_ring() + 2, 2), [0, 0]);
    }

    #[test]
    fn a_ring_across_two_regions_is_written_piece_by_piece() {
        let mem = guest_memory_split(0x1000, 0x2000);
        // The used ring of this queue starts 24 bytes before the regions
        // meet.
        let base = 0x1000 - 16 * u64::from(SIZE) - 2 * u64::from(SIZE) - 6 - 24;
        let driver = DriverQueue::new(&mem, base, SIZE);
        assert!(driver.used_ring() < 0x1000 && driver.used_ring() + 68 > 0x1000);
        let mut queue = driver.device_queue(false);
        let mut batch = UsedBatch::new(&queue);
        for head in 0..SIZE {
            batch.add(head, u32::from(head) * 10);
        }
        batch.publish(&mut queue, &mem).unwrap();
        let mut driver = driver;
        let used = driver.take_used();
        assert_eq!(used.len(), usize::from(SIZE));
        assert_eq!(used[7], (7, 70));
    }

    #[test]
    fn interrupts_follow_the_drivers_used_event() {
        let mem = guest_memory(1 << 16);
        let driver = DriverQueue::new(&mem, 0x1000, SIZE);
        let mut queue = driver.device_queue(true);
        let pass = |queue: &mut Queue, count: u16| {
            let mut batch = UsedBatch::new(queue);
            for head in 0..count {
                batch.add(head, 0);
            }
            batch.publish(queue, &mem).unwrap();
            batch.needs_interrupt(queue, &mem)
        };
        // The driver wants to hear once entry 2 is used: entries 0-1 do
        // not cross it, 2-4 do, 5 does not any more.
        driver.set_used_event(2);
        assert!(!pass(&mut queue, 2));
        assert!(pass(&mut queue, 3));
        assert!(!pass(&mut queue, 1));
        // Nothing used, nothing to say.
        driver.set_used_event(6);
        assert!(!pass(&mut queue, 0));
        // Without event index every pass that used something interrupts.
        let mut plain = driver.device_queue(false);
        assert!(pass(&mut plain, 1));
        assert!(!pass(&mut plain, 0));
    }
}
