//! What a block request chain says, checked against the device's limits.
//!
//! The only code of the block device that reads guest-controlled bytes:
//! the 16-byte header (type, sector), discard/write-zeroes ranges, and the
//! shape of the buffers. The spec lets the driver frame a request any way
//! it likes, so the readable buffers are read as one byte stream (header,
//! then payload) and the writable ones as another (payload, then the
//! status byte at the very end).
//!
//! A request the device can answer but not serve becomes
//! [`Operation::Reject`] with the status to give; only a chain without a
//! status byte is beyond answering ([`DeviceBroken`]).

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use vm_memory::GuestAddress;

use super::{MAX_RANGE_SECTORS, MAX_RANGES, SECTOR_SIZE, SEG_MAX, SIZE_MAX};
use crate::devices::virtio::buffers::{read_bytes, sub_segments};
use crate::devices::virtio::device::DeviceBroken;
use crate::devices::virtio::queue::{Chain, Segment, Segments, total_len};
use crate::memory::GuestMemoryMmap;

const HEADER_LEN: u64 = 16;
const RANGE_LEN: u64 = 16;

/// What the device allows, from its configuration and the negotiated
/// features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub capacity_sectors: u64,
    pub read_only: bool,
    pub discard: bool,
    pub write_zeroes: bool,
}

/// One range of a discard or write-zeroes request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectorRange {
    pub sector: u64,
    pub sectors: u32,
    /// Write-zeroes may deallocate (VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP).
    pub unmap: bool,
}

impl SectorRange {
    pub fn offset(&self) -> u64 {
        self.sector * SECTOR_SIZE
    }

    pub fn len(&self) -> u64 {
        u64::from(self.sectors) * SECTOR_SIZE
    }

