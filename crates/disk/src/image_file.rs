//! One open image file: positional vectored I/O, hole punching, and the
//! `Storage` implementation through which imago reaches the file.
//!
//! imago could open files itself, but the VM process may open nothing by
//! path, and imago's own file driver reads past the end of a file as
//! zeroes, which would hide a table that points outside a damaged image.
//! This type works on a descriptor it is given and refuses such reads.

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
use nix::sys::uio::{pread, preadv, pwrite, pwritev};

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
        let mut bufs = bufs;
        let mut offset = offset;
        let wanted: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let start = offset;
        // Skip empty leading buffers so the loop ends when all are full.
        IoSliceMut::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            let count = bufs.len().min(MAX_IOVECS);
            // One buffer (most guest requests): plain pread, which skips
            // the kernel's iovec import.
            let n = if count == 1 {
                retry_eintr(|| pread(self.file.as_fd(), &mut bufs[0], to_off(offset)?))?
            } else {
                retry_eintr(|| preadv(self.file.as_fd(), &mut bufs[..count], to_off(offset)?))?
            };
            if n == 0 {
                let missing = wanted - (offset - start);
                if self.past_eof == PastEof::SectorSlack && missing >= 512 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: read of {wanted} bytes at offset {start} is beyond the end of the file ({} bytes)",
                            self.path.display(),
                            self.len()
                        ),
                    ));
                }
                for buf in bufs.iter_mut() {
                    buf.fill(0);
                }
                return Ok(());
            }
            offset += n as u64;
            IoSliceMut::advance_slices(&mut bufs, n);
        }
        Ok(())
    }

    /// Writes all of `bufs` at `offset`.
    pub(crate) fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(());
        }
        // Empty leading buffers would make the first call write nothing.
        let bufs = &bufs[bufs.iter().take_while(|b| b.is_empty()).count()..];
        // Nearly always one call writes it all, straight from `bufs`.
        let n = self.write_once(&bufs[..bufs.len().min(MAX_IOVECS)], offset)?;
        self.len.fetch_max(offset + n as u64, Ordering::Relaxed);
        if n == total {
            return Ok(());
        }
        // The rest: advance_slices needs a mutable list; the slices
        // themselves are only borrowed.
        let mut owned: Vec<IoSlice<'_>> = bufs.to_vec();
        let mut bufs = &mut owned[..];
        let mut offset = offset + n as u64;
        IoSlice::advance_slices(&mut bufs, n);
        while !bufs.is_empty() {
            let n = self.write_once(&bufs[..bufs.len().min(MAX_IOVECS)], offset)?;
            offset += n as u64;
            self.len.fetch_max(offset, Ordering::Relaxed);
            IoSlice::advance_slices(&mut bufs, n);
        }
        Ok(())
    }

    /// One `pwrite` (one buffer) or `pwritev` of `bufs` at `offset`: the
    /// bytes written, never none.
    fn write_once(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        let n = if let [buf] = bufs {
            retry_eintr(|| pwrite(self.file.as_fd(), buf, to_off(offset)?))?
        } else {
            retry_eintr(|| pwritev(self.file.as_fd(), bufs, to_off(offset)?))?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(n)
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
