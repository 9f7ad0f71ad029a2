//! The SCSI host's I/O-thread side: commands on the request queue run on
//! the CD-ROM unit, task management and notification requests on the
//! control queue are answered, and the event queue's buffers wait for an
//! event (this host has none to report: no hot-plug, and media changes
//! are left to GET EVENT STATUS NOTIFICATION).
//!
//! Commands complete before the next is looked at, so there is never a
//! task to abort: ABORT TASK and the like find nothing and say so.
//!
//! How a command's data maps onto the driver's buffers: data-in goes into
//! the writable bytes after the sense field, up to what the command
//! returns; when the buffers are shorter, what fits is transferred and
//! the response is OVERRUN. The residual is the data buffer's length
//! minus the bytes transferred. A request with both data-out and data-in
//! buffers needs VIRTIO_SCSI_F_INOUT, which is not offered: FAILURE.
//! Nothing here takes data-out, so data-out bytes are left untouched and
//! counted in the residual.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_scsi::{
    VIRTIO_SCSI_S_BAD_TARGET, VIRTIO_SCSI_S_FAILURE, VIRTIO_SCSI_S_FUNCTION_REJECTED,
    VIRTIO_SCSI_S_INCORRECT_LUN, VIRTIO_SCSI_S_OK, VIRTIO_SCSI_S_OVERRUN,
    VIRTIO_SCSI_T_TMF_ABORT_TASK, VIRTIO_SCSI_T_TMF_ABORT_TASK_SET,
    VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET, VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET,
    VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET, VIRTIO_SCSI_T_TMF_QUERY_TASK,
    VIRTIO_SCSI_T_TMF_QUERY_TASK_SET,
};

use super::request::{
    self, Addressee, CommandRequest, ControlRequest, FieldSizes, Parsed, Reply, ReplyArea,
};
use super::sense::Sense;
use super::unit::{CdRom, DataIn};
use super::{CONTROL_QUEUE, EVENT_QUEUE, SEG_MAX, cdb};
use crate::devices::virtio::buffers::{self, sub_segments};
use crate::devices::virtio::device::DeviceBroken;
use crate::devices::virtio::queue::Chain;
use crate::devices::virtio::serve::Requests;
use crate::memory::GuestMemoryMmap;

/// Descriptors accepted in one chain: the two headers, the data buffers,
/// and room for drivers that split a header.
pub const MAX_DESCRIPTORS: usize = SEG_MAX as usize + 4;

/// The task management response "function complete" (virtio 1.x
/// §5.6.6.2; the bindings lack it): the same value as OK.
pub const FUNCTION_COMPLETE: u32 = 0;

/// SCSI status codes (SAM-5 table 46).
pub const STATUS_GOOD: u8 = 0x00;
pub const STATUS_CHECK_CONDITION: u8 = 0x02;

/// `sense_size` and `cdb_size` as the driver last wrote them.
#[derive(Debug)]
pub struct SharedSizes {
    sense: AtomicU32,
    cdb: AtomicU32,
}

impl SharedSizes {
    pub fn new(sizes: FieldSizes) -> SharedSizes {
        SharedSizes {
            sense: AtomicU32::new(sizes.sense),
            cdb: AtomicU32::new(sizes.cdb),
        }
    }

    pub fn get(&self) -> FieldSizes {
        FieldSizes {
            sense: self.sense.load(Ordering::Acquire),
            cdb: self.cdb.load(Ordering::Acquire),
        }
    }

    pub fn set(&self, sizes: FieldSizes) {
        self.sense.store(sizes.sense, Ordering::Release);
        self.cdb.store(sizes.cdb, Ordering::Release);
    }
}

