//! The driver's side of a split virtqueue, laid out in guest memory the
//! way a guest kernel would: for the device tests, the benchmark and the
//! fuzz target, which exercise devices without a guest.
//!
//! Descriptors are placed as the caller says, including broken ones, so
//! hostile drivers can be played as easily as correct ones.

use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::device::Interrupt;
use crate::memory::GuestMemoryMmap;

/// Guest memory of `size` bytes from address 0.
pub fn guest_memory(size: u64) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).expect("guest memory")
}

/// Guest memory of `size` bytes from address 0 in two regions that meet
/// at `split`: a ring may lie across them.
pub fn guest_memory_split(split: u64, size: u64) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), split as usize),
        (GuestAddress(split), (size - split) as usize),
    ])
    .expect("guest memory")
}

/// Copies `data` into guest memory at `addr`.
pub fn write_guest(mem: &GuestMemoryMmap, addr: u64, data: &[u8]) {
    mem.write_slice(data, GuestAddress(addr))
        .expect("data in guest memory");
}

/// `len` bytes of guest memory at `addr`.
pub fn read_guest(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr))
        .expect("data in guest memory");
    buf
}

/// A read-only raw image holding `bytes`, in memory (a memfd), as the
/// disk crate opens it for a VM.
pub fn memory_image(bytes: &[u8]) -> Arc<dyn disk::BlockBackend> {
    use std::io::Write;
    // SAFETY: a NUL-terminated name and flags; the descriptor is ours.
    let fd = unsafe { libc::memfd_create(c"image".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor owned by nobody else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(bytes).expect("fill image");
    Arc::from(disk::ImageChain::raw_read_only("memory.img", file).expect("raw image over a memfd"))
}

/// Counts the interrupts a device raises.
#[derive(Debug, Default)]
pub struct CountingInterrupt {
    pub queue: AtomicUsize,
    pub config: AtomicUsize,
}

impl Interrupt for CountingInterrupt {
    fn signal_queue(&self, _queue: u16) {
        self.queue.fetch_add(1, Ordering::SeqCst);
    }

    fn signal_config(&self) {
        self.config.fetch_add(1, Ordering::SeqCst);
    }
}

/// One descriptor as the driver writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl Descriptor {
    /// A buffer the device reads.
    pub fn readable(addr: u64, len: u32) -> Descriptor {
        Descriptor {
            addr,
            len,
            flags: 0,
            next: 0,
        }
    }

    /// A buffer the device writes.
    pub fn writable(addr: u64, len: u32) -> Descriptor {
        Descriptor {
            addr,
            len,
            flags: VRING_DESC_F_WRITE as u16,
            next: 0,
        }
    }

    fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// Bytes a split queue of `size` entries takes with this layout.
pub fn queue_footprint(size: u16) -> u64 {
    let n = u64::from(size);
    let used = (16 * n + 6 + 2 * n).next_multiple_of(4);
    used + 6 + 8 * n
}

/// A split virtqueue driven from the driver's side.
pub struct DriverQueue {
    mem: GuestMemoryMmap,
    size: u16,
    desc_table: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl DriverQueue {
    /// A queue of `size` entries (a power of two) at `base` (16-aligned).
    pub fn new(mem: &GuestMemoryMmap, base: u64, size: u16) -> DriverQueue {
        let n = u64::from(size);
        let avail = base + 16 * n;
        let used = (avail + 6 + 2 * n).next_multiple_of(4);
        let q = DriverQueue {
            mem: mem.clone(),
            size,
            desc_table: base,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        };
        let zeroes = vec![0u8; queue_footprint(size) as usize];
        mem.write_slice(&zeroes, GuestAddress(base))
            .expect("queue inside guest memory");
        q
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// The table slot the next written chain starts at.
    pub fn next_free(&self) -> u16 {
        self.next_desc
    }

    pub fn desc_table(&self) -> u64 {
        self.desc_table
    }

    pub fn avail_ring(&self) -> u64 {
        self.avail
    }

    pub fn used_ring(&self) -> u64 {
        self.used
    }

    /// The device's view of this queue, set up and ready, as the
    /// transport builds it at DRIVER_OK.
    pub fn device_queue(&self, event_idx: bool) -> Queue {
        let mut q = Queue::new(self.size).expect("power-of-two size");
        q.set_desc_table_address(
            Some(self.desc_table as u32),
            Some((self.desc_table >> 32) as u32),
        );
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_event_idx(event_idx);
        q.set_ready(true);
        q
    }

    /// Writes descriptor `index` of the table as given.
    pub fn write_descriptor(&self, index: u16, desc: Descriptor) {
        let at = self.desc_table + 16 * u64::from(index % self.size);
        self.mem
            .write_slice(&desc.bytes(), GuestAddress(at))
            .expect("descriptor table in memory");
    }

    /// Writes `descs` as a linked chain into free table slots and returns
    /// the head index (not yet made available).
    pub fn write_chain(&mut self, descs: &[Descriptor]) -> u16 {
        let head = self.next_desc;
        for (i, d) in descs.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let mut d = *d;
            if i + 1 < descs.len() {
                d.flags |= VRING_DESC_F_NEXT as u16;
                d.next = self.next_desc;
            }
            self.write_descriptor(index, d);
        }
        head
    }

    /// Writes `descs` as an indirect table at `table` and one descriptor
    /// pointing at it; returns that descriptor's index.
    pub fn write_indirect_chain(&mut self, table: u64, descs: &[Descriptor]) -> u16 {
        for (i, d) in descs.iter().enumerate() {
            let mut d = *d;
            if i + 1 < descs.len() {
                d.flags |= VRING_DESC_F_NEXT as u16;
                d.next = i as u16 + 1;
            }
            self.mem
                .write_slice(&d.bytes(), GuestAddress(table + 16 * i as u64))
                .expect("indirect table in memory");
        }
        self.write_chain(&[Descriptor {
            addr: table,
            len: 16 * descs.len() as u32,
            flags: VRING_DESC_F_INDIRECT as u16,
            next: 0,
        }])
    }

    /// Offers the chain starting at `head` to the device.
    pub fn make_available(&mut self, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(head, GuestAddress(slot))
            .expect("avail ring in memory");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .store(
                self.avail_idx,
                GuestAddress(self.avail + 2),
                Ordering::Release,
            )
            .expect("avail ring in memory");
    }

    /// Sets the available index to any value (hostile drivers).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.mem
            .store(idx, GuestAddress(self.avail + 2), Ordering::Release)
            .expect("avail ring in memory");
    }

    /// Writes a chain and makes it available; returns its head.
    pub fn add_chain(&mut self, descs: &[Descriptor]) -> u16 {
        let head = self.write_chain(descs);
        self.make_available(head);
        head
    }

    /// Asks for an interrupt only once the device used entry `idx`
    /// (event-idx's `used_event`).
    pub fn set_used_event(&self, idx: u16) {
        let at = self.avail + 4 + 2 * u64::from(self.size);
        self.mem
            .store(idx, GuestAddress(at), Ordering::Release)
            .expect("avail ring in memory");
    }

    /// Every completion the device put on the used ring since the last
    /// look: head index and bytes written.
    pub fn take_used(&mut self) -> Vec<(u32, u32)> {
        std::iter::from_fn(|| self.pop_used()).collect()
    }

    /// The next completion the device put on the used ring: head index
    /// and bytes written.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        let idx: u16 = self
            .mem
            .load(GuestAddress(self.used + 2), Ordering::Acquire)
            .ok()?;
        if idx == self.used_seen {
            return None;
        }
        let at = self.used + 4 + 8 * u64::from(self.used_seen % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).ok()?;
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).ok()?;
        self.used_seen = self.used_seen.wrapping_add(1);
        Some((id, len))
    }
}

