//! Copying one virtual disk into another (`vmctl create -i`).
//!
//! The copy runs over the destination in 64 KiB chunks (vmctl(8), create).
//! A chunk that is entirely zero is not written, so a fresh destination
//! stays sparse (raw) or unallocated (qcow2). Ranges the source reports as
//! zero ([`BlockStatus::Zero`]: holes, unallocated clusters) are skipped
//! without being read at all; the rest is read in large batches and
//! scanned. Bytes past the end of the source read as zero.

use std::fmt;
use std::io;

use crate::backend::{BlockBackend, BlockStatus};

/// The unit in which zero data is detected and skipped.
pub const CHUNK: u64 = 64 * 1024;
/// How much is read with one request.
const BATCH: u64 = 4 * 1024 * 1024;

/// Which side of a conversion failed.
#[derive(Debug)]
pub enum ConvertError {
    Read(io::Error),
    Write(io::Error),
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::Read(err) => write!(f, "read from source: {err}"),
            ConvertError::Write(err) => write!(f, "write to destination: {err}"),
        }
    }
}

impl std::error::Error for ConvertError {}

/// Copies `source` into the freshly created (all-zero) `dest`, over the
/// whole of `dest`, then flushes `dest`. `progress(done, total)` is called
/// as the copy advances (bytes of `dest`).
pub fn convert(
    source: &dyn BlockBackend,
    dest: &dyn BlockBackend,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), ConvertError> {
    let total = dest.size();
    // Past the end of the source everything is zero, and so is `dest`.
    let end = source.size().min(total);
    let mut buf = vec![0u8; BATCH as usize];
    let mut offset = 0;
    progress(0, total);
    while offset < end {
        let (status, len) = source
            .block_status(offset, end - offset)
            .map_err(ConvertError::Read)?;
        if status == BlockStatus::Zero {
            // Skip whole chunks only; a chunk the zero range ends inside
            // is read and scanned like data.
            let zero_end = offset + len;
            let next = if zero_end >= end {
                end
            } else {
                zero_end / CHUNK * CHUNK
            };
            if next > offset {
                offset = next;
                progress(offset, total);
                continue;
            }
        }
        let data_end = (offset + len.max(1)).next_multiple_of(CHUNK);
        let batch_end = data_end.min(offset + BATCH).min(end);
        let batch = &mut buf[..(batch_end - offset) as usize];
        source.read_at(batch, offset).map_err(ConvertError::Read)?;
        write_nonzero_chunks(dest, batch, offset).map_err(ConvertError::Write)?;
        offset = batch_end;
        progress(offset, total);
    }
    dest.flush().map_err(ConvertError::Write)?;
    progress(total, total);
    Ok(())
}

/// Writes the chunks of `batch` (which starts at the chunk-aligned
/// `offset`) that are not all zero, joining neighbours into one write.
fn write_nonzero_chunks(dest: &dyn BlockBackend, batch: &[u8], offset: u64) -> io::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut pos = 0;
    for chunk in batch.chunks(CHUNK as usize) {
        let zero = is_zero(chunk);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(start)) => {
                dest.write_at(&batch[start..pos], offset + start as u64)?;
                run_start = None;
            }
            _ => {}
        }
        pos += chunk.len();
    }
    if let Some(start) = run_start {
        dest.write_at(&batch[start..], offset + start as u64)?;
    }
    Ok(())
}

/// True when every byte is zero. ORs 64-byte blocks together, which the
/// compiler turns into vector instructions, and stops at the first block
/// with a set bit.
pub fn is_zero(buf: &[u8]) -> bool {
    let mut blocks = buf.chunks_exact(64);
    blocks
        .by_ref()
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
        && blocks.remainder().iter().all(|&b| b == 0)
}
