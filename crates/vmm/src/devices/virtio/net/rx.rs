//! Receive: frames from the tap are read with one `readv` straight into
//! the guest's receive buffers, and the device's own frames (DHCP
//! replies) are copied in. With mergeable receive buffers a frame spans as
//! many buffers as it needs; without, each frame takes one buffer, which
//! the driver sizes for the largest frame it accepts.
//!
//! Buffers are taken off the queue ahead of need and kept between frames,
//! so a pass does not walk the same descriptors again for every frame. A
//! frame that does not fit, or that [`super::frame`] refuses, leaves its
//! buffers for the next one.

use std::os::fd::AsRawFd;

use smallvec::SmallVec;
use virtio_queue::{Queue, QueueT};

use super::RX;
use super::frame::{self, HEADER_LEN, Header, MAX_FRAME, MIN_FRAME};
use super::handler::{NetHandler, NetStats, Tally};
use crate::devices::virtio::avail::AvailRing;
use crate::devices::virtio::buffers::{HostSlices, copy_to_slices, read_array, write_array};
use crate::devices::virtio::queue::Chain;
use crate::devices::virtio::used::UsedBatch;
use crate::devices::virtio::{DeviceBroken, Interrupt};
use crate::memory::GuestMemoryMmap;

/// Frames a pass puts on the used ring before it makes them visible to
/// the driver, which may take them while the pass goes on.
const PUBLISH_EVERY: usize = 32;

/// Descriptors accepted in one receive chain.
pub const MAX_DESCRIPTORS: usize = 64;
/// Room a frame may need without segmentation offloads: a full frame at
/// a tap's default MTU, VLAN tag included. Taps with a larger MTU need
/// mergeable buffers or big ones; a frame that does not fit is dropped.
const PLAIN_ROOM: usize = HEADER_LEN + 1518;
/// Room a frame may need with them: a 64 KiB super-frame.
pub const GSO_ROOM: usize = HEADER_LEN + MAX_FRAME;

/// A receive buffer taken off the queue and not yet used: its chain's
/// head, its length, and its host views, taken once when it is taken
/// (guest memory stays mapped, unchanged, for the VM's life).
pub(super) struct HeldBuffer {
    head: u16,
    len: u32,
    slices: HostSlices,
}

/// Where the next frame comes from.
enum Next {
    /// A frame is in the buffers: `len` bytes including the header.
    Placed(usize),
    /// It could not be placed (too big, refused); its buffers stay.
    Dropped,
    /// Nothing more to receive now.
    Idle,
}

pub fn process(
    h: &mut NetHandler,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &dyn Interrupt,
    budget: usize,
) -> Result<bool, DeviceBroken> {
    let mut delivered = Tally::default();
    // Host views of the held buffers, rebuilt for every frame in the
    // same storage.
    let mut slices = HostSlices::new();
    let mut used = UsedBatch::new(queue);
    let mut ring = AvailRing::new(queue, mem);
    let result = (|| {
        queue
            .disable_notification(mem)
            .map_err(|e| broken(e.to_string()))?;
        loop {
            if delivered.frames() >= budget {
                return Ok(true);
            }
            if !take_buffers(h, queue, &mut ring)? {
                // Out of buffers: ask the driver to say when it adds some,
                // and look once more in case it just did.
                let more = queue
                    .enable_notification(mem)
                    .map_err(|e| broken(e.to_string()))?;
                if !more || !take_buffers(h, queue, &mut ring)? {
                    return Ok(false);
                }
            }
            held_slices(h, &mut slices);
            let next = match h.replies.pop_front() {
                Some(reply) => place_copy(h, &slices, &reply),
                None => read_tap(h, &slices),
            };
            match next {
                Next::Placed(len) => {
                    if complete(h, &mut used, &slices, len)? {
                        delivered.count(len - HEADER_LEN);
                    }
                    if delivered.frames() % PUBLISH_EVERY == 0 {
                        used.publish(queue, mem)
                            .map_err(|e| broken(e.to_string()))?;
                    }
                }
                Next::Dropped => {}
                Next::Idle => return Ok(false),
            }
        }
    })();
    delivered.add_to(&h.stats.rx_frames, &h.stats.rx_bytes);
    let published = used
        .finish(queue, mem, interrupt, RX as u16)
        .map_err(|e| broken(e.to_string()));
    result.and_then(|more| published.map(|()| more))
}

fn broken(what: String) -> DeviceBroken {
    DeviceBroken(format!("receive queue: {what}"))
}

/// Bytes the held buffers must offer before a frame is read.
fn room_needed(h: &NetHandler) -> usize {
    if h.guest_offloads.tso4 || h.guest_offloads.tso6 {
        GSO_ROOM
    } else {
        PLAIN_ROOM
    }
}

