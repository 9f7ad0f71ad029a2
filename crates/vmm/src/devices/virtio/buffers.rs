//! The buffers of one direction of a chain, seen as one byte stream.
//!
//! The virtio spec lets a driver cut a request into descriptors wherever
//! it likes, so devices never look at single descriptors: they take
//! ranges of the stream ([`sub_segments`]), copy bytes in and out of it
//! ([`read_bytes`], [`write_bytes`], [`write_bytes_at`]), take host views
//! of it for vectored I/O ([`host_slices`], with [`copy_from_slices`] and
//! [`copy_to_slices`] for the few header bytes a device handles per
//! frame), or have a disk backend read into it or write from it directly,
//! without a bounce buffer ([`read_from_backend`], [`write_to_backend`]).
//!
//! Every segment was checked by [`super::queue::read_chain_into`] to lie in
//! guest memory; a failure here means memory went away, which callers
//! report as an I/O error.

use std::io::{IoSlice, IoSliceMut};

use disk::BlockBackend;
use smallvec::SmallVec;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::queue::{Segment, Segments};
use crate::memory::GuestMemoryMmap;

/// The part `[skip, skip + take)` of the byte stream `segments` form.
pub fn sub_segments(segments: &[Segment], mut skip: u64, mut take: u64) -> Segments {
    let mut out = Segments::new();
    for s in segments {
        if take == 0 {
            break;
        }
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(take);
        out.push(Segment {
            addr: GuestAddress(s.addr.0 + skip),
            len: n as u32,
        });
        take -= n;
        skip = 0;
    }
    out
}

/// Copies the first `buf.len()` bytes of the stream out of guest memory;
/// false if the stream is shorter.
pub fn read_bytes(mem: &GuestMemoryMmap, segments: &[Segment], buf: &mut [u8]) -> bool {
    // Nearly always (a request's header): all in the first buffer, which
    // lies in one region.
    if let Some(first) = segments.first()
        && first.len as usize >= buf.len()
        && let Some(host) = super::queue::mapped(mem, first.addr, buf.len())
    {
        // SAFETY: `host..host + buf.len()` is mapped guest memory, which
        // stays mapped while `mem` lives; the guest may change it
        // meanwhile, which only changes the bytes read.
        unsafe { std::ptr::copy_nonoverlapping(host, buf.as_mut_ptr(), buf.len()) };
        return true;
    }
    let mut at = 0usize;
    for s in sub_segments(segments, 0, buf.len() as u64) {
        let end = at + s.len as usize;
        if mem.read_slice(&mut buf[at..end], s.addr).is_err() {
            return false;
        }
        at = end;
    }
    at == buf.len()
}

/// Copies as much of `data` as the stream holds into guest memory;
/// returns the number of bytes written.
pub fn write_bytes(
    mem: &GuestMemoryMmap,
    segments: &[Segment],
    data: &[u8],
) -> std::io::Result<u64> {
    copy_into(mem, segments, 0, data).map(|n| n as u64)
}

/// Copies all of `bytes` into the stream from byte `offset` on; false if
/// the stream is too short or unwritable.
pub fn write_bytes_at(
    mem: &GuestMemoryMmap,
    segments: &[Segment],
    offset: u64,
    bytes: &[u8],
) -> bool {
    copy_into(mem, segments, offset, bytes).is_ok_and(|n| n == bytes.len())
}

fn copy_into(
    mem: &GuestMemoryMmap,
    segments: &[Segment],
    offset: u64,
    bytes: &[u8],
) -> std::io::Result<usize> {
    let mut at = 0usize;
    for s in sub_segments(segments, offset, bytes.len() as u64) {
        let end = at + s.len as usize;
        mem.write_slice(&bytes[at..end], s.addr)
            .map_err(|_| outside_memory())?;
        at = end;
    }
    Ok(at)
}

pub fn outside_memory() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "buffer outside guest memory",
    )
}

/// Host pointers and lengths of guest buffers.
pub type HostSlices = SmallVec<[(*mut u8, usize); 4]>;

/// Host views of guest buffers, for vectored I/O.
///
/// Every segment was checked to lie in guest memory; a buffer spanning
/// two memory regions becomes two slices.
pub fn host_slices(mem: &GuestMemoryMmap, segments: &[Segment]) -> Option<HostSlices> {
    let mut out = HostSlices::new();
    host_slices_into(mem, segments, &mut out).then_some(out)
}

