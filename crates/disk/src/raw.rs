//! Raw images: the virtual disk is the file, byte for byte.
//!
//! Requests go straight to `preadv`/`pwritev` on the descriptor with the
//! caller's iovecs; zeroing and discarding punch holes so the file stays
//! sparse.

use std::io;

use nix::unistd::Whence;
use proto::control::DiskFormat;

use crate::backend::{BlockBackend, BlockStatus, check_range, read_only_error};
use crate::image_file::{ImageFile, iovecs_len};

/// A raw image file as a block backend. Its virtual size is the file's
/// length when it was opened.
pub struct RawBackend {
    file: ImageFile,
    size: u64,
}

impl RawBackend {
    pub(crate) fn new(file: ImageFile) -> Self {
        let size = file.len();
        RawBackend { file, size }
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.file.is_writable() {
            Ok(())
        } else {
            Err(read_only_error())
        }
    }
}

impl BlockBackend for RawBackend {
    fn format(&self) -> DiskFormat {
        DiskFormat::Raw
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn is_read_only(&self) -> bool {
        !self.file.is_writable()
    }

    unsafe fn read_iovecs_at(&self, iovecs: &[libc::iovec], offset: u64) -> io::Result<()> {
        check_range(offset, iovecs_len(iovecs), self.size)?;
        // SAFETY: the caller keeps our contract, which is the file's.
        unsafe { self.file.read_iovecs_at(iovecs, offset) }
    }

    unsafe fn write_iovecs_at(&self, iovecs: &[libc::iovec], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        check_range(offset, iovecs_len(iovecs), self.size)?;
        // SAFETY: the caller keeps our contract, which is the file's.
        unsafe { self.file.write_iovecs_at(iovecs, offset) }
    }

    fn flush(&self) -> io::Result<()> {
        if self.file.is_writable() {
            self.file.sync_data()
        } else {
            Ok(())
        }
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_writable()?;
        check_range(offset, len, self.size)?;
        self.file.zero_range(offset, len)
    }

    fn block_status(&self, offset: u64, max_len: u64) -> io::Result<(BlockStatus, u64)> {
        let end = offset.saturating_add(max_len).min(self.size);
        if offset >= end {
            return Ok((BlockStatus::Data, 0));
        }
        // SEEK_DATA from offset: if data starts later, [offset, data) is a
        // hole; otherwise data runs until the next hole.
        let Some(data) = self.file.seek(offset, Whence::SeekData)? else {
            return Ok((BlockStatus::Data, end - offset));
        };
        if data > offset {
            return Ok((BlockStatus::Zero, data.min(end) - offset));
        }
        let hole = self.file.seek(offset, Whence::SeekHole)?.unwrap_or(end);
        Ok((BlockStatus::Data, hole.clamp(offset + 1, end) - offset))
    }
}
