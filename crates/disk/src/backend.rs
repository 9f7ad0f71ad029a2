//! The one interface every disk path goes through: the virtio-blk device,
//! `vmctl create -i`, the tests and the benchmark.

use std::io::{self, IoSlice, IoSliceMut};

use proto::control::DiskFormat;

use crate::image_file::{iovec, iovec_mut};

/// What a range of the virtual disk holds, as far as the format knows
/// without reading the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStatus {
    /// The range may hold data (it may still happen to be zero).
    Data,
    /// The range reads as zeroes (a hole, an unallocated cluster without a
    /// backing file, a zero cluster).
    Zero,
}

/// A virtual disk: a byte-addressed image of [`BlockBackend::size`] bytes.
///
/// Every call is complete or fails: reads fill the whole buffer, writes
/// write all of it. A request that reaches past [`BlockBackend::size`]
/// fails with `InvalidInput` and touches nothing. The methods take `&self`
/// so that one backend can serve several I/O threads at once.
pub trait BlockBackend: Send + Sync {
    /// The format of the top image.
    fn format(&self) -> DiskFormat;

    /// Virtual size in bytes.
    fn size(&self) -> u64;

    /// True when every modifying call fails with `PermissionDenied`.
    fn is_read_only(&self) -> bool;

    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        // SAFETY: the iovec is `buf`, lent to us mutably for this call.
        unsafe { self.read_iovecs_at(&[iovec_mut(buf)], offset) }
    }

    /// Writes `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        // SAFETY: the iovec is `buf`, lent to us for this call.
        unsafe { self.write_iovecs_at(&[iovec(buf)], offset) }
    }

    /// Reads into several buffers, one after the other, starting at
    /// `offset`.
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<()> {
        let iovecs: Vec<libc::iovec> = bufs.iter_mut().map(|b| iovec_mut(b)).collect();
        // SAFETY: each iovec is one of `bufs`, lent to us mutably for this
        // call.
        unsafe { self.read_iovecs_at(&iovecs, offset) }
    }

    /// Writes several buffers, one after the other, starting at `offset`.
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        let iovecs: Vec<libc::iovec> = bufs.iter().map(|b| iovec(b)).collect();
        // SAFETY: each iovec is one of `bufs`, lent to us for this call.
        unsafe { self.write_iovecs_at(&iovecs, offset) }
    }

    /// Fills the memory `iovecs` name, one buffer after the other, from
    /// byte `offset` of the disk on: a guest's scatter-gather list, filled
    /// without a bounce buffer and without a Rust reference to memory the
    /// guest shares.
    ///
    /// The backend only writes into that memory (the kernel's `preadv`,
    /// raw-pointer copies and zero-fills) and never reads it back, so a
    /// guest changing it meanwhile changes only what it finds there.
    ///
    /// # Safety
    ///
    /// For the whole call, every iovec must name memory that is mapped and
    /// writable, and that nothing reaches through a Rust reference other
    /// than one the caller lent for the call (as the safe calls above lend
    /// their buffers). Others, such as a guest sharing the memory, may read
    /// and write it at the same time.
    unsafe fn read_iovecs_at(&self, iovecs: &[libc::iovec], offset: u64) -> io::Result<()>;

    /// Writes the memory `iovecs` name, one buffer after the other, at
    /// byte `offset` of the disk: the other way of
    /// [`BlockBackend::read_iovecs_at`]. The backend only reads that
    /// memory; bytes a guest changes meanwhile reach the disk old or new.
    ///
    /// # Safety
    ///
    /// For the whole call, every iovec must name memory that is mapped and
    /// readable, and that nothing writes through a Rust reference. Others,
    /// such as a guest sharing the memory, may write it at the same time.
    unsafe fn write_iovecs_at(&self, iovecs: &[libc::iovec], offset: u64) -> io::Result<()>;

    /// Makes every write that returned before this call durable: format
    /// metadata written back and the files synced to stable storage.
    fn flush(&self) -> io::Result<()>;

    /// Tells the image that a range is no longer needed. Afterwards the
    /// range reads as zeroes. Space is given back where the format allows;
    /// parts that cannot be given back are zeroed.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Makes a range read as zeroes, without writing zero data where the
    /// format can record zeroes instead.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Describes the range starting at `offset`: its status and the length
    /// (at most `max_len`, at least 1 if `max_len > 0` and `offset` is
    /// inside the disk) over which that status holds. `Data` is always a
    /// correct answer; `Zero` is a promise.
    fn block_status(&self, offset: u64, max_len: u64) -> io::Result<(BlockStatus, u64)>;
}

/// Checks that `[offset, offset + len)` lies within a disk of `size` bytes.
pub(crate) fn check_range(offset: u64, len: u64, size: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("request {offset}+{len} is beyond the end of the disk ({size} bytes)"),
        )),
    }
}

pub(crate) fn read_only_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the disk image is read-only",
    )
}
