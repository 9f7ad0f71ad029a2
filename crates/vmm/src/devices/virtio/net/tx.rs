//! Transmit: each buffer the guest offers goes to the tap with one
//! `writev` straight from guest memory, header included, unless
//! [`super::frame`] says it must not (a malformed or spoofed frame) or it
//! is a DHCP request the device answers itself. A pass serves at most
//! `budget` frames and interrupts the guest once.

use std::os::fd::AsRawFd;

use virtio_queue::{Queue, QueueT};

use super::TX;
use super::frame::{self, HEADER_LEN, Header, PEEK_LEN, TxVerdict};
use super::state::{NetIo, NetStats, Tally};
use crate::devices::virtio::avail::{AvailRing, ReadableChain};
use crate::devices::virtio::device::{DeviceBroken, Interrupt};
use crate::devices::virtio::guest::HostViews;
use crate::devices::virtio::used::UsedBatch;
use crate::memory::GuestMemoryMmap;

/// Descriptors accepted in one transmit chain: a 64 KiB frame in pages,
/// its header, and room for drivers that split more finely.
pub const MAX_DESCRIPTORS: usize = 64;

/// What became of one chain.
enum Sent {
    Done,
    /// The tap has no room now: the chain goes back to the queue.
    Blocked,
}

/// Chains taken off the queue at once, so the available ring is walked
/// once per batch rather than once per frame.
const BATCH: usize = 64;

pub fn process(
    h: &mut NetIo,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &dyn Interrupt,
    budget: usize,
) -> Result<bool, DeviceBroken> {
    let broken = |what: String| DeviceBroken(format!("transmit queue: {what}"));
    let mut served = 0usize;
    let mut sent = Tally::default();
    // Out of the handler for the pass, so that `send` may have the
    // handler while a chain of the batch is borrowed; its views are this
    // pass's, found in `mem`.
    let mut batch: Vec<ReadableChain<'_>> = std::mem::take(&mut h.tx_batch);
    let mut used = UsedBatch::new(queue);
    let mut ring = AvailRing::new(queue, mem);
    let result = (|| loop {
        queue
            .disable_notification(mem)
            .map_err(|e| broken(e.to_string()))?;
        loop {
            if served >= budget {
                return Ok(true);
            }
            // The chains are read into the batch's slots in place.
            let mut taken = 0usize;
            while taken < BATCH.min(budget - served) {
                if batch.len() == taken {
                    batch.push(ReadableChain::default());
                }
                if !ring
                    .take_views(queue, MAX_DESCRIPTORS, &mut batch[taken])
                    .map_err(|e| broken(e.to_string()))?
                {
                    break;
                }
                taken += 1;
            }
            if taken == 0 {
                break;
            }
            for (i, chain) in batch[..taken].iter().enumerate() {
                match send(h, chain, &mut sent) {
                    Sent::Done => {
                        used.add(chain.head, 0);
                        served += 1;
                    }
                    Sent::Blocked => {
                        // This chain and the ones after it go back.
                        let back = (taken - i) as u16;
                        queue.set_next_avail(queue.next_avail().wrapping_sub(back));
                        // The tap's writability (an edge in the I/O
                        // thread's epoll) brings us back.
                        return Ok(false);
                    }
                }
            }
            used.publish(queue, mem)
                .map_err(|e| broken(e.to_string()))?;
        }
        if !queue
            .enable_notification(mem)
            .map_err(|e| broken(e.to_string()))?
        {
            return Ok(false);
        }
    })();
    h.tx_batch = recycle(batch);
    sent.add_to(&h.stats.tx_frames, &h.stats.tx_bytes);
    // What a batch cut short (the tap full, the budget spent) completed.
    let published = used
        .finish(queue, mem, interrupt, TX as u16)
        .map_err(|e| broken(e.to_string()));
    result.and_then(|more| published.map(|()| more))
}

/// The batch emptied, its storage kept for the next pass: no views
/// outlive the pass that found them.
fn recycle<'a>(mut batch: Vec<ReadableChain<'_>>) -> Vec<ReadableChain<'a>> {
    batch.clear();
    // Collecting into a vector of a type of the same layout reuses the
    // allocation.
    batch
        .into_iter()
        .map(|_| unreachable!("the batch is empty"))
        .collect()
}

/// One frame: inspected, then sent, answered or dropped. Buffers the
/// device could write into mean nothing on this queue and are left alone.
fn send(h: &mut NetIo, chain: &ReadableChain, sent: &mut Tally) -> Sent {
    let total = chain.len as usize;
    let views = &chain.views;
    let Some(header) = views.read_array::<HEADER_LEN>(0) else {
        drop_frame(h, frame::Refused::Runt);
        return Sent::Done;
    };
    let header = Header::parse(&header);
    let frame_len = total - HEADER_LEN;
    let mut peek = [0u8; PEEK_LEN];
    let mut whole = Vec::new();
    let mut seen: &[u8] = &[];
    if frame::looks_inside(&h.tx_policy) {
        let n = frame_len.min(PEEK_LEN);
        views.read_at(HEADER_LEN, &mut peek[..n]);
        seen = &peek[..n];
        if frame::wants_whole_frame(&h.tx_policy, frame_len, seen) {
            whole.resize(frame_len, 0);
            views.read_at(HEADER_LEN, &mut whole);
            seen = &whole;
        }
    }
    match frame::inspect_tx(&header, frame_len, seen, &h.tx_policy) {
        TxVerdict::Send => write_to_tap(h, views, frame_len, sent),
        TxVerdict::Reply(reply) => {
            h.push_reply(reply);
            Sent::Done
        }
        TxVerdict::Drop(why) => {
            drop_frame(h, why);
            Sent::Done
        }
    }
}

fn drop_frame(h: &mut NetIo, why: frame::Refused) {
    NetStats::add(&h.stats.tx_dropped, 1);
    if why == frame::Refused::Locked {
        // vmd's words for a spoofed source (docs/machine.md, "The network device").
        h.dropped("transmitted", "bad source address");
    } else {
        h.dropped("transmitted", why);
    }
}

fn write_to_tap(h: &mut NetIo, views: &HostViews<'_>, frame_len: usize, sent: &mut Tally) -> Sent {
    let iovecs = views.iovecs();
    let count = iovecs.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
    // SAFETY: `iovecs` holds `count` iovecs or more, each a range of guest
    // memory mapped for as long as `views` lives (the walk found them);
    // the kernel only reads from them.
    let written = unsafe { libc::writev(h.tap.as_raw_fd(), iovecs.as_ptr(), count) };
    if written < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            return Sent::Blocked;
        }
        // The tap refused the frame (a header the kernel finds wrong, the
        // link down): the frame is lost, the device carries on.
        NetStats::add(&h.stats.tx_dropped, 1);
        h.dropped("transmitted", err);
        return Sent::Done;
    }
    sent.count(frame_len);
    Sent::Done
}
