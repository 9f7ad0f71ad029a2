//! A block-device driver without a guest: guest memory of its own, a
//! split queue in it, and requests written the way a guest kernel writes
//! them, served by the device's real handler. The device tests, the
//! benchmark (`examples/blk_bench.rs`) and the fuzz target drive the
//! device through this.
//!
//! Memory map: the queue at 0x1000, request headers at 0x10000 (16 bytes
//! per descriptor slot), status bytes at 0x20000, indirect tables at
//! 0x30000, and data from [`DATA_START`] on.

use std::sync::Arc;

use disk::BlockBackend;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::Blk;
use crate::devices::virtio::device::{DeviceBroken, QueueHandler, VirtioDevice};
use crate::devices::virtio::driver::{
    CountingInterrupt, Descriptor, DriverQueue, guest_memory, read_guest, write_guest,
};
use crate::memory::GuestMemoryMmap;

pub const QUEUE_BASE: u64 = 0x1000;
pub const HEADERS: u64 = 0x1_0000;
pub const STATUSES: u64 = 0x2_0000;
pub const INDIRECT_TABLES: u64 = 0x3_0000;
pub const DATA_START: u64 = 0x10_0000;
/// The path the device is named after (its GET_ID serial).
pub const SERIAL_SOURCE: &str = "/images/test-disk.img";
/// A status byte the device never writes, to see whether it wrote one.
pub const STATUS_UNTOUCHED: u8 = 0xaa;

/// The 16-byte request header.
pub fn header_bytes(kind: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    h
}

pub struct BlkDriver {
    pub mem: GuestMemoryMmap,
    pub queue: DriverQueue,
    pub device_queue: Queue,
    pub handler: Box<dyn QueueHandler>,
    pub interrupt: CountingInterrupt,
}

impl BlkDriver {
    /// A driver for a block device over `backend`, with `mem_size` bytes
    /// of guest memory, a queue of `queue_size`, and the driver accepting
    /// every feature the device offers.
    pub fn new(backend: Arc<dyn BlockBackend>, mem_size: u64, queue_size: u16) -> BlkDriver {
        let mem = guest_memory(mem_size);
        let mut blk = Blk::new(backend, SERIAL_SOURCE);
        let features = blk.features();
        let handler = blk.activate(features);
        let queue = DriverQueue::new(&mem, QUEUE_BASE, queue_size);
        let device_queue = queue.device_queue(false);
        BlkDriver {
            mem,
            queue,
            device_queue,
            handler,
            interrupt: CountingInterrupt::default(),
        }
    }

    /// Uses event-idx notification suppression from now on.
    pub fn with_event_idx(mut self) -> BlkDriver {
        self.device_queue = self.queue.device_queue(true);
        self
    }

    /// Where the header of a request in descriptor slot `slot` goes.
    pub fn header_addr(slot: u16) -> u64 {
        HEADERS + 16 * u64::from(slot)
    }

    pub fn status_addr(slot: u16) -> u64 {
        STATUSES + u64::from(slot)
    }

    /// Writes a header for `slot` and returns its descriptor.
    pub fn header(&self, slot: u16, kind: u32, sector: u64) -> Descriptor {
        let at = Self::header_addr(slot);
        self.mem
            .write_slice(&header_bytes(kind, sector), GuestAddress(at))
            .expect("header in memory");
        Descriptor::readable(at, 16)
    }

    /// A status descriptor for `slot`, pre-filled with
    /// [`STATUS_UNTOUCHED`].
    pub fn status(&self, slot: u16) -> Descriptor {
        let at = Self::status_addr(slot);
        self.mem
            .write_obj(STATUS_UNTOUCHED, GuestAddress(at))
            .expect("status in memory");
        Descriptor::writable(at, 1)
    }

    pub fn read_status(&self, slot: u16) -> u8 {
        self.mem
            .read_obj(GuestAddress(Self::status_addr(slot)))
            .expect("status in memory")
    }

    /// Header, `data` and status of a request whose chain starts at
    /// descriptor slot `slot`.
    fn request_chain(
        &self,
        slot: u16,
        kind: u32,
        sector: u64,
        data: &[Descriptor],
    ) -> Vec<Descriptor> {
        let mut chain = vec![self.header(slot, kind, sector)];
        chain.extend_from_slice(data);
        chain.push(self.status(slot));
        chain
    }

    /// Makes a request of `kind` at `sector` with `data` descriptors
    /// between header and status available; returns its head slot.
    pub fn submit(&mut self, kind: u32, sector: u64, data: &[Descriptor]) -> u16 {
        let chain = self.request_chain(self.next_slot(), kind, sector, data);
        self.queue.add_chain(&chain)
    }

    /// The same request through an indirect table.
    pub fn submit_indirect(&mut self, kind: u32, sector: u64, data: &[Descriptor]) -> u16 {
        let slot = self.next_slot();
        let chain = self.request_chain(slot, kind, sector, data);
        let table = INDIRECT_TABLES + 0x1000 * u64::from(slot % 16);
        let head = self.queue.write_indirect_chain(table, &chain);
        self.queue.make_available(head);
        head
    }

    /// The descriptor slot the next chain starts at.
    pub fn next_slot(&self) -> u16 {
        // Chains are written to consecutive slots; the header and status
        // areas are indexed by the head's slot.
        self.queue.next_free()
    }

    /// Lets the device serve what is available.
    pub fn process(&mut self) -> Result<bool, DeviceBroken> {
        self.handler.process_queue(
            0,
            &mut self.device_queue,
            &self.mem,
            &self.interrupt,
            usize::MAX,
        )
    }

    /// Serves everything and returns the completions (head, length).
    pub fn run(&mut self) -> Result<Vec<(u32, u32)>, DeviceBroken> {
        self.process()?;
        Ok(self.queue.take_used())
    }

    pub fn write_data(&self, addr: u64, data: &[u8]) {
        write_guest(&self.mem, addr, data);
    }

    pub fn read_data(&self, addr: u64, len: usize) -> Vec<u8> {
        read_guest(&self.mem, addr, len)
    }
}