    pub fn is_empty(&self) -> bool {
        self.sectors == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Read into `data` (guest buffers) from byte `offset`.
    Read {
        offset: u64,
        data: Segments,
    },
    /// Write `data` at byte `offset`.
    Write {
        offset: u64,
        data: Segments,
    },
    Flush,
    /// Write the serial number into `data`.
    GetId {
        data: Segments,
    },
    Discard(Vec<SectorRange>),
    WriteZeroes(Vec<SectorRange>),
    /// Answer with `status` (IOERR or UNSUPP) without touching the disk.
    Reject {
        status: u8,
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub operation: Operation,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

fn reject(status: u32, why: impl Into<String>) -> Operation {
    Operation::Reject {
        status: status as u8,
        why: why.into(),
    }
}

/// Checks that `[offset, offset + len)` lies on the disk.
fn on_disk(offset_sectors: u64, len: u64, limits: &Limits) -> bool {
    let sectors = len.div_ceil(SECTOR_SIZE);
    offset_sectors
        .checked_add(sectors)
        .is_some_and(|end| end <= limits.capacity_sectors)
}

/// Parses `chain` (already checked by [`crate::devices::virtio::queue`]).
pub fn parse(
    chain: &Chain,
    mem: &GuestMemoryMmap,
    limits: &Limits,
) -> Result<Request, DeviceBroken> {
    let writable_len = chain.writable_len();
    if writable_len == 0 {
        return Err(DeviceBroken(format!(
            "request {} has no status byte",
            chain.head
        )));
    }
    let status_at = sub_segments(&chain.writable, writable_len - 1, 1)[0].addr;
    let data_in = || sub_segments(&chain.writable, 0, writable_len - 1);
    let request = |operation| {
        Ok(Request {
            operation,
            status: status_at,
        })
    };

    let mut header = [0u8; HEADER_LEN as usize];
    if chain.readable_len() < HEADER_LEN || !read_bytes(mem, &chain.readable, &mut header) {
        return request(reject(VIRTIO_BLK_S_IOERR, "request header missing"));
    }
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let data_out = || sub_segments(&chain.readable, HEADER_LEN, u64::MAX);

    let operation = match kind {
        VIRTIO_BLK_T_IN => data_request(sector, data_in(), limits, false),
        VIRTIO_BLK_T_OUT => data_request(sector, data_out(), limits, true),
        VIRTIO_BLK_T_FLUSH => Operation::Flush,
        VIRTIO_BLK_T_GET_ID => Operation::GetId { data: data_in() },
        VIRTIO_BLK_T_DISCARD if limits.discard => ranges_request(mem, &data_out(), limits, false),
        VIRTIO_BLK_T_WRITE_ZEROES if limits.write_zeroes => {
            ranges_request(mem, &data_out(), limits, true)
        }
        other => reject(VIRTIO_BLK_S_UNSUPP, format!("request type {other}")),
    };
    request(operation)
}

fn data_request(sector: u64, data: Segments, limits: &Limits, write: bool) -> Operation {
    let len = total_len(&data);
    if write && limits.read_only {
        return reject(VIRTIO_BLK_S_IOERR, "write to a read-only disk");
    }
    if !len.is_multiple_of(SECTOR_SIZE) {
        return reject(
            VIRTIO_BLK_S_IOERR,
            format!("{len} bytes is not whole sectors"),
        );
    }
    if data.len() > SEG_MAX as usize || data.iter().any(|s| s.len > SIZE_MAX) {
        return reject(
            VIRTIO_BLK_S_IOERR,
            "more buffers or bigger ones than advertised",
        );
    }
    if !on_disk(sector, len, limits) {
        return reject(
            VIRTIO_BLK_S_IOERR,
            format!(
                "sectors {sector}+{} beyond the end of the disk",
                len / SECTOR_SIZE
            ),
        );
    }
    let offset = sector * SECTOR_SIZE;
    if write {
        Operation::Write { offset, data }
    } else {
        Operation::Read { offset, data }
    }
}

fn ranges_request(
    mem: &GuestMemoryMmap,
    data: &[Segment],
    limits: &Limits,
    zeroes: bool,
) -> Operation {
    if limits.read_only {
        return reject(VIRTIO_BLK_S_IOERR, "discard on a read-only disk");
    }
    let len = total_len(data);
    if len == 0 || !len.is_multiple_of(RANGE_LEN) || len / RANGE_LEN > u64::from(MAX_RANGES) {
        return reject(VIRTIO_BLK_S_IOERR, format!("{len} bytes of ranges"));
    }
    let mut bytes = vec![0u8; len as usize];
    if !read_bytes(mem, data, &mut bytes) {
        return reject(VIRTIO_BLK_S_IOERR, "ranges unreadable");
    }
    let mut ranges = Vec::new();
    for raw in bytes.chunks_exact(RANGE_LEN as usize) {
        let sector = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
        let sectors = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
        let flags = u32::from_le_bytes(raw[12..16].try_into().expect("4 bytes"));
        let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
        let known_flags = if zeroes {
            VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
        } else {
            0
        };
        if flags & !known_flags != 0 {
            return reject(VIRTIO_BLK_S_UNSUPP, format!("range flags {flags:#x}"));
        }
        if sectors > MAX_RANGE_SECTORS || !on_disk(sector, u64::from(sectors) * SECTOR_SIZE, limits)
        {
            return reject(VIRTIO_BLK_S_IOERR, format!("range {sector}+{sectors}"));
        }
        ranges.push(SectorRange {
            sector,
            sectors,
            unmap,
        });
    }
    if zeroes {
        Operation::WriteZeroes(ranges)
    } else {
        Operation::Discard(ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_bounds() {
        let limits = Limits {
            capacity_sectors: 100,
            read_only: false,
            discard: true,
            write_zeroes: true,
        };
        assert!(on_disk(99, 512, &limits));
        assert!(!on_disk(99, 1024, &limits));
        assert!(!on_disk(u64::MAX, 512, &limits));
        assert!(on_disk(100, 0, &limits));
    }
}
