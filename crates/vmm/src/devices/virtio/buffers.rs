//! The buffers of one direction of a chain, seen as one byte stream.
//!
//! The virtio spec lets a driver cut a request into descriptors wherever
//! it likes, so devices never look at single descriptors: they take
//! ranges of the stream ([`sub_segments`]), copy bytes in and out of it
//! ([`read_bytes`], [`write_bytes`], [`write_bytes_at`]), take its host
//! views for vectored I/O ([`host_views`], a [`HostViews`]), or have a disk
//! backend read into it or write from it directly, without a bounce buffer
//! ([`read_from_backend`], [`write_to_backend`]).
//!
//! Every segment was checked by [`super::queue::read_chain_into`] to lie in
//! guest memory; a failure here means memory went away, which callers
//! report as an I/O error.

use disk::BlockBackend;
use vm_memory::{Bytes, GuestAddress};

use super::guest::{GuestSlice, HostViews};
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
        && let Some(host) = GuestSlice::of(mem, first.addr, buf.len())
    {
        return host.read_at(0, buf);
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

/// Host views of guest buffers, checked to lie in guest memory; a buffer
/// spanning two memory regions becomes two views.
pub fn host_views<'m>(mem: &'m GuestMemoryMmap, segments: &[Segment]) -> Option<HostViews<'m>> {
    let mut out = HostViews::new();
    segments
        .iter()
        .all(|s| out.add_range(mem, s.addr, s.len as usize))
        .then_some(out)
}

/// Fills the guest buffers `data` from the backend, starting at byte
/// `offset` of the disk.
pub fn read_from_backend(
    backend: &dyn BlockBackend,
    mem: &GuestMemoryMmap,
    offset: u64,
    data: &[Segment],
) -> std::io::Result<()> {
    host_views(mem, data)
        .ok_or_else(outside_memory)?
        .read_from(backend, offset)
}

/// Writes the guest buffers `data` to the backend at byte `offset`.
pub fn write_to_backend(
    backend: &dyn BlockBackend,
    mem: &GuestMemoryMmap,
    offset: u64,
    data: &[Segment],
) -> std::io::Result<()> {
    host_views(mem, data)
        .ok_or_else(outside_memory)?
        .write_to(backend, offset)
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

        let views = host_views(&mem, &segs).unwrap();
        let mut mid = [0u8; 4];
        assert!(views.read_at(2, &mut mid));
        assert_eq!(&mid, b"bcde");
        assert!(views.write_at(6, b"XY"));
        assert!(read_bytes(&mem, &segs, &mut back));
        assert_eq!(&back, b"\0abcdeX");
        assert!(!views.write_at(7, b"XY"), "past the end");
        assert!(!views.read_at(5, &mut mid));
        assert!(host_views(&mem, &[seg(0xfff0, 0x20)]).is_none());
        assert!(!write_bytes_at(&mem, &segs, 4, b"12345"), "past the end");
    }
}
