//! One open image file: positional vectored I/O, hole punching, and the
//! `Storage` implementation through which imago reaches the file.
//!
//! imago could open files itself, but the VM process may open nothing by
//! path, and imago's own file driver reads past the end of a file as
//! zeroes, which would hide a table that points outside a damaged image.
//! This type works on a descriptor it is given and refuses such reads.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use imago::Storage;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::storage::PreallocateMode;
use imago::storage::drivers::CommonStorageHelper;
use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};

/// Most iovecs one preadv/pwritev call takes (Linux UIO_MAXIOV).
const MAX_IOVECS: usize = 1024;

/// What a read that reaches the end of the file does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PastEof {
    /// Fill the rest with zeroes (a raw image shorter than expected).
    Zeroes,
    /// A read may run past the end by less than one 512-byte sector, which
    /// reads as zeroes: a compressed cluster's length is rounded up to
    /// whole sectors and may pass the last byte of the file. A read that
    /// needs more than that past the end fails: the table that pointed
    /// there points outside the file.
    SectorSlack,
}

/// An image file opened by someone else (the daemon), with the name it was
/// opened under kept for messages only.
pub(crate) struct ImageFile {
    file: File,
    path: PathBuf,
    writable: bool,
    past_eof: PastEof,
    /// The file's length, kept current by our own writes so that no fstat
    /// is needed per request.
    len: AtomicU64,
    helper: CommonStorageHelper,
}

impl ImageFile {
    pub(crate) fn new(
        file: File,
        path: &Path,
        writable: bool,
        past_eof: PastEof,
    ) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(ImageFile {
            file,
            path: path.to_path_buf(),
            writable,
            past_eof,
            len: AtomicU64::new(len),
            helper: CommonStorageHelper::default(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    /// Current length of the file.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// Fills all of `bufs` from `offset`.
    pub(crate) fn read_vectored_at(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        offset: u64,
    ) -> io::Result<()> {
        let iovecs: Vec<libc::iovec> = bufs.iter_mut().map(|b| iovec_mut(b)).collect();
        // SAFETY: each iovec is one of `bufs`, memory the caller lent us
        // mutably for this call.
        unsafe { self.read_iovecs_at(&iovecs, offset) }
    }

    /// Writes all of `bufs` at `offset`.
    pub(crate) fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        let iovecs: Vec<libc::iovec> = bufs.iter().map(|b| iovec(b)).collect();
        // SAFETY: each iovec is one of `bufs`, memory the caller lent us
        // for this call; the kernel only reads it.
        unsafe { self.write_iovecs_at(&iovecs, offset) }
    }

    /// Fills all of the memory `iovecs` name from `offset` (the file's
    /// end as [`PastEof`] says), with `preadv` straight into it.
    ///
    /// # Safety
    ///
    /// As for [`crate::BlockBackend::read_iovecs_at`]: every iovec names
    /// memory mapped and writable for the whole call, which no Rust
    /// reference covers meanwhile but one the caller lent for the call.
    pub(crate) unsafe fn read_iovecs_at(
        &self,
        iovecs: &[libc::iovec],
        offset: u64,
    ) -> io::Result<()> {
        let wanted = iovecs_len(iovecs);
        let mut left = Progress::new(iovecs);
        let mut at = offset;
        while !left.is_done() {
            let pending = left.pending();
            // SAFETY: `pending` names parts of `iovecs`, which the caller
            // keeps mapped and writable.
            let n = unsafe { preadv_at(&self.file, &pending, at) }?;
            if n == 0 {
                let missing = wanted - (at - offset);
                if self.past_eof == PastEof::SectorSlack && missing >= 512 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: read of {wanted} bytes at offset {offset} is beyond the end of the file ({} bytes)",
                            self.path.display(),
                            self.len()
                        ),
                    ));
                }
                // SAFETY: as above, for all that is left.
                unsafe { left.zero_rest() };
                return Ok(());
            }
            at += n as u64;
            left.advance(n);
        }
        Ok(())
    }

    /// Writes all of the memory `iovecs` name at `offset`, with `pwritev`
    /// straight from it.
    ///
    /// # Safety
    ///
    /// As for [`crate::BlockBackend::write_iovecs_at`]: every iovec names
    /// memory mapped and readable for the whole call.
    pub(crate) unsafe fn write_iovecs_at(
        &self,
        iovecs: &[libc::iovec],
        offset: u64,
    ) -> io::Result<()> {
        let mut left = Progress::new(iovecs);
        let mut at = offset;
        // Nearly always one call writes it all, straight from `iovecs`.
        while !left.is_done() {
            let pending = left.pending();
            // SAFETY: `pending` names parts of `iovecs`, which the caller
            // keeps mapped and readable.
            let n = unsafe { pwritev_at(&self.file, &pending, at) }?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            at += n as u64;
            self.len.fetch_max(at, Ordering::Relaxed);
            left.advance(n);
        }
        Ok(())
    }

    /// Deallocates a range, keeping the file length; reads give zeroes.
    /// Fails with `Unsupported` where the file system cannot punch holes.
    pub(crate) fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        retry_eintr(|| fallocate(self.file.as_fd(), flags, to_off(offset)?, to_off(len)?))
            .map_err(unsupported_if_not_supported)
    }

    /// Makes a range read as zeroes, growing the file if it ends before
    /// the range does: a hole where possible, written zeroes otherwise.
    pub(crate) fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let end = offset
            .checked_add(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range overflow"))?;
        let inside_end = end.min(self.len());
        if offset < inside_end {
            match self.punch_hole(offset, inside_end - offset) {
                Err(err) if err.kind() == io::ErrorKind::Unsupported => {
                    self.write_zero_data(offset, inside_end - offset)?
                }
                other => other?,
            }
        }
        if end > self.len() {
            self.set_len(end)?;
        }
        Ok(())
    }

    fn write_zero_data(&self, mut offset: u64, mut len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; len.min(1 << 20) as usize];
        while len > 0 {
            let n = len.min(zeroes.len() as u64);
            self.write_vectored_at(&[IoSlice::new(&zeroes[..n as usize])], offset)?;
            offset += n;
            len -= n;
        }
        Ok(())
    }

    /// Sets the file length (a sparse extension when growing).
    pub(crate) fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len.store(len, Ordering::Relaxed);
        Ok(())
    }

    /// Data written so far reaches stable storage.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Where the next data (`SEEK_DATA`) or hole (`SEEK_HOLE`) at or after
    /// `offset` begins; `None` when the file system cannot tell.
    pub(crate) fn seek(&self, offset: u64, whence: nix::unistd::Whence) -> io::Result<Option<u64>> {
        match nix::unistd::lseek(self.file.as_fd(), to_off(offset)?, whence) {
            Ok(pos) => Ok(Some(pos as u64)),
            // No data past offset: the rest of the file is a hole.
            Err(Errno::ENXIO) => Ok(Some(self.len())),
            Err(Errno::EINVAL) | Err(Errno::EOPNOTSUPP) => Ok(None),
            Err(errno) => Err(errno.into()),
        }
    }
}

