//! Receive: frames from the tap are read with one `readv` straight into
//! the guest's receive buffers, and the device's own frames (DHCP
//! replies) are copied in. With mergeable receive buffers a frame spans as
//! many buffers as it needs; without, each frame takes one buffer, which
//! the driver sizes for the largest frame it accepts.
//!
//! Buffers are taken off the queue ahead of need and kept between frames
//! (`held_buffers`), so a pass does not walk the same descriptors again
//! for every frame. A frame that does not fit, or that [`super::frame`]
//! refuses, leaves its buffers for the next one.

use std::os::fd::AsRawFd;

use smallvec::SmallVec;
use virtio_queue::{Queue, QueueT};

use super::RX;
use super::frame::{self, HEADER_LEN, Header, MAX_FRAME, MIN_FRAME};
use super::state::{NetIo, NetStats, Tally};
use crate::devices::virtio::avail::{AvailRing, WritableChain};
use crate::devices::virtio::device::{DeviceBroken, Interrupt};
use crate::devices::virtio::guest::HostViews;
use crate::devices::virtio::used::UsedBatch;
use crate::memory::GuestMemoryMmap;

/// Frames a pass puts on the used ring before it makes them visible to
/// the driver, which may take them while the pass goes on.
const PUBLISH_EVERY: usize = 32;

/// Buffers taken off the queue at a time when more are needed.
const TAKE_AHEAD: usize = 32;

/// Descriptors accepted in one receive chain.
pub const MAX_DESCRIPTORS: usize = 64;
/// Room a frame may need without segmentation offloads: a full frame at
/// a tap's default MTU, VLAN tag included. Taps with a larger MTU need
/// mergeable buffers or big ones; a frame that does not fit is dropped.
const PLAIN_ROOM: usize = HEADER_LEN + 1518;
/// Room a frame may need with them: a 64 KiB super-frame.
pub const GSO_ROOM: usize = HEADER_LEN + MAX_FRAME;