/// Takes every chain `driver` offers, through device views of its queue,
/// each way: the crate's walk checked
/// by [`read_chain_into`](super::queue::read_chain_into), and
/// [`AvailRing`](super::avail::AvailRing), as a chain and as the views
/// of either direction of it. Panics where they differ in
/// a chain, its checks' verdict or the queue's position; returns the
/// chains taken. For the tests and the fuzz target of the fast walk.
pub fn assert_walks_agree(
    mem: &GuestMemoryMmap,
    driver: &DriverQueue,
    max_descriptors: usize,
) -> usize {
    use super::avail::{AvailRing, ChainViews, ReadableChain, TakeError, WritableChain};
    use super::queue::{Chain, read_chain_into};
    use virtio_queue::QueueOwnedT;

    let message = |e: TakeError| match e {
        TakeError::Queue(e) => e.to_string(),
        TakeError::Chain(e) => e.to_string(),
    };
    // What the views of one direction of the crate's chain should be.
    fn expected<'m, const DEVICE_WRITES: bool>(
        mem: &'m GuestMemoryMmap,
        walked: &Chain,
    ) -> ChainViews<'m, DEVICE_WRITES> {
        let (this, other) = if DEVICE_WRITES {
            (&walked.writable, &walked.readable)
        } else {
            (&walked.readable, &walked.writable)
        };
        let views = super::buffers::host_views(mem, this).expect("the walk checked the buffers");
        ChainViews {
            head: walked.head,
            len: super::queue::total_len(this) as u32,
            mixed: !other.is_empty(),
            views,
        }
    }
    let queue = || driver.device_queue(false);
    let (mut ours, mut receiving, mut sending, mut crates) = (queue(), queue(), queue(), queue());
    let mut ring = AvailRing::new(&ours, mem);
    let mut receive_ring = AvailRing::new(&receiving, mem);
    let mut send_ring = AvailRing::new(&sending, mem);
    let mut taken = 0;
    for _ in 0..=usize::from(ours.size()) {
        let mut fast = Chain::default();
        let fast_result = ring
            .take(&mut ours, max_descriptors, &mut fast)
            .map_err(message);
        let mut writable = WritableChain::default();
        let writable_result = receive_ring
            .take_views(&mut receiving, max_descriptors, &mut writable)
            .map_err(message);
        let mut readable = ReadableChain::default();
        let readable_result = send_ring
            .take_views(&mut sending, max_descriptors, &mut readable)
            .map_err(message);
        let mut walked = Chain::default();
        let crate_result = match crates.iter(mem) {
            Err(e) => Err(e.to_string()),
            Ok(mut iter) => match iter.next() {
                None => Ok(false),
                Some(chain) => read_chain_into(chain, max_descriptors, &mut walked)
                    .map(|()| true)
                    .map_err(|e| e.to_string()),
            },
        };
        assert_eq!(fast_result, crate_result, "chain {taken}");
        assert_eq!(writable_result, crate_result, "chain {taken}, writable");
        assert_eq!(readable_result, crate_result, "chain {taken}, readable");
        for position in [&ours, &receiving, &sending] {
            assert_eq!(position.next_avail(), crates.next_avail(), "chain {taken}");
        }
        match fast_result {
            Ok(true) => {
                assert_eq!(fast, walked, "chain {taken}");
                assert_eq!(writable, expected(mem, &walked), "writable chain {taken}");
                assert_eq!(readable, expected(mem, &walked), "readable chain {taken}");
                taken += 1;
            }
            _ => break,
        }
    }
    taken
}