/// The total length of an iovec list.
pub(crate) fn iovecs_len(iovecs: &[libc::iovec]) -> u64 {
    iovecs.iter().map(|v| v.iov_len as u64).sum()
}

/// `buf` as an iovec, for the kernel to write into.
pub(crate) fn iovec_mut(buf: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }
}

/// `buf` as an iovec, for the kernel to read (which never writes through
/// it).
pub(crate) fn iovec(buf: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    }
}

/// Where a transfer stands in its iovec list: the iovecs from `at` on,
/// the first of them without its first `skip` bytes; empty iovecs are
/// passed over, so a transfer ends when `at` reaches the end.
struct Progress<'a> {
    iovecs: &'a [libc::iovec],
    at: usize,
    skip: usize,
}

impl<'a> Progress<'a> {
    fn new(iovecs: &'a [libc::iovec]) -> Self {
        let mut progress = Progress {
            iovecs,
            at: 0,
            skip: 0,
        };
        progress.advance(0);
        progress
    }

    fn is_done(&self) -> bool {
        self.at == self.iovecs.len()
    }

    /// What is left, at most [`MAX_IOVECS`] iovecs, for one call: the
    /// list itself while no iovec is cut (nearly always: one call does
    /// it all), else a copy whose first iovec starts where the last call
    /// stopped.
    fn pending(&self) -> Cow<'a, [libc::iovec]> {
        let end = self.iovecs.len().min(self.at + MAX_IOVECS);
        let rest = &self.iovecs[self.at..end];
        if self.skip == 0 {
            return Cow::Borrowed(rest);
        }
        let mut rest = rest.to_vec();
        rest[0].iov_base = rest[0].iov_base.cast::<u8>().wrapping_add(self.skip).cast();
        rest[0].iov_len -= self.skip;
        Cow::Owned(rest)
    }

    /// `n` more bytes are done.
    fn advance(&mut self, mut n: usize) {
        while self.at < self.iovecs.len() {
            let left = self.iovecs[self.at].iov_len - self.skip;
            if n < left {
                self.skip += n;
                return;
            }
            n -= left;
            self.at += 1;
            self.skip = 0;
        }
    }

    /// Zeroes everything left.
    ///
    /// # Safety
    ///
    /// The iovecs name memory mapped and writable that no Rust reference
    /// covers but one lent for this transfer.
    unsafe fn zero_rest(&mut self) {
        for v in self.pending().iter() {
            // SAFETY: `v` is a part of one of the iovecs, writable for
            // `iov_len` bytes by the caller's promise.
            unsafe { std::ptr::write_bytes(v.iov_base.cast::<u8>(), 0, v.iov_len) };
        }
        self.at = self.iovecs.len();
    }
}

