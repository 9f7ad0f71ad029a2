//! Transmit: each buffer the guest offers goes to the tap with one
//! `writev` straight from guest memory, header included, unless
//! [`super::frame`] says it must not (a malformed or spoofed frame) or it
//! is a DHCP request the device answers itself. A pass serves at most
//! `budget` frames and interrupts the guest once.

use std::os::fd::AsRawFd;

use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::TX;
use super::frame::{self, HEADER_LEN, Header, PEEK_LEN, TxVerdict};
use super::handler::{NetHandler, NetStats};
use crate::devices::virtio::queue::{Chain, read_chain};
use crate::devices::virtio::segments::{host_slices, read_stream, sub_segments};
use crate::devices::virtio::{DeviceBroken, Interrupt};
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

pub fn process(
    h: &mut NetHandler,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &dyn Interrupt,
    budget: usize,
) -> Result<bool, DeviceBroken> {
    let broken = |what: String| DeviceBroken(format!("transmit queue: {what}"));
    let mut served = 0usize;
    let result = (|| loop {
        queue
            .disable_notification(mem)
            .map_err(|e| broken(e.to_string()))?;
        loop {
            if served >= budget {
                return Ok(true);
            }
            let chain = {
                let mut iter = queue.iter(mem).map_err(|e| broken(e.to_string()))?;
                match iter.next() {
                    Some(chain) => chain,
                    None => break,
                }
            };
            let chain = read_chain(chain, MAX_DESCRIPTORS).map_err(|e| broken(e.to_string()))?;
            match send(h, mem, &chain) {
                Sent::Done => {
                    queue
                        .add_used(mem, chain.head, 0)
                        .map_err(|e| broken(e.to_string()))?;
                    served += 1;
                }
                Sent::Blocked => {
                    queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                    h.tx_blocked = true;
                    return Ok(false);
                }
            }
        }
        if !queue
            .enable_notification(mem)
            .map_err(|e| broken(e.to_string()))?
        {
            return Ok(false);
        }
    })();
    if served > 0 && queue.needs_notification(mem).unwrap_or(true) {
        interrupt.signal_queue(TX as u16);
    }
    result
}

/// One frame: inspected, then sent, answered or dropped.
fn send(h: &mut NetHandler, mem: &GuestMemoryMmap, chain: &Chain) -> Sent {
    let total = chain.readable_len() as usize;
    let mut header = [0u8; HEADER_LEN];
    if total < HEADER_LEN || !read_stream(mem, &chain.readable, &mut header) {
        drop_frame(h, frame::Refused::Runt);
        return Sent::Done;
    }
    let header = Header::parse(&header);
    let frame_len = total - HEADER_LEN;
    let body = sub_segments(&chain.readable, HEADER_LEN as u64, u64::MAX);
    let mut start = vec![0u8; frame_len.min(PEEK_LEN)];
    if !read_stream(mem, &body, &mut start) {
        drop_frame(h, frame::Refused::Runt);
        return Sent::Done;
    }
    if frame::wants_whole_frame(&h.tx_policy, frame_len, &start) {
        start.resize(frame_len, 0);
        if !read_stream(mem, &body, &mut start) {
            drop_frame(h, frame::Refused::Runt);
            return Sent::Done;
        }
    }
    match frame::inspect_tx(&header, frame_len, &start, &h.tx_policy) {
        TxVerdict::Send => write_to_tap(h, mem, chain, frame_len),
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

fn drop_frame(h: &mut NetHandler, why: frame::Refused) {
    NetStats::add(&h.stats.tx_dropped, 1);
    h.dropped("transmitted", why);
}

fn write_to_tap(
    h: &mut NetHandler,
    mem: &GuestMemoryMmap,
    chain: &Chain,
    frame_len: usize,
) -> Sent {
    let Some(slices) = host_slices(mem, &chain.readable) else {
        drop_frame(h, frame::Refused::Runt);
        return Sent::Done;
    };
    h.iovecs.clear();
    h.iovecs
        .extend(slices.iter().map(|&(ptr, len)| libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        }));
    let count = h.iovecs.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
    // SAFETY: every iovec is a range of guest memory that stays mapped
    // while `mem` lives; the kernel only reads from them.
    let written = unsafe { libc::writev(h.tap.as_raw_fd(), h.iovecs.as_ptr(), count) };
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
    NetStats::add(&h.stats.tx_frames, 1);
    NetStats::add(&h.stats.tx_bytes, frame_len as u64);
    Sent::Done
}