/// [`host_slices`], appended to `out`; false if a buffer is not guest
/// memory (then `out` holds part of the views and means nothing).
pub fn host_slices_into(mem: &GuestMemoryMmap, segments: &[Segment], out: &mut HostSlices) -> bool {
    for s in segments {
        if s.len == 0 {
            continue;
        }
        // A buffer inside one region, nearly always: one region lookup.
        if let Some(ptr) = super::queue::mapped(mem, s.addr, s.len as usize) {
            out.push((ptr, s.len as usize));
            continue;
        }
        for slice in GuestMemoryBackend::get_slices(mem, s.addr, s.len as usize) {
            let Ok(slice) = slice else { return false };
            out.push((slice.ptr_guard_mut().as_ptr(), slice.len()));
        }
    }
    true
}

/// Calls `copy(host, done, n)` for each piece of bytes `[offset, offset +
/// len)` of the buffers behind `slices`: `n` bytes at host address `host`,
/// which are bytes `done..done + n` of the range. False if the buffers are
/// shorter than the range.
fn for_each_piece(
    slices: &[(*mut u8, usize)],
    mut offset: usize,
    len: usize,
    mut copy: impl FnMut(*mut u8, usize, usize),
) -> bool {
    let mut done = 0;
    for &(ptr, slice_len) in slices {
        if done == len {
            break;
        }
        if offset >= slice_len {
            offset -= slice_len;
            continue;
        }
        let n = (slice_len - offset).min(len - done);
        // SAFETY: `offset < slice_len`, so the address is inside the slice.
        copy(unsafe { ptr.add(offset) }, done, n);
        done += n;
        offset = 0;
    }
    done == len
}

/// Copies bytes `[offset, offset + buf.len())` of the buffers behind
/// `slices` (from [`host_slices`]) into `buf`; false if they are shorter.
/// The fast path for the few header bytes a device reads per request.
pub fn copy_from_slices(slices: &[(*mut u8, usize)], offset: usize, buf: &mut [u8]) -> bool {
    let len = buf.len();
    for_each_piece(slices, offset, len, |host, done, n| {
        // SAFETY: `host..host + n` is mapped guest memory (host_slices
        // checked it) and `done + n <= buf.len()`; the guest may change the
        // memory meanwhile, which only changes the bytes copied.
        unsafe { std::ptr::copy_nonoverlapping(host, buf[done..].as_mut_ptr(), n) }
    })
}

/// Bytes `[offset, offset + N)` of the buffers behind `slices`, or None if
/// they are shorter: [`copy_from_slices`] for a fixed-size header, which
/// inside the first buffer (nearly always) is a load of `N` bytes rather
/// than a call to `memcpy`.
pub fn read_array<const N: usize>(slices: &[(*mut u8, usize)], offset: usize) -> Option<[u8; N]> {
    if let Some(&(host, len)) = slices.first()
        && offset.checked_add(N).is_some_and(|end| end <= len)
    {
        // SAFETY: `host..host + len` is mapped guest memory (host_slices
        // checked it) and `offset + N <= len`; the guest may change the
        // memory meanwhile, which only changes the bytes read.
        return Some(unsafe { std::ptr::read_unaligned(host.add(offset).cast::<[u8; N]>()) });
    }
    let mut out = [0u8; N];
    copy_from_slices(slices, offset, &mut out).then_some(out)
}

/// Writes `bytes` at byte `offset` of the buffers behind `slices`; false
/// if they are shorter: [`copy_to_slices`] for a fixed-size header, a
/// store of `N` bytes when it falls inside the first buffer.
pub fn write_array<const N: usize>(
    slices: &[(*mut u8, usize)],
    offset: usize,
    bytes: &[u8; N],
) -> bool {
    if let Some(&(host, len)) = slices.first()
        && offset.checked_add(N).is_some_and(|end| end <= len)
    {
        // SAFETY: as in `read_array`; the device owns these buffers until
        // it hands them back.
        unsafe { std::ptr::write_unaligned(host.add(offset).cast::<[u8; N]>(), *bytes) };
        return true;
    }
    copy_to_slices(slices, offset, bytes)
}

/// Copies `bytes` into the buffers behind `slices` from byte `offset` on;
/// false if they are shorter.
pub fn copy_to_slices(slices: &[(*mut u8, usize)], offset: usize, bytes: &[u8]) -> bool {
    for_each_piece(slices, offset, bytes.len(), |host, done, n| {
        // SAFETY: as in `copy_from_slices`; the device owns these buffers
        // until it hands them back.
        unsafe { std::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), host, n) }
    })
}