/// Iovecs of one read from the tap that fit on the stack: the views of a
/// 64 KiB frame's page-sized buffers and the spill area.
const READ_IOVECS: usize = 24;

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
    h: &mut NetIo,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &dyn Interrupt,
    budget: usize,
) -> Result<bool, DeviceBroken> {
    let mut delivered = Tally::default();
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
            if !take_buffers(h, queue, mem, &mut ring)? {
                // Out of buffers: ask the driver to say when it adds some,
                // and look once more in case it just did.
                let more = queue
                    .enable_notification(mem)
                    .map_err(|e| broken(e.to_string()))?;
                if !more || !take_buffers(h, queue, mem, &mut ring)? {
                    return Ok(false);
                }
            }
            let next = match h.replies.pop_front() {
                Some(reply) => place_copy(h, &reply),
                None => read_tap(h),
            };
            match next {
                Next::Placed(len) => {
                    if complete(h, &mut used, len)? {
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
fn room_needed(h: &NetIo) -> usize {
    if h.guest_offloads.tso4 || h.guest_offloads.tso6 {
        GSO_ROOM
    } else {
        PLAIN_ROOM
    }
}

/// Takes buffers off the queue when a frame of any size would not fit
/// in those held (one buffer without mergeable buffers): enough for one,
/// and [`TAKE_AHEAD`] at least, so that the descriptor table is read a
/// run of buffers at a time rather than one between two reads of the
/// tap. Returns whether the held buffers are enough to read into: with
/// mergeable buffers that is room for the largest frame, or every buffer
/// the queue can hold if the driver posts less.
fn take_buffers<'m>(
    h: &mut NetIo,
    queue: &mut Queue,
    mem: &'m GuestMemoryMmap,
    ring: &mut AvailRing<'m>,
) -> Result<bool, DeviceBroken> {
    let want = room_needed(h);
    let all = usize::from(queue.size());
    let enough = |h: &NetIo| {
        if h.mergeable {
            h.rx_buffers.bytes() >= want || h.rx_buffers.len() >= all
        } else {
            !h.rx_buffers.is_empty()
        }
    };
    if enough(h) {
        return Ok(true);
    }
    let mut buffer = WritableChain::default();
    while !enough(h) || h.rx_buffers.len() < TAKE_AHEAD.min(all) {
        if !ring
            .take_views(queue, MAX_DESCRIPTORS, &mut buffer)
            .map_err(|e| broken(e.to_string()))?
        {
            break;
        }
        if buffer.mixed || buffer.len == 0 {
            return Err(broken(format!(
                "buffer {} is not a writable buffer",
                buffer.head
            )));
        }
        h.rx_buffers.hold(mem, std::mem::take(&mut buffer));
    }
    Ok(enough(h))
}

/// How many held buffers the next frame may fill: with mergeable buffers
/// the first ones that make room for the largest frame (all of them if
/// they do not), else the first.
fn frame_buffers(h: &NetIo) -> usize {
    if h.mergeable {
        buffers_for(h, room_needed(h))
    } else {
        1
    }
}

/// How many of the first held buffers it takes to hold `bytes` (all of
/// them if they cannot).
fn buffers_for(h: &NetIo, bytes: usize) -> usize {
    // Nearly always the first.
    if h.rx_buffers
        .front()
        .is_some_and(|first| first.len as usize >= bytes)
    {
        return 1;
    }
    let mut room = 0;
    for (i, held) in h.rx_buffers.iter().enumerate() {
        room += held.len as usize;
        if room >= bytes {
            return i + 1;
        }
    }
    h.rx_buffers.len()
}

/// Calls `f` with host views of the first `at_least` bytes (or more) of
/// the buffers the next frame fills: the first buffer's own views when it
/// holds that much (nearly always), else all of them as one stream.
fn with_frame_views<R>(h: &NetIo, at_least: usize, f: impl FnOnce(&HostViews<'_>) -> R) -> R {
    match h.rx_buffers.front() {
        Some(first) if first.len as usize >= at_least => f(&first.views),
        _ => {
            let mut all = HostViews::new();
            for held in h.rx_buffers.iter().take(frame_buffers(h)) {
                all.extend(&held.views);
            }
            f(&all)
        }
    }
}

/// One read from the tap into the held buffers.
fn read_tap(h: &mut NetIo) -> Next {
    let buffers = frame_buffers(h);
    let mut iovecs = SmallVec::<[libc::iovec; READ_IOVECS]>::new();
    let mut room = 0;
    'views: for buffer in h.rx_buffers.iter().take(buffers) {
        for &iovec in buffer.views.iovecs() {
            if iovecs.len() == libc::UIO_MAXIOV as usize - 1 {
                break 'views;
            }
            iovecs.push(iovec);
            room += iovec.iov_len;
        }
    }
    // A frame larger than the buffers runs on into this spill area (the
    // tap would cut it short without saying so) and is then dropped.
    if h.spill.len() != GSO_ROOM {
        h.spill.resize(GSO_ROOM, 0);
    }
    iovecs.push(libc::iovec {
        iov_base: h.spill.as_mut_ptr().cast(),
        iov_len: h.spill.len(),
    });
    // SAFETY: every iovec but the last is a view of a held buffer, guest
    // memory that `h.rx_buffers` keeps mapped; the last is `h.spill`, which
    // nothing else uses meanwhile. The kernel writes the frame into them.
    let read = unsafe {
        libc::readv(
            h.tap.as_raw_fd(),
            iovecs.as_ptr(),
            iovecs.len() as libc::c_int,
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
fn place_copy(h: &mut NetIo, frame: &[u8]) -> Next {
    let header = Header::default().to_bytes();
    let placed = with_frame_views(h, HEADER_LEN + frame.len(), |views| {
        views.write_at(0, &header) && views.write_at(HEADER_LEN, frame)
    });
    if !placed {
        NetStats::add(&h.stats.rx_dropped, 1);
        h.dropped("device-made", "larger than the receive buffers");
        return Next::Dropped;
    }
    Next::Placed(HEADER_LEN + frame.len())
}

/// Checks the placed frame, fixes its header and hands its buffers to the
/// guest. Returns whether it was delivered.
fn complete(h: &mut NetIo, used: &mut UsedBatch, len: usize) -> Result<bool, DeviceBroken> {
    const LOOKED_AT: usize = HEADER_LEN + MIN_FRAME;
    let Some(raw) = with_frame_views(h, LOOKED_AT, |views| views.read_array::<LOOKED_AT>(0)) else {
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
    // The buffers the frame filled: the first ones, in order.
    let filled = buffers_for(h, len);
    header.num_buffers = filled as u16;
    let header = header.to_bytes();
    // Nearly always a store into the first buffer's first view.
    if !with_frame_views(h, HEADER_LEN, |views| views.write_array(0, &header)) {
        return Ok(false);
    }
    let mut left = len;
    for _ in 0..filled {
        let Some((head, held)) = h.rx_buffers.pop_front() else {
            break;
        };
        let written = left.min(held as usize);
        left -= written;
        used.add(head, written as u32);
    }
    Ok(true)
}