pub struct ScsiHandler {
    pub unit: Arc<Mutex<CdRom>>,
    pub sizes: Arc<SharedSizes>,
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl ScsiHandler {
    fn unit(&self) -> std::sync::MutexGuard<'_, CdRom> {
        self.unit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers a command chain; returns the bytes written into it.
    pub fn command(&self, chain: &Chain, mem: &GuestMemoryMmap) -> Result<u32, DeviceBroken> {
        let request = match request::parse_command(chain, mem, self.sizes.get())? {
            Parsed::Command(r) => r,
            Parsed::Malformed(reply) => {
                return transport_reply(mem, &reply, VIRTIO_SCSI_S_FAILURE, 0);
            }
        };
        let data_in_len = request.data_in_len();
        // The buffer the command's data would use, for the residual.
        let data_len = request.data_out_len.max(data_in_len);
        if request::addressee(&request.lun) != Addressee::Unit {
            return transport_reply(mem, &request.reply, VIRTIO_SCSI_S_BAD_TARGET, data_len);
        }
        if request.data_out_len > 0 && data_in_len > 0 {
            return transport_reply(mem, &request.reply, VIRTIO_SCSI_S_FAILURE, data_len);
        }
        let outcome = cdb::parse(&request.cdb).and_then(|c| self.unit().execute(&c));
        if outcome == Err(Sense::INVALID_OPCODE) {
            tracing::debug!(
                "vioscsi: command {:#04x} not implemented",
                request.cdb.first().copied().unwrap_or(0)
            );
        }
        let (sense, transferred, wanted) = match outcome {
            Err(sense) => (Some(sense), 0, 0),
            Ok(DataIn::None) => (None, 0, 0),
            Ok(DataIn::Bytes(bytes)) => {
                let n = buffers::write_bytes(mem, &request.data_in, &bytes)
                    .map_err(|e| DeviceBroken(format!("data-in: {e}")))?;
                (None, n, bytes.len() as u64)
            }
            Ok(DataIn::Medium { offset, len }) => {
                let n = len.min(data_in_len);
                match self.read_medium(mem, &request, offset, n) {
                    Ok(()) => (None, n, len),
                    Err(e) => {
                        tracing::warn!("cd-rom: reading {len} bytes at {offset}: {e}");
                        (Some(Sense::UNRECOVERED_READ_ERROR), 0, 0)
                    }
                }
            }
        };
        let sense_bytes = sense.map(|s| s.to_fixed());
        let reply = Reply {
            response: if wanted > transferred {
                VIRTIO_SCSI_S_OVERRUN
            } else {
                VIRTIO_SCSI_S_OK
            } as u8,
            status: if sense.is_some() {
                STATUS_CHECK_CONDITION
            } else {
                STATUS_GOOD
            },
            sense: sense_bytes.as_ref().map_or(&[], |s| &s[..]),
            residual: saturate(data_len - transferred),
        };
        let header = request.reply.write(mem, &reply, transferred > 0)?;
        Ok(saturate(header + transferred))
    }

    /// Reads `len` bytes of the image at `offset` into the data-in
    /// buffers; past the end of the image (a last block it only partly
    /// fills) the buffers get zeroes.
    fn read_medium(
        &self,
        mem: &GuestMemoryMmap,
        request: &CommandRequest,
        offset: u64,
        len: u64,
    ) -> std::io::Result<()> {
        let backend = self.unit().backend().clone();
        let on_image = backend.size().saturating_sub(offset).min(len);
        if on_image > 0 {
            let data = sub_segments(&request.data_in, 0, on_image);
            buffers::read_from_backend(backend.as_ref(), mem, offset, &data)?;
        }
        buffers::zero(
            mem,
            &sub_segments(&request.data_in, on_image, len - on_image),
        )
    }

    /// Answers a control chain.
    pub fn control(&self, chain: &Chain, mem: &GuestMemoryMmap) -> Result<u32, DeviceBroken> {
        let broken = |e: std::io::Error| DeviceBroken(format!("control response: {e}"));
        match request::parse_control(chain, mem)? {
            ControlRequest::TaskManagement {
                subtype,
                lun,
                response,
            } => {
                let code = self.task_management(subtype, &lun);
                buffers::write_bytes(mem, &response, &[code as u8]).map_err(broken)?;
                Ok(1)
            }
            ControlRequest::AsyncNotification { lun, reply, .. } => {
                // No asynchronous events are reported: none of those
                // requested is supported.
                let code = match request::addressee(&lun) {
                    Addressee::Unit => VIRTIO_SCSI_S_OK,
                    _ => VIRTIO_SCSI_S_BAD_TARGET,
                };
                let mut bytes = [0u8; 5];
                bytes[4] = code as u8;
                buffers::write_bytes(mem, &reply, &bytes).map_err(broken)?;
                Ok(bytes.len() as u32)
            }
            ControlRequest::Malformed { response, kind } => {
                tracing::debug!("vioscsi: control request of type {kind:#x} refused");
                buffers::write_bytes(mem, &response, &[VIRTIO_SCSI_S_FAILURE as u8])
                    .map_err(broken)?;
                Ok(1)
            }
        }
    }

    /// The response to task management function `subtype` for `lun`.
    fn task_management(&self, subtype: u32, lun: &[u8; 8]) -> u32 {
        let addressee = request::addressee(lun);
        if addressee == Addressee::MissingTarget {
            return VIRTIO_SCSI_S_BAD_TARGET;
        }
        // A nexus reset addresses the target; the rest a logical unit.
        if subtype != VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET && addressee == Addressee::MissingLun {
            return VIRTIO_SCSI_S_INCORRECT_LUN;
        }
        match subtype {
            // Nothing is ever outstanding: the task is not in the task
            // set, the task set is empty.
            VIRTIO_SCSI_T_TMF_ABORT_TASK
            | VIRTIO_SCSI_T_TMF_ABORT_TASK_SET
            | VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET
            | VIRTIO_SCSI_T_TMF_QUERY_TASK
            | VIRTIO_SCSI_T_TMF_QUERY_TASK_SET => FUNCTION_COMPLETE,
            VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET | VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET => {
                self.unit().reset();
                FUNCTION_COMPLETE
            }
            // CLEAR ACA (no ACA is ever established) and unknown ones.
            _ => VIRTIO_SCSI_S_FUNCTION_REJECTED,
        }
    }
}

/// A reply that carries no SCSI status, only a transport response.
fn transport_reply(
    mem: &GuestMemoryMmap,
    area: &ReplyArea,
    response: u32,
    data_len: u64,
) -> Result<u32, DeviceBroken> {
    let reply = Reply {
        response: response as u8,
        status: STATUS_GOOD,
        sense: &[],
        residual: saturate(data_len),
    };
    area.write(mem, &reply, false).map(saturate)
}

impl Requests for ScsiHandler {
    const MAX_DESCRIPTORS: usize = MAX_DESCRIPTORS;

    fn serves(&self, index: usize) -> bool {
        // The buffers stay available for an event; none comes.
        index != EVENT_QUEUE
    }

    fn serve(
        &mut self,
        index: usize,
        chain: &Chain,
        mem: &GuestMemoryMmap,
    ) -> Result<u32, DeviceBroken> {
        if index == CONTROL_QUEUE {
            self.control(chain, mem)
        } else {
            self.command(chain, mem)
        }
    }
}
