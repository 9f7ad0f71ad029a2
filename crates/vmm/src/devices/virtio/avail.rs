//! Taking chains off the available ring, for devices that take many small
//! chains per pass (virtio-net). `Queue::iter` reads each ring entry and
//! then each descriptor through guest-memory lookups of their own; here
//! the available ring and the descriptor table are mapped once per pass
//! and chains are read from those mappings, checked as
//! [`read_chain_into`] checks a chain the crate walked, with the same
//! outcome for every table a driver can write (the tests compare the two).
//!
//! A chain that uses an indirect table, and a queue whose rings do not
//! each lie in one mapping, are read the crate's way.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, VolatileSlice};

use super::guest::{GuestSlice, HostViews, RegionCache};
use super::queue::{Chain, ChainError, Segment, read_chain_into};
use crate::memory::GuestMemoryMmap;

/// Bytes of one descriptor: address, length, flags, next.
const DESCRIPTOR: usize = 16;
/// Bytes before the available ring's entries: flags and index.
const AVAIL_HEADER: usize = 4;

/// Why no chain could be taken: the device needs a reset.
#[derive(Debug)]
pub enum TakeError {
    /// The queue is not set up, or the driver's index is impossible.
    Queue(virtio_queue::Error),
    /// The chain is malformed.
    Chain(ChainError),
}

impl std::fmt::Display for TakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TakeError::Queue(e) => write!(f, "{e}"),
            TakeError::Chain(e) => write!(f, "{e}"),
        }
    }
}

/// A queue's available ring and descriptor table, mapped for one pass.
pub struct AvailRing<'m> {
    /// Guest memory, and where the buffers are in it.
    regions: RegionCache<'m>,
    /// Both mappings, or None when either ring is not in one mapping.
    maps: Option<(VolatileSlice<'m, ()>, VolatileSlice<'m, ()>)>,
    /// The driver's available index as last read.
    avail_idx: Wrapping<u16>,
    /// A chain the crate walked, before it goes where it was asked for.
    walked: Chain,
}

/// A chain as a device that uses one direction of it takes it: the
/// buffers of that direction (device-writable ones when `DEVICE_WRITES`,
/// device-readable ones otherwise), their total length and their host
/// views, and whether it had buffers of the other direction too.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChainViews<'m, const DEVICE_WRITES: bool> {
    pub head: u16,
    /// Bytes of its buffers of this direction.
    pub len: u32,
    /// It also had buffers of the other direction.
    pub mixed: bool,
    /// Host views of the buffers of this direction, in order.
    pub views: HostViews<'m>,
}

/// A receive buffer: what the device writes into.
pub type WritableChain<'m> = ChainViews<'m, true>;
/// A frame to send: what the device reads.
pub type ReadableChain<'m> = ChainViews<'m, false>;

impl<'m, const DEVICE_WRITES: bool> ChainViews<'m, DEVICE_WRITES> {
    /// A buffer of this direction, `host` its mapping when it lies in
    /// one region; false when it is not all guest memory.
    fn add(
        &mut self,
        mem: &'m GuestMemoryMmap,
        segment: Segment,
        host: Option<GuestSlice<'m>>,
    ) -> bool {
        // The walk keeps the chain's total below 4 GiB.
        self.len += segment.len;
        match host {
            Some(host) => {
                self.views.push(host);
                true
            }
            None => self
                .views
                .add_range(mem, segment.addr, segment.len as usize),
        }
    }

    /// The same chain, its views promised to stay mapped for `'n`: see
    /// [`HostViews::extend_lifetime`].
    ///
    /// # Safety
    ///
    /// As for [`HostViews::extend_lifetime`].
    pub unsafe fn extend_lifetime<'n>(self) -> ChainViews<'n, DEVICE_WRITES> {
        ChainViews {
            head: self.head,
            len: self.len,
            mixed: self.mixed,
            // SAFETY: the caller keeps the same contract.
            views: unsafe { self.views.extend_lifetime() },
        }
    }
}

/// Where a walk of a chain puts the buffers it finds, in chain order,
/// device-readable ones first.
trait Found<'m> {
    fn start(&mut self, head: u16);
    /// A device-readable buffer; `host` is where it is in this process
    /// when it lies inside one region. False when it is not all guest
    /// memory.
    fn readable(
        &mut self,
        mem: &'m GuestMemoryMmap,
        segment: Segment,
        host: Option<GuestSlice<'m>>,
    ) -> bool;
    /// A device-writable buffer, as [`Found::readable`].
    fn writable(
        &mut self,
        mem: &'m GuestMemoryMmap,
        segment: Segment,
        host: Option<GuestSlice<'m>>,
    ) -> bool;
    /// Replaces what was found with a chain the crate walked.
    fn replay(&mut self, mem: &'m GuestMemoryMmap, chain: &Chain) -> Result<(), ChainError>;
}

