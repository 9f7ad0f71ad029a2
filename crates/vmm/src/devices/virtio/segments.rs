//! A chain's buffers in one direction as one byte stream: sub-ranges of
//! it, copies in and out of guest memory, and host views for vectored
//! I/O. Drivers may split headers and payloads across buffers any way
//! they like, so devices read and write through these rather than
//! assuming a layout.

use smallvec::SmallVec;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::queue::{Segment, Segments};
use crate::memory::GuestMemoryMmap;

/// Host pointers and lengths of guest buffers.
pub type HostSlices = SmallVec<[(*mut u8, usize); 4]>;

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
/// false if the stream is shorter or unreadable.
pub fn read_stream(mem: &GuestMemoryMmap, segments: &[Segment], buf: &mut [u8]) -> bool {
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

/// Copies `bytes` into the stream from byte `offset` on; false if the
/// stream is too short or unwritable.
pub fn write_stream(
    mem: &GuestMemoryMmap,
    segments: &[Segment],
    offset: u64,
    bytes: &[u8],
) -> bool {
    let mut at = 0usize;
    for s in sub_segments(segments, offset, bytes.len() as u64) {
        let end = at + s.len as usize;
        if mem.write_slice(&bytes[at..end], s.addr).is_err() {
            return false;
        }
        at = end;
    }
    at == bytes.len()
}

/// Host views of guest buffers, for vectored I/O.
///
/// Every segment was checked to lie in guest memory; a buffer spanning
/// two memory regions becomes two slices.
pub fn host_slices(mem: &GuestMemoryMmap, segments: &[Segment]) -> Option<HostSlices> {
    let mut out = HostSlices::new();
    for s in segments {
        for slice in GuestMemoryBackend::get_slices(mem, s.addr, s.len as usize) {
            let slice = slice.ok()?;
            out.push((slice.ptr_guard_mut().as_ptr(), slice.len()));
        }
    }
    Some(out)
}

/// Copies bytes `[offset, offset + buf.len())` of the buffers behind
/// `slices` (from [`host_slices`]) into `buf`; false if they are shorter.
/// The fast path for the few header bytes a device reads per request.
pub fn copy_from_slices(slices: &HostSlices, mut offset: usize, buf: &mut [u8]) -> bool {
    let mut done = 0;
    for &(ptr, len) in slices {
        if done == buf.len() {
            break;
        }
        if offset >= len {
            offset -= len;
            continue;
        }
        let n = (len - offset).min(buf.len() - done);
        // SAFETY: `ptr..ptr + len` is mapped guest memory (host_slices
        // checked it); the guest may change it meanwhile, which only
        // changes the bytes copied.
        unsafe { std::ptr::copy_nonoverlapping(ptr.add(offset), buf[done..].as_mut_ptr(), n) };
        done += n;
        offset = 0;
    }
    done == buf.len()
}

/// Copies `bytes` into the buffers behind `slices` from byte `offset` on;
/// false if they are shorter.
pub fn copy_to_slices(slices: &HostSlices, mut offset: usize, bytes: &[u8]) -> bool {
    let mut done = 0;
    for &(ptr, len) in slices {
        if done == bytes.len() {
            break;
        }
        if offset >= len {
            offset -= len;
            continue;
        }
        let n = (len - offset).min(bytes.len() - done);
        // SAFETY: as in `copy_from_slices`; the device owns these buffers
        // until it hands them back.
        unsafe { std::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), ptr.add(offset), n) };
        done += n;
        offset = 0;
    }
    done == bytes.len()
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
    fn copies_in_and_out_across_buffers() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let segs = [seg(0x1000, 3), seg(0x2000, 5)];
        assert!(write_stream(&mem, &segs, 1, b"abcdef"));
        let mut back = [0u8; 7];
        assert!(read_stream(&mem, &segs, &mut back));
        assert_eq!(&back, b"\0abcdef");
        let mut long = [0u8; 9];
        assert!(!read_stream(&mem, &segs, &mut long));

        let slices = host_slices(&mem, &segs).unwrap();
        let mut mid = [0u8; 4];
        assert!(copy_from_slices(&slices, 2, &mut mid));
        assert_eq!(&mid, b"bcde");
        assert!(copy_to_slices(&slices, 6, b"XY"));
        assert!(read_stream(&mem, &segs, &mut back));
        assert_eq!(&back, b"\0abcdeX");
        assert!(!copy_to_slices(&slices, 7, b"XY"), "past the end");
        assert!(!copy_from_slices(&slices, 5, &mut mid));
        assert!(!write_stream(&mem, &segs, 4, b"12345"), "past the end");
    }
}