/// Fills the guest buffers `data` from the backend, starting at byte
/// `offset` of the disk.
pub fn read_from_backend(
    backend: &dyn BlockBackend,
    mem: &GuestMemoryMmap,
    offset: u64,
    data: &[Segment],
) -> std::io::Result<()> {
    let slices = host_slices(mem, data).ok_or_else(outside_memory)?;
    // SAFETY: each pointer and length is a range of guest memory that
    // stays mapped as long as `mem` lives. The guest runs concurrently
    // and owns these bytes, so Rust's exclusivity cannot be promised for
    // guest memory in any case; the slices only serve as the destination
    // of the backend's reads and are never read here.
    let mut bufs: SmallVec<[IoSliceMut<'_>; 4]> = slices
        .iter()
        .map(|&(ptr, len)| IoSliceMut::new(unsafe { std::slice::from_raw_parts_mut(ptr, len) }))
        .collect();
    backend.read_vectored_at(&mut bufs, offset)
}

/// Writes the guest buffers `data` to the backend at byte `offset`.
pub fn write_to_backend(
    backend: &dyn BlockBackend,
    mem: &GuestMemoryMmap,
    offset: u64,
    data: &[Segment],
) -> std::io::Result<()> {
    let slices = host_slices(mem, data).ok_or_else(outside_memory)?;
    // SAFETY: as in `read_from_backend`; the slices are only the source
    // of the backend's writes.
    let bufs: SmallVec<[IoSlice<'_>; 4]> = slices
        .iter()
        .map(|&(ptr, len)| IoSlice::new(unsafe { std::slice::from_raw_parts(ptr, len) }))
        .collect();
    backend.write_vectored_at(&bufs, offset)
}

/// Zeroes the guest buffers `data`.
pub fn zero(mem: &GuestMemoryMmap, data: &[Segment]) -> std::io::Result<()> {
    const ZEROES: [u8; 4096] = [0; 4096];
    for s in data {
        let mut done = 0u64;
        while done < u64::from(s.len) {
            let n = (u64::from(s.len) - done).min(ZEROES.len() as u64);
            mem.write_slice(&ZEROES[..n as usize], GuestAddress(s.addr.0 + done))
                .map_err(|_| outside_memory())?;
            done += n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(addr: u64, len: u32) -> Segment {
        Segment {
            addr: GuestAddress(addr),
            len,
        }
    }

    #[test]
    fn byte_streams_split_across_buffers() {
        let segs = [seg(0x1000, 10), seg(0x2000, 6), seg(0x3000, 512)];
        assert_eq!(
            sub_segments(&segs, 0, 16).as_slice(),
            [seg(0x1000, 10), seg(0x2000, 6)].as_slice()
        );
        assert_eq!(
            sub_segments(&segs, 12, 8).as_slice(),
            [seg(0x2002, 4), seg(0x3000, 4)].as_slice()
        );
        assert_eq!(
            sub_segments(&segs, 16, u64::MAX).as_slice(),
            [seg(0x3000, 512)]
        );
        assert_eq!(sub_segments(&segs, 600, 5).len(), 0);
    }

    #[test]
    fn bytes_in_and_out_across_buffers() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let segs = [seg(0x1000, 3), seg(0x2000, 2), seg(0x3000, 100)];
        assert_eq!(write_bytes(&mem, &segs, b"abcdefg").unwrap(), 7);
        let mut back = [0u8; 7];
        assert!(read_bytes(&mem, &segs, &mut back));
        assert_eq!(&back, b"abcdefg");
        let mut two = [0u8; 2];
        mem.read_slice(&mut two, GuestAddress(0x2000)).unwrap();
        assert_eq!(&two, b"de");
        // More than the stream holds: what fits is written, reads fail.
        let short = [seg(0x1000, 2)];
        assert_eq!(write_bytes(&mem, &short, b"xyz").unwrap(), 2);
        assert!(!read_bytes(&mem, &short, &mut [0u8; 3]));
        zero(&mem, &segs).unwrap();
        assert!(read_bytes(&mem, &segs, &mut back));
        assert_eq!(back, [0u8; 7]);
    }

    #[test]
    fn copies_in_and_out_across_buffers() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let segs = [seg(0x1000, 3), seg(0x2000, 5)];
        assert!(write_bytes_at(&mem, &segs, 1, b"abcdef"));
        let mut back = [0u8; 7];
        assert!(read_bytes(&mem, &segs, &mut back));
        assert_eq!(&back, b"\0abcdef");
        let mut long = [0u8; 9];
        assert!(!read_bytes(&mem, &segs, &mut long));

        let slices = host_slices(&mem, &segs).unwrap();
        let mut mid = [0u8; 4];
        assert!(copy_from_slices(&slices, 2, &mut mid));
        assert_eq!(&mid, b"bcde");
        assert!(copy_to_slices(&slices, 6, b"XY"));
        assert!(read_bytes(&mem, &segs, &mut back));
        assert_eq!(&back, b"\0abcdeX");
        assert!(!copy_to_slices(&slices, 7, b"XY"), "past the end");
        assert!(!copy_from_slices(&slices, 5, &mut mid));
        assert!(!write_bytes_at(&mem, &segs, 4, b"12345"), "past the end");
    }
}