impl<'m> Found<'m> for Chain {
    fn start(&mut self, head: u16) {
        self.head = head;
        self.readable.clear();
        self.writable.clear();
    }

    fn readable(
        &mut self,
        _: &GuestMemoryMmap,
        segment: Segment,
        _: Option<GuestSlice<'_>>,
    ) -> bool {
        self.readable.push(segment);
        true
    }

    fn writable(
        &mut self,
        _: &GuestMemoryMmap,
        segment: Segment,
        _: Option<GuestSlice<'_>>,
    ) -> bool {
        self.writable.push(segment);
        true
    }

    fn replay(&mut self, _: &GuestMemoryMmap, chain: &Chain) -> Result<(), ChainError> {
        self.clone_from(chain);
        Ok(())
    }
}

impl<'m, const DEVICE_WRITES: bool> Found<'m> for ChainViews<'m, DEVICE_WRITES> {
    fn start(&mut self, head: u16) {
        self.head = head;
        self.len = 0;
        self.mixed = false;
        self.views.clear();
    }

    fn readable(
        &mut self,
        mem: &'m GuestMemoryMmap,
        segment: Segment,
        host: Option<GuestSlice<'m>>,
    ) -> bool {
        if DEVICE_WRITES {
            self.mixed = true;
            return true;
        }
        self.add(mem, segment, host)
    }

    fn writable(
        &mut self,
        mem: &'m GuestMemoryMmap,
        segment: Segment,
        host: Option<GuestSlice<'m>>,
    ) -> bool {
        if !DEVICE_WRITES {
            self.mixed = true;
            return true;
        }
        self.add(mem, segment, host)
    }

    fn replay(&mut self, mem: &'m GuestMemoryMmap, chain: &Chain) -> Result<(), ChainError> {
        self.start(chain.head);
        let (this, other) = if DEVICE_WRITES {
            (&chain.writable, &chain.readable)
        } else {
            (&chain.readable, &chain.writable)
        };
        self.mixed = !other.is_empty();
        for &segment in this {
            // Every buffer was found in guest memory by the walk.
            if !self.add(mem, segment, None) {
                return Err(ChainError::OutsideMemory {
                    addr: segment.addr.0,
                    len: segment.len,
                });
            }
        }
        Ok(())
    }
}