/// One `pread` (one buffer) or `preadv` into `iovecs` at `offset`: the
/// bytes read, none at the end of the file.
///
/// # Safety
///
/// Every iovec names memory mapped and writable for the call that no Rust
/// reference covers but one lent for it.
unsafe fn preadv_at(file: &File, iovecs: &[libc::iovec], offset: u64) -> io::Result<usize> {
    let fd = file.as_raw_fd();
    retry_eintr(|| {
        let offset = to_off(offset)?;
        let n = if let [one] = iovecs {
            // SAFETY: the kernel writes at most `iov_len` bytes at
            // `iov_base`, which the caller keeps writable.
            unsafe { libc::pread(fd, one.iov_base, one.iov_len, offset) }
        } else {
            // SAFETY: as above, for each of the `iovecs.len()` (at most
            // MAX_IOVECS) iovecs the kernel reads from the array.
            unsafe { libc::preadv(fd, iovecs.as_ptr(), iovecs.len() as libc::c_int, offset) }
        };
        Errno::result(n).map(|n| n as usize)
    })
}

/// One `pwrite` (one buffer) or `pwritev` of `iovecs` at `offset`: the
/// bytes written.
///
/// # Safety
///
/// Every iovec names memory mapped and readable for the call.
unsafe fn pwritev_at(file: &File, iovecs: &[libc::iovec], offset: u64) -> io::Result<usize> {
    let fd = file.as_raw_fd();
    retry_eintr(|| {
        let offset = to_off(offset)?;
        let n = if let [one] = iovecs {
            // SAFETY: the kernel reads at most `iov_len` bytes at
            // `iov_base`, which the caller keeps readable.
            unsafe { libc::pwrite(fd, one.iov_base, one.iov_len, offset) }
        } else {
            // SAFETY: as above, for each of the iovecs in the array.
            unsafe { libc::pwritev(fd, iovecs.as_ptr(), iovecs.len() as libc::c_int, offset) }
        };
        Errno::result(n).map(|n| n as usize)
    })
}

fn to_off(value: u64) -> nix::Result<libc::off_t> {
    libc::off_t::try_from(value).map_err(|_| Errno::EOVERFLOW)
}

fn retry_eintr<T>(mut f: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

fn unsupported_if_not_supported(err: io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
            io::Error::new(io::ErrorKind::Unsupported, err)
        }
        _ => err,
    }
}

impl fmt::Debug for ImageFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageFile")
            .field("path", &self.path)
            .field("fd", &self.file.as_raw_fd())
            .field("writable", &self.writable)
            .finish()
    }
}

impl fmt::Display for ImageFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "image file is open read-only",
    )
}