/// Takes buffers off the queue until a frame of any size fits (one buffer
/// without mergeable buffers). Returns whether the held buffers are enough
/// to read into: with mergeable buffers that is room for the largest
/// frame, or every buffer the queue can hold if the driver posts less.
fn take_buffers(
    h: &mut NetHandler,
    queue: &mut Queue,
    ring: &mut AvailRing<'_>,
) -> Result<bool, DeviceBroken> {
    let want = room_needed(h);
    let all = usize::from(queue.size());
    let enough = |h: &NetHandler| {
        if h.mergeable {
            h.rx_held >= want || h.rx_buffers.len() >= all
        } else {
            !h.rx_buffers.is_empty()
        }
    };
    let mut chain = Chain::default();
    while !enough(h) {
        let mut slices = HostSlices::new();
        if !ring
            .take_with_views(queue, MAX_DESCRIPTORS, &mut chain, &mut slices)
            .map_err(|e| broken(e.to_string()))?
        {
            break;
        }
        let len = chain.writable_len() as usize;
        if !chain.readable.is_empty() || len == 0 {
            return Err(broken(format!(
                "buffer {} is not a writable buffer",
                chain.head
            )));
        }
        h.rx_buffers.push_back(HeldBuffer {
            head: chain.head,
            len: len as u32,
            slices,
        });
        h.rx_held += len;
    }
    Ok(enough(h))
}

/// Host views of the held buffers as one stream, into `out`: all of
/// them with mergeable buffers, else the first.
fn held_slices(h: &NetHandler, out: &mut HostSlices) {
    out.clear();
    let take = if h.mergeable { h.rx_buffers.len() } else { 1 };
    for held in h.rx_buffers.iter().take(take) {
        out.extend_from_slice(&held.slices);
    }
}

/// One read from the tap into the held buffers.
fn read_tap(h: &mut NetHandler, slices: &HostSlices) -> Next {
    h.iovecs.clear();
    h.iovecs
        .extend(slices.iter().map(|&(ptr, len)| libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        }));
    h.iovecs.truncate(libc::UIO_MAXIOV as usize - 1);
    let room: usize = h.iovecs.iter().map(|v| v.iov_len).sum();
    // A frame larger than the buffers runs on into this spill area (the
    // tap would cut it short without saying so) and is then dropped.
    if h.spill.len() != GSO_ROOM {
        h.spill.resize(GSO_ROOM, 0);
    }
    h.iovecs.push(libc::iovec {
        iov_base: h.spill.as_mut_ptr().cast(),
        iov_len: h.spill.len(),
    });
    // SAFETY: every iovec but the last is a range of guest memory that
    // stays mapped while `mem` lives, the last is `h.spill`; the kernel
    // writes the frame into them.
    let read = unsafe {
        libc::readv(
            h.tap.as_raw_fd(),
            h.iovecs.as_ptr(),
            h.iovecs.len() as libc::c_int,
        )
    };
    if read < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::WouldBlock {
            h.dropped("received", err);
        }
        return Next::Idle;
    }
    if read == 0 {
        return Next::Idle;
    }
    let len = read as usize;
    if len > room || len < HEADER_LEN + MIN_FRAME {
        NetStats::add(&h.stats.rx_dropped, 1);
        h.dropped(
            "received",
            format!("{len} bytes for {room} bytes of buffers"),
        );
        return Next::Dropped;
    }
    Next::Placed(len)
}

/// Copies a frame the device made into the held buffers, behind a plain
/// header.
fn place_copy(h: &mut NetHandler, slices: &HostSlices, frame: &[u8]) -> Next {
    let header = Header::default().to_bytes();
    if !copy_to_slices(slices, 0, &header) || !copy_to_slices(slices, HEADER_LEN, frame) {
        NetStats::add(&h.stats.rx_dropped, 1);
        h.dropped("device-made", "larger than the receive buffers");
        return Next::Dropped;
    }
    Next::Placed(HEADER_LEN + frame.len())
}

/// Checks the placed frame, fixes its header and hands its buffers to the
/// guest. Returns whether it was delivered.
fn complete(
    h: &mut NetHandler,
    used: &mut UsedBatch,
    slices: &HostSlices,
    len: usize,
) -> Result<bool, DeviceBroken> {
    let Some(raw) = read_array::<{ HEADER_LEN + MIN_FRAME }>(slices, 0) else {
        return Ok(false);
    };
    let header = Header::parse(raw[..HEADER_LEN].try_into().expect("header length"));
    let mut header = match frame::inspect_rx(
        &header,
        &raw[HEADER_LEN..],
        &h.guest_offloads,
        h.lock.as_ref(),
    ) {
        Ok(header) => header,
        Err(why) => {
            NetStats::add(&h.stats.rx_dropped, 1);
            h.dropped("received", why);
            return Ok(false);
        }
    };
    // The buffers the frame filled, in order, with what each holds.
    let mut filled: SmallVec<[(u16, u32); 32]> = SmallVec::new();
    let mut left = len;
    for held in &h.rx_buffers {
        if left == 0 {
            break;
        }
        let written = left.min(held.len as usize);
        left -= written;
        filled.push((held.head, written as u32));
    }
    header.num_buffers = filled.len() as u16;
    if !write_array(slices, 0, &header.to_bytes()) {
        return Ok(false);
    }
    for (held, &(head, written)) in h.rx_buffers.drain(..filled.len()).zip(&filled) {
        h.rx_held -= held.len as usize;
        used.add(head, written);
    }
    Ok(true)
}
