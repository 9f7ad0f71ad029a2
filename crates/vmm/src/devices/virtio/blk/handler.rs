//! The block device's I/O-thread side: each checked request goes to the
//! disk backend with the guest's buffers as the scatter-gather list (no
//! bounce buffer), and its status byte is written back.

use std::sync::Arc;

use disk::BlockBackend;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use vm_memory::Bytes;

use super::request::{self, Limits, Operation, SectorRange};
use super::{ID_BYTES, SEG_MAX};
use crate::devices::virtio::buffers;
use crate::devices::virtio::device::DeviceBroken;
use crate::devices::virtio::guest::GuestSlice;
use crate::devices::virtio::queue::{self, Chain, Segment};
use crate::devices::virtio::serve::Requests;
use crate::memory::GuestMemoryMmap;

/// Descriptors accepted in one chain: header, data buffers, status, and
/// room for drivers that split the header or status.
pub const MAX_DESCRIPTORS: usize = SEG_MAX as usize + 4;

pub struct BlkHandler {
    pub backend: Arc<dyn BlockBackend>,
    pub limits: Limits,
    pub serial: [u8; ID_BYTES],
    pub name: String,
}

impl BlkHandler {
    fn read(&self, mem: &GuestMemoryMmap, offset: u64, data: &[Segment]) -> std::io::Result<()> {
        buffers::read_from_backend(self.backend.as_ref(), mem, offset, data)
    }

    fn write(&self, mem: &GuestMemoryMmap, offset: u64, data: &[Segment]) -> std::io::Result<()> {
        buffers::write_to_backend(self.backend.as_ref(), mem, offset, data)
    }

    fn get_id(&self, mem: &GuestMemoryMmap, data: &[Segment]) -> std::io::Result<u64> {
        buffers::write_bytes(mem, data, &self.serial)
    }

    fn ranges(&self, ranges: &[SectorRange], zeroes: bool) -> std::io::Result<()> {
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            if zeroes && !r.unmap {
                self.backend.write_zeroes(r.offset(), r.len())?;
            } else {
                // Discard, and write-zeroes that may unmap: the backend
                // promises zeroes afterwards either way.
                self.backend.discard(r.offset(), r.len())?;
            }
        }
        Ok(())
    }

    /// Serves one chain; returns the bytes written into it.
    pub fn serve(&self, chain: &Chain, mem: &GuestMemoryMmap) -> Result<u32, DeviceBroken> {
        let request = request::parse(chain, mem, &self.limits)?;
        let (result, data_written) = match &request.operation {
            Operation::Read { offset, data } => {
                (self.read(mem, *offset, data), queue::total_len(data))
            }
            Operation::Write { offset, data } => (self.write(mem, *offset, data), 0),
            Operation::Flush => (self.backend.flush(), 0),
            Operation::GetId { data } => match self.get_id(mem, data) {
                Ok(n) => (Ok(()), n),
                Err(e) => (Err(e), 0),
            },
            Operation::Discard(ranges) => (self.ranges(ranges, false), 0),
            Operation::WriteZeroes(ranges) => (self.ranges(ranges, true), 0),
            Operation::Reject { status, why } => {
                tracing::debug!("{}: request refused: {why}", self.name);
                return write_status(mem, request.status, *status).map(|()| 1);
            }
        };
        let status = match result {
            Ok(()) => VIRTIO_BLK_S_OK,
            Err(e) => {
                tracing::warn!("{}: {:?} failed: {e}", self.name, request.operation);
                VIRTIO_BLK_S_IOERR
            }
        } as u8;
        write_status(mem, request.status, status)?;
        Ok((data_written + 1).min(u64::from(u32::MAX)) as u32)
    }
}

fn write_status(
    mem: &GuestMemoryMmap,
    at: vm_memory::GuestAddress,
    status: u8,
) -> Result<(), DeviceBroken> {
    if let Some(host) = GuestSlice::of(mem, at, 1)
        && host.write_at(0, &[status])
    {
        return Ok(());
    }
    mem.write_obj(status, at)
        .map_err(|e| DeviceBroken(format!("status byte at {:#x}: {e}", at.0)))
}

impl Requests for BlkHandler {
    const MAX_DESCRIPTORS: usize = MAX_DESCRIPTORS;

    fn serve(
        &mut self,
        _index: usize,
        chain: &Chain,
        mem: &GuestMemoryMmap,
    ) -> Result<u32, DeviceBroken> {
        BlkHandler::serve(self, chain, mem)
    }
}