/// imago's view of the file. Only what imago's qcow2 and raw drivers call
/// on an already open storage object is provided; opening and creating by
/// name stay unsupported on purpose.
impl Storage for ImageFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len())
    }

    fn get_filename(&self) -> Option<PathBuf> {
        Some(self.path.clone())
    }

    unsafe fn pure_readv(&self, bufv: IoVectorMut<'_>, offset: u64) -> io::Result<()> {
        let mut slices = bufv.into_inner();
        self.read_vectored_at(&mut slices, offset)
    }

    unsafe fn pure_writev(&self, bufv: IoVector<'_>, offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(read_only());
        }
        let slices = bufv.into_inner();
        self.write_vectored_at(&slices, offset)
    }

    unsafe fn pure_write_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        if !self.writable {
            return Err(read_only());
        }
        self.zero_range(offset, length)
    }

    unsafe fn pure_write_allocated_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        if !self.writable {
            return Err(read_only());
        }
        let flags = FallocateFlags::FALLOC_FL_ZERO_RANGE;
        match retry_eintr(|| fallocate(self.file.as_fd(), flags, to_off(offset)?, to_off(length)?))
        {
            Ok(()) => {
                self.len.fetch_max(offset + length, Ordering::Relaxed);
                Ok(())
            }
            Err(err) if matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP)) => {
                self.write_zero_data(offset, length)
            }
            Err(err) => Err(err),
        }
    }

    unsafe fn pure_discard(&self, offset: u64, length: u64) -> io::Result<()> {
        if !self.writable {
            return Err(read_only());
        }
        // Discarding is advisory: a file system without hole punching keeps
        // the data, which the contract allows.
        let inside_end = offset.saturating_add(length).min(self.len());
        if offset >= inside_end {
            return Ok(());
        }
        match self.punch_hole(offset, inside_end - offset) {
            Err(err) if err.kind() == io::ErrorKind::Unsupported => Ok(()),
            other => other,
        }
    }

    fn flush(&self) -> io::Result<()> {
        // No buffering above the kernel.
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }

    unsafe fn invalidate_cache(&self) -> io::Result<()> {
        Ok(())
    }

    fn get_storage_helper(&self) -> &CommonStorageHelper {
        &self.helper
    }

    fn resize(&self, new_size: u64, prealloc_mode: PreallocateMode) -> io::Result<()> {
        if !self.writable {
            return Err(read_only());
        }
        match prealloc_mode {
            PreallocateMode::None | PreallocateMode::Zero => self.set_len(new_size),
            _ => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iovec_at(base: *mut u8, at: usize, len: usize) -> libc::iovec {
        libc::iovec {
            iov_base: base.wrapping_add(at).cast(),
            iov_len: len,
        }
    }

    /// The (offset, length) pairs, relative to `base`, that `pending`
    /// names.
    fn ranges(base: *mut u8, pending: &[libc::iovec]) -> Vec<(usize, usize)> {
        pending
            .iter()
            .map(|v| (v.iov_base as usize - base as usize, v.iov_len))
            .collect()
    }

    #[test]
    fn progress_through_cut_and_empty_iovecs() {
        let mut memory = [0u8; 64];
        let base = memory.as_mut_ptr();
        let list = [
            iovec_at(base, 0, 0),
            iovec_at(base, 0, 10),
            iovec_at(base, 10, 0),
            iovec_at(base, 20, 5),
            iovec_at(base, 40, 8),
        ];
        let mut progress = Progress::new(&list);
        assert!(matches!(progress.pending(), Cow::Borrowed(_)));
        assert_eq!(
            ranges(base, &progress.pending()),
            [(0, 10), (10, 0), (20, 5), (40, 8)]
        );
        progress.advance(4);
        assert_eq!(
            ranges(base, &progress.pending()),
            [(4, 6), (10, 0), (20, 5), (40, 8)]
        );
        // The rest of the first iovec: the empty one after it is passed
        // over too.
        progress.advance(6);
        assert_eq!(ranges(base, &progress.pending()), [(20, 5), (40, 8)]);
        progress.advance(7);
        assert_eq!(ranges(base, &progress.pending()), [(42, 6)]);
        // SAFETY: the iovecs name `memory`, untouched until this returns.
        unsafe { memory.as_mut_ptr().write_bytes(0xff, 64) };
        let mut progress = Progress::new(&list);
        progress.advance(12);
        // SAFETY: as above.
        unsafe { progress.zero_rest() };
        assert!(progress.is_done());
        assert_eq!(memory[20..22], [0xff, 0xff]);
        assert_eq!(memory[22..25], [0, 0, 0]);
        assert_eq!(memory[25..40], [0xff; 15]);
        assert_eq!(memory[40..48], [0; 8]);
        assert_eq!(memory[48], 0xff);
    }
}
