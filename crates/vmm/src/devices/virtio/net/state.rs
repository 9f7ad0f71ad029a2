//! What the network device's receive and transmit paths share on its I/O
//! thread ([`NetIo`]): the tap, what the driver accepted, the counters
//! ([`NetStats`]), and what the paths keep between passes.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use guestnet::mac_lock::MacLock;

use super::RX;
use super::frame::{Offloads, TxPolicy};
use super::held_buffers::HeldBuffers;
use crate::devices::virtio::avail::ReadableChain;

/// Responder replies waiting for receive buffers; more than this and a
/// guest that sends requests without posting buffers loses the oldest.
pub const MAX_PENDING_REPLIES: usize = 32;

/// What the device counted, for logs, tests and the benchmark.
#[derive(Debug, Default)]
pub struct NetStats {
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_dropped: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_dropped: AtomicU64,
    /// DHCP/BOOTP requests answered by the responder.
    pub dhcp_replies: AtomicU64,
}

impl NetStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Frames and bytes a pass moved, counted locally and added to the
/// shared counters once at its end: two atomic read-modify-writes per
/// frame are a measurable part of a small frame's cost.
#[derive(Debug, Default)]
pub(super) struct Tally {
    frames: u64,
    bytes: u64,
}

impl Tally {
    pub(super) fn count(&mut self, bytes: usize) {
        self.frames += 1;
        self.bytes += bytes as u64;
    }

    pub(super) fn frames(&self) -> usize {
        self.frames as usize
    }

    pub(super) fn add_to(&self, frames: &AtomicU64, bytes: &AtomicU64) {
        if self.frames > 0 {
            NetStats::add(frames, self.frames);
            NetStats::add(bytes, self.bytes);
        }
    }
}

/// Everything the two queues' paths share.
pub struct NetIo {
    pub name: String,
    pub tap: Arc<File>,
    /// VIRTIO_NET_F_MRG_RXBUF: a received frame may span several buffers.
    pub mergeable: bool,
    /// Offloads the guest takes in received frames.
    pub guest_offloads: Offloads,
    pub tx_policy: TxPolicy,
    pub lock: Option<MacLock>,
    pub stats: Arc<NetStats>,
    /// Receive buffers taken off the queue and not yet used.
    pub(super) rx_buffers: HeldBuffers,
    /// Storage for the transmit chains of a pass, kept empty between
    /// passes so it is reused from pass to pass.
    pub(super) tx_batch: Vec<ReadableChain<'static>>,
    /// Frames made by the device (DHCP replies) for the guest.
    pub(super) replies: VecDeque<Vec<u8>>,
    /// Queues to serve next (bit per queue).
    pub(super) woken: u64,
    /// Catches what does not fit in the receive buffers.
    pub(super) spill: Vec<u8>,
    /// Drops logged so far, so a hostile guest cannot flood the log.
    pub(super) drops_logged: u32,
}

impl NetIo {
    pub fn new(
        name: &str,
        tap: Arc<File>,
        mergeable: bool,
        guest_offloads: Offloads,
        tx_policy: TxPolicy,
        stats: Arc<NetStats>,
    ) -> NetIo {
        NetIo {
            name: name.to_string(),
            tap,
            mergeable,
            guest_offloads,
            lock: tx_policy.lock,
            tx_policy,
            stats,
            rx_buffers: HeldBuffers::default(),
            tx_batch: Vec::new(),
            replies: VecDeque::new(),
            woken: 0,
            spill: Vec::new(),
            drops_logged: 0,
        }
    }

    /// Notes a dropped frame; the first few are logged.
    pub(super) fn dropped(&mut self, direction: &str, why: impl std::fmt::Debug) {
        const LOGGED: u32 = 8;
        if self.drops_logged < LOGGED {
            self.drops_logged += 1;
            tracing::info!("{}: {direction} frame dropped: {why:?}", self.name);
        }
    }

    /// Queues a reply for the guest and asks for the receive queue.
    pub(super) fn push_reply(&mut self, reply: Vec<u8>) {
        if self.replies.len() >= MAX_PENDING_REPLIES {
            self.replies.pop_front();
            NetStats::add(&self.stats.rx_dropped, 1);
        }
        self.replies.push_back(reply);
        NetStats::add(&self.stats.dhcp_replies, 1);
        self.woken |= 1 << RX;
    }
}