impl<'m> AvailRing<'m> {
    pub fn new(queue: &Queue, mem: &'m GuestMemoryMmap) -> AvailRing<'m> {
        let size = usize::from(queue.size());
        let maps = if queue.ready() && queue.avail_ring() != 0 {
            let desc = mem.get_slice(GuestAddress(queue.desc_table()), DESCRIPTOR * size);
            let avail = mem.get_slice(GuestAddress(queue.avail_ring()), AVAIL_HEADER + 2 * size);
            desc.ok().zip(avail.ok())
        } else {
            None
        };
        AvailRing {
            regions: RegionCache::new(mem),
            maps,
            avail_idx: Wrapping(queue.next_avail()),
            walked: Chain::default(),
        }
    }

    /// Takes the next chain the driver offers into `out` (its storage
    /// reused); false when there is none. After an error `out` means
    /// nothing.
    pub fn take(
        &mut self,
        queue: &mut Queue,
        max_descriptors: usize,
        out: &mut Chain,
    ) -> Result<bool, TakeError> {
        self.take_into(queue, max_descriptors, out)
    }

    /// [`AvailRing::take`] for a device that uses one direction of a
    /// chain: the length and host views of its buffers of that
    /// direction, found with the same region lookups that checked them,
    /// and whether it had buffers of the other direction too.
    pub fn take_views<const DEVICE_WRITES: bool>(
        &mut self,
        queue: &mut Queue,
        max_descriptors: usize,
        out: &mut ChainViews<'m, DEVICE_WRITES>,
    ) -> Result<bool, TakeError> {
        self.take_into(queue, max_descriptors, out)
    }

    fn take_into(
        &mut self,
        queue: &mut Queue,
        max_descriptors: usize,
        out: &mut impl Found<'m>,
    ) -> Result<bool, TakeError> {
        let Some((desc, avail)) = &self.maps else {
            return self.take_by_crate(queue, max_descriptors, out);
        };
        let next = Wrapping(queue.next_avail());
        if next == self.avail_idx {
            let idx: u16 = avail
                .load(2, Ordering::Acquire)
                .map_err(|_| TakeError::Queue(virtio_queue::Error::QueueNotReady))?;
            self.avail_idx = Wrapping(u16::from_le(idx));
            if (self.avail_idx - next).0 > queue.size() {
                return Err(TakeError::Queue(virtio_queue::Error::InvalidAvailRingIndex));
            }
            if next == self.avail_idx {
                return Ok(false);
            }
        }
        // The size is a power of two (the crate refuses any other).
        let slot = usize::from(next.0 & (queue.size() - 1));
        // SAFETY: `avail` maps the ring's `AVAIL_HEADER + 2 * size` bytes
        // of guest memory, which stay mapped while `mem` lives, and
        // `slot < size`. A driver writing the entry meanwhile makes at
        // worst a wrong head, checked like any other.
        let head = u16::from_le_bytes(unsafe {
            avail
                .ptr_guard()
                .as_ptr()
                .wrapping_add(AVAIL_HEADER + 2 * slot)
                .cast::<[u8; 2]>()
                .read_volatile()
        });
        let walk = Walk {
            size: queue.size(),
            max_descriptors,
        };
        match walk.read(&mut self.regions, desc, head, out) {
            Walked::Done(result) => {
                queue.set_next_avail((next + Wrapping(1)).0);
                result.map(|()| true).map_err(TakeError::Chain)
            }
            Walked::Indirect => self.take_by_crate(queue, max_descriptors, out),
        }
    }

    /// The crate's walk of the next chain, for what the mappings do not
    /// cover.
    fn take_by_crate(
        &mut self,
        queue: &mut Queue,
        max_descriptors: usize,
        out: &mut impl Found<'m>,
    ) -> Result<bool, TakeError> {
        let mem = self.regions.memory();
        let mut iter = queue.iter(mem).map_err(TakeError::Queue)?;
        let Some(chain) = iter.next() else {
            return Ok(false);
        };
        read_chain_into(chain, max_descriptors, &mut self.walked).map_err(TakeError::Chain)?;
        out.replay(mem, &self.walked)
            .map(|()| true)
            .map_err(TakeError::Chain)
    }
}

/// How a walk of the table ended.
enum Walked {
    Done(Result<(), ChainError>),
    /// The chain uses an indirect table: nothing was decided.
    Indirect,
}

/// The crate's `DescriptorChain` rules for a walk: at most `size`
/// descriptors, and as many as the device takes.
struct Walk {
    size: u16,
    max_descriptors: usize,
}

impl Walk {
    /// Walks the chain at `head` in the mapped table, as the crate's
    /// `DescriptorChain` walks it (at most `size` descriptors, a total length
    /// below 4 GiB, no index beyond the table), checks it as
    /// [`read_chain_into`] does and puts its buffers in `out`.
    fn read<'m>(
        &self,
        regions: &mut RegionCache<'m>,
        table: &VolatileSlice<'_, ()>,
        head: u16,
        out: &mut impl Found<'m>,
    ) -> Walked {
        let (size, max_descriptors) = (self.size, self.max_descriptors);
        out.start(head);
        let mem = regions.memory();
        let mut any_writable = false;
        let mut index = head;
        let mut total = 0u32;
        for count in 1..=usize::from(size) {
            if index >= size {
                break;
            }
            let at = usize::from(index) * DESCRIPTOR;
            // SAFETY: `table` maps `DESCRIPTOR * size` bytes of guest memory,
            // which stay mapped while `mem` lives, and `index < size`. A
            // driver writing the descriptor meanwhile makes at worst a wrong
            // descriptor, checked like any other.
            let raw = unsafe {
                table
                    .ptr_guard()
                    .as_ptr()
                    .wrapping_add(at)
                    .cast::<[u8; DESCRIPTOR]>()
                    .read_volatile()
            };
            let field = |at: usize, n: usize| {
                let mut bytes = [0u8; 8];
                bytes[..n].copy_from_slice(&raw[at..at + n]);
                u64::from_le_bytes(bytes)
            };
            let (addr, len) = (field(0, 8), field(8, 4) as u32);
            let (flags, next) = (field(12, 2) as u32, field(14, 2) as u16);
            if flags & VRING_DESC_F_INDIRECT != 0 {
                return Walked::Indirect;
            }
            let Some(sum) = total.checked_add(len) else {
                break;
            };
            total = sum;
            if count > max_descriptors {
                return Walked::Done(Err(ChainError::TooLong));
            }
            let segment = Segment {
                addr: GuestAddress(addr),
                len,
            };
            // As `in_memory`, keeping the mapping it finds.
            let host = regions.mapped(segment.addr, len as usize);
            let outside = Walked::Done(Err(ChainError::OutsideMemory { addr, len }));
            if host.is_none() && !GuestMemoryBackend::check_range(mem, segment.addr, len as usize) {
                return outside;
            }
            if flags & VRING_DESC_F_WRITE != 0 {
                any_writable = true;
                if !out.writable(mem, segment, host) {
                    return outside;
                }
            } else if any_writable {
                return Walked::Done(Err(ChainError::Misordered));
            } else if !out.readable(mem, segment, host) {
                return outside;
            }
            if flags & VRING_DESC_F_NEXT == 0 {
                return Walked::Done(Ok(()));
            }
            index = next;
        }
        Walked::Done(Err(ChainError::Broken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::driver::{
        Descriptor, DriverQueue, assert_walks_agree, guest_memory, guest_memory_split,
    };

    /// xorshift64: the same hostile tables on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const MEMORY: u64 = 1 << 20;

    /// A descriptor a driver, careful or hostile, might write.
    fn any_descriptor(rng: &mut Rng, size: u16) -> Descriptor {
        let addr = match rng.below(8) {
            0 => MEMORY - rng.below(64),
            1 => u64::MAX - rng.below(16),
            _ => rng.below(MEMORY),
        };
        let len = match rng.below(8) {
            0 => u32::MAX - rng.below(16) as u32,
            1 => 0,
            _ => rng.below(4096) as u32,
        };
        let mut flags = 0;
        for (bit, odds) in [
            (VRING_DESC_F_NEXT, 2),
            (VRING_DESC_F_WRITE, 3),
            (VRING_DESC_F_INDIRECT, 16),
        ] {
            if rng.below(odds) == 0 {
                flags |= bit as u16;
            }
        }
        let next = if rng.below(10) == 0 {
            rng.below(u64::from(u16::MAX)) as u16
        } else {
            rng.below(u64::from(size)) as u16
        };
        Descriptor {
            addr,
            len,
            flags,
            next,
        }
    }

    #[test]
    fn the_mapped_walk_agrees_with_the_crates_on_hostile_tables() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut chains = 0;
        for _ in 0..3000 {
            let mem = guest_memory(MEMORY);
            let size = 1u16 << rng.below(9);
            let mut driver = DriverQueue::new(&mem, 0x1000, size);
            for index in 0..size {
                driver.write_descriptor(index, any_descriptor(&mut rng, size));
            }
            // Some rounds also get well-formed chains, some indirect ones.
            if rng.below(2) == 0 {
                let descs = [
                    Descriptor::readable(0x8000, 12),
                    Descriptor::writable(0x9000, 100),
                ];
                let head = driver.write_chain(&descs);
                driver.make_available(head);
            }
            if rng.below(4) == 0 {
                let descs = [
                    Descriptor::readable(0x8000, 64),
                    Descriptor::readable(0xa000, 64),
                ];
                let head = driver.write_indirect_chain(0x20000, &descs);
                driver.make_available(head);
            }
            for _ in 0..rng.below(u64::from(size) + 1) {
                driver.make_available(rng.below(u64::from(size) + 2) as u16);
            }
            if rng.below(16) == 0 {
                // An index that claims more chains than the ring holds.
                driver.set_avail_idx(size + 1 + rng.below(100) as u16);
            }
            let max_descriptors = [1, 4, 64, 1000][rng.below(4) as usize];
            chains += assert_walks_agree(&mem, &driver, max_descriptors);
        }
        // The comparison saw many chains through, not only refusals.
        assert!(chains > 1000, "{chains} chains");
    }

    #[test]
    fn rings_across_two_regions_are_walked_the_crates_way() {
        let mem = guest_memory_split(0x1000, 0x1_1000);
        // The descriptor table of 16 entries ends 64 bytes into the
        // second region.
        let mut driver = DriverQueue::new(&mem, 0x1000 - 192, 16);
        let head = driver.add_chain(&[Descriptor::readable(0x2000, 60)]);
        let mut queue = driver.device_queue(false);
        let mut ring = AvailRing::new(&queue, &mem);
        assert!(ring.maps.is_none());
        let mut chain = Chain::default();
        assert!(ring.take(&mut queue, 4, &mut chain).unwrap());
        assert_eq!(chain.head, head);
        assert_eq!(chain.readable_len(), 60);
        assert!(!ring.take(&mut queue, 4, &mut chain).unwrap());
    }
}
