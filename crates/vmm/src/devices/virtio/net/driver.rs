//! A network driver without a guest: guest memory of its own, a receive
//! and a transmit queue in it, buffers posted and frames sent the way a
//! guest kernel does, served by the device's real handler. The device
//! tests, the benchmark (`examples/net_bench.rs`) and the fuzz target
//! drive the device through this.
//!
//! Memory map: the receive queue at 0x1000, the transmit queue at
//! 0x20000, receive buffers from [`RX_BUFFERS`] and transmit buffers after
//! them ([`tx_buffers`]), one [`SLOT`] per descriptor.

use std::collections::HashMap;
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::device::{Net, NetConfig};
use super::frame::{HEADER_LEN, Header};
use super::state::NetStats;
use super::{RX, TX};
use crate::devices::virtio::device::{DeviceBroken, QueueHandler, VirtioDevice};
use crate::devices::virtio::driver::{CountingInterrupt, Descriptor, DriverQueue};
use crate::memory::GuestMemoryMmap;

pub const RX_QUEUE: u64 = 0x1000;
pub const TX_QUEUE: u64 = 0x2_0000;
/// Room per buffer: a 64 KiB frame and its header.
pub const SLOT: u64 = 0x1_1000;
pub const RX_BUFFERS: u64 = 0x10_0000;

/// Transmit buffers follow the receive buffers of queues of `size`.
pub fn tx_buffers(size: u16) -> u64 {
    RX_BUFFERS + SLOT * u64::from(size)
}

/// Guest memory the driver needs for queues of `size` entries.
pub fn memory_size(size: u16) -> u64 {
    tx_buffers(size) + SLOT * u64::from(size)
}

/// A frame the guest received, reassembled from its buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub header: Header,
    pub frame: Vec<u8>,
    /// Buffers it spanned.
    pub buffers: usize,
}

pub struct NetDriver {
    pub mem: GuestMemoryMmap,
    pub rx: DriverQueue,
    pub tx: DriverQueue,
    pub rx_queue: Queue,
    pub tx_queue: Queue,
    pub handler: Box<dyn QueueHandler>,
    pub interrupt: CountingInterrupt,
    pub stats: Arc<NetStats>,
    /// Where each posted receive buffer is, by head.
    rx_posted: HashMap<u16, (u64, u32)>,
    tx_base: u64,
}

impl NetDriver {
    /// A driver for `config`'s NIC accepting `features` (which must be
    /// offered), with queues of `size` entries.
    pub fn new(config: NetConfig, features: u64, size: u16) -> NetDriver {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), memory_size(size) as usize)])
            .expect("guest memory");
        let mut net = Net::new(config);
        assert_eq!(
            features & !net.features(),
            0,
            "features the device does not offer"
        );
        let stats = net.stats();
        let mut handler = net.activate(features);
        // What the device's I/O thread does when it is handed the handler.
        handler.start();
        let rx = DriverQueue::new(&mem, RX_QUEUE, size);
        let tx = DriverQueue::new(&mem, TX_QUEUE, size);
        let event_idx =
            features & (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX) != 0;
        NetDriver {
            rx_queue: rx.device_queue(event_idx),
            tx_queue: tx.device_queue(event_idx),
            mem,
            rx,
            tx,
            handler,
            interrupt: CountingInterrupt::default(),
            stats,
            rx_posted: HashMap::new(),
            tx_base: tx_buffers(size),
        }
    }

    fn rx_slot_addr(&self, head: u16) -> u64 {
        RX_BUFFERS + SLOT * u64::from(head % self.rx.size())
    }

    /// Posts `count` receive buffers of `len` bytes each (one descriptor
    /// each).
    pub fn post_rx(&mut self, count: usize, len: u32) {
        assert!(u64::from(len) <= SLOT);
        for _ in 0..count {
            let head = self.rx.next_free();
            let addr = self.rx_slot_addr(head);
            self.rx.add_chain(&[Descriptor::writable(addr, len)]);
            self.rx_posted.insert(head, (addr, len));
        }
    }

    /// Puts `header` and `frame` in one transmit buffer and offers it, as
    /// a modern Linux driver does (the header in the frame's headroom, one
    /// descriptor).
    pub fn transmit(&mut self, header: &Header, frame: &[u8]) -> u16 {
        let head = self.tx.next_free();
        let addr = self.tx_base + SLOT * u64::from(head % self.tx.size());
        let mut bytes = header.to_bytes().to_vec();
        bytes.extend_from_slice(frame);
        self.mem
            .write_slice(&bytes, GuestAddress(addr))
            .expect("transmit buffer");
        self.tx
            .add_chain(&[Descriptor::readable(addr, bytes.len() as u32)])
    }

    /// Lets the device serve the transmit queue, then the receive queue
    /// if that gave it work, as its I/O thread would.
    pub fn process_tx(&mut self) -> Result<bool, DeviceBroken> {
        let more = self.handler.process_queue(
            TX,
            &mut self.tx_queue,
            &self.mem,
            &self.interrupt,
            usize::MAX,
        )?;
        if self.handler.take_woken() & (1 << RX) != 0 {
            self.process_rx()?;
        }
        Ok(more)
    }

    /// Lets the device fill receive buffers.
    pub fn process_rx(&mut self) -> Result<bool, DeviceBroken> {
        self.handler.process_queue(
            RX,
            &mut self.rx_queue,
            &self.mem,
            &self.interrupt,
            usize::MAX,
        )
    }

    /// Transmit completions (heads).
    pub fn tx_done(&mut self) -> Vec<u32> {
        std::iter::from_fn(|| self.tx.pop_used().map(|(head, _)| head)).collect()
    }

    /// The frames the device put in receive buffers, in order.
    pub fn received(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        while let Some((head, len)) = self.rx.pop_used() {
            let mut bytes = self.read_rx_buffer(head as u16, len);
            let header = Header::parse(bytes[..HEADER_LEN].try_into().expect("header"));
            let buffers = usize::from(header.num_buffers.max(1));
            for _ in 1..buffers {
                let Some((head, len)) = self.rx.pop_used() else {
                    break;
                };
                bytes.extend(self.read_rx_buffer(head as u16, len));
            }
            out.push(Received {
                header,
                frame: bytes[HEADER_LEN..].to_vec(),
                buffers,
            });
        }
        out
    }

    fn read_rx_buffer(&mut self, head: u16, len: u32) -> Vec<u8> {
        let (addr, size) = self.rx_posted.remove(&head).expect("a posted buffer");
        assert!(
            len <= size,
            "device wrote {len} bytes into a {size}-byte buffer"
        );
        let mut bytes = vec![0u8; len as usize];
        self.mem
            .read_slice(&mut bytes, GuestAddress(addr))
            .expect("receive buffer");
        bytes
    }
}
