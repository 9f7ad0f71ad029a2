//! The virtio-scsi framing of requests (virtio 1.x §5.6.6): where in a
//! chain the header, the CDB, the response, the sense and the data are,
//! and writing the response back. The header bytes of every chain on the
//! control and request queues are read here; the CDB goes on to
//! [`super::cdb`].
//!
//! A command request is two byte streams (see
//! [`buffers`]): the readable one holds
//! the LUN, tag, task attributes, priority, CRN and `cdb_size` bytes of
//! CDB, then any data-out; the writable one holds the 12-byte response
//! header, `sense_size` bytes of sense, then any data-in. `cdb_size` and
//! `sense_size` are the driver's (device configuration); the default is
//! 32 and 96.
//!
//! A request whose header is short is answered with the response code
//! FAILURE; only a chain with no room for a response is beyond answering
//! ([`DeviceBroken`]).

use virtio_bindings::virtio_scsi::{
    VIRTIO_SCSI_T_AN_QUERY, VIRTIO_SCSI_T_AN_SUBSCRIBE, VIRTIO_SCSI_T_TMF,
};

use crate::devices::virtio::buffers::{self, read_bytes, sub_segments};
use crate::devices::virtio::device::DeviceBroken;
use crate::devices::virtio::queue::{Chain, Segments, total_len};
use crate::memory::GuestMemoryMmap;

/// LUN (8), tag (8), task attribute, priority, CRN.
pub const COMMAND_HEADER_LEN: u64 = 19;
/// Sense length (4), residual (4), status qualifier (2), status,
/// response.
pub const RESPONSE_HEADER_LEN: u64 = 12;
/// CDB bytes looked at: the longest command this unit knows has 16, and
/// the spec's default field has 32.
pub const CDB_BYTES: usize = 32;
/// Type (4), subtype (4), LUN (8), tag (8).
pub const TMF_LEN: u64 = 24;
/// Type (4), LUN (8), events requested (4).
pub const AN_LEN: u64 = 16;
/// Events actual (4), response.
pub const AN_RESPONSE_LEN: u64 = 5;

/// The sizes of the fields the driver may change in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSizes {
    pub sense: u32,
    pub cdb: u32,
}

/// Whom the 8-byte LUN field of a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressee {
    /// Target 0, LUN 0: the CD-ROM.
    Unit,
    /// Target 0, another LUN.
    MissingLun,
    /// Another target, or a field that is not a virtio-scsi address.
    MissingTarget,
}

/// Decodes a LUN field (virtio 1.x §5.6.6.1): byte 0 is 1, byte 1 the
/// target, bytes 2..4 a single-level LUN in the peripheral (00b) or
/// flat (01b) addressing method of SAM, bytes 4..8 zero.
pub fn addressee(lun: &[u8; 8]) -> Addressee {
    if lun[0] != 1 || lun[1] != 0 {
        return Addressee::MissingTarget;
    }
    let level = u16::from_be_bytes([lun[2], lun[3]]);
    let method = level >> 14;
    let number = level & 0x3fff;
    if method > 1 || number != 0 || lun[4..].iter().any(|&b| b != 0) {
        return Addressee::MissingLun;
    }
    Addressee::Unit
}

/// A command request's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    pub lun: [u8; 8],
    /// The first bytes of the CDB field (fewer if the field is smaller).
    pub cdb: Vec<u8>,
    /// Bytes of data-out the driver sent.
    pub data_out_len: u64,
    pub reply: ReplyArea,
    pub data_in: Segments,
}

impl CommandRequest {
    pub fn data_in_len(&self) -> u64 {
        total_len(&self.data_in)
    }
}

/// Where the response header and the sense go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyArea {
    header: Segments,
    sense: Segments,
}

/// What the device answers a command with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// A VIRTIO_SCSI_S_* code.
    pub response: u8,
    /// The SCSI status.
    pub status: u8,
    pub sense: &'a [u8],
    pub residual: u32,
}

/// The parts of a command chain, or a reply area for a chain whose header
/// cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Command(CommandRequest),
    Malformed(ReplyArea),
}

fn no_room(chain: &Chain, what: &str) -> DeviceBroken {
    DeviceBroken(format!("request {} has no room for {what}", chain.head))
}

/// Splits a command chain (already checked by
/// [`crate::devices::virtio::queue`]).
pub fn parse_command(
    chain: &Chain,
    mem: &GuestMemoryMmap,
    sizes: FieldSizes,
) -> Result<Parsed, DeviceBroken> {
    let writable = chain.writable_len();
    if writable < RESPONSE_HEADER_LEN {
        return Err(no_room(chain, "a response"));
    }
    let sense_size = u64::from(sizes.sense);
    let reply = ReplyArea {
        header: sub_segments(&chain.writable, 0, RESPONSE_HEADER_LEN),
        sense: sub_segments(&chain.writable, RESPONSE_HEADER_LEN, sense_size),
    };
    let cdb_size = u64::from(sizes.cdb);
    let header_len = COMMAND_HEADER_LEN + cdb_size;
    let mut header =
        vec![0u8; COMMAND_HEADER_LEN as usize + cdb_size.min(CDB_BYTES as u64) as usize];
    if chain.readable_len() < header_len || !read_bytes(mem, &chain.readable, &mut header) {
        return Ok(Parsed::Malformed(reply));
    }
    let lun: [u8; 8] = header[0..8].try_into().expect("8 bytes");
    Ok(Parsed::Command(CommandRequest {
        lun,
        cdb: header[COMMAND_HEADER_LEN as usize..].to_vec(),
        data_out_len: chain.readable_len() - header_len,
        reply,
        data_in: sub_segments(&chain.writable, RESPONSE_HEADER_LEN + sense_size, u64::MAX),
    }))
}

impl ReplyArea {
    /// Writes `reply`; returns the bytes of the response header and
    /// sense written. With `data_follows`, the rest of the sense field is
    /// zeroed, so the used length may count everything up to the data.
    pub fn write(
        &self,
        mem: &GuestMemoryMmap,
        reply: &Reply<'_>,
        data_follows: bool,
    ) -> Result<u64, DeviceBroken> {
        let broken = |e: std::io::Error| DeviceBroken(format!("writing a response: {e}"));
        let sense_written = buffers::write_bytes(mem, &self.sense, reply.sense).map_err(broken)?;
        if data_follows {
            buffers::zero(mem, &sub_segments(&self.sense, sense_written, u64::MAX))
                .map_err(broken)?;
        }
        let mut header = [0u8; RESPONSE_HEADER_LEN as usize];
        header[0..4].copy_from_slice(&(sense_written as u32).to_le_bytes());
        header[4..8].copy_from_slice(&reply.residual.to_le_bytes());
        // Status qualifier (8..10) stays 0.
        header[10] = reply.status;
        header[11] = reply.response;
        buffers::write_bytes(mem, &self.header, &header).map_err(broken)?;
        let sense = if data_follows {
            total_len(&self.sense)
        } else {
            sense_written
        };
        Ok(RESPONSE_HEADER_LEN + sense)
    }
}

/// A request on the control queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// A task management function.
    TaskManagement {
        subtype: u32,
        lun: [u8; 8],
        response: Segments,
    },
    /// AN_QUERY or AN_SUBSCRIBE.
    AsyncNotification {
        lun: [u8; 8],
        requested: u32,
        reply: Segments,
    },
    /// Too short for its type, or of no known type: the first writable
    /// byte gets the response.
    Malformed { response: Segments, kind: u32 },
}

/// Splits a control chain.
pub fn parse_control(chain: &Chain, mem: &GuestMemoryMmap) -> Result<ControlRequest, DeviceBroken> {
    let writable = chain.writable_len();
    if writable == 0 {
        return Err(no_room(chain, "a response"));
    }
    let readable = chain.readable_len();
    let mut head = [0u8; TMF_LEN as usize];
    let available = readable.min(TMF_LEN) as usize;
    if !read_bytes(mem, &chain.readable, &mut head[..available]) {
        return Err(DeviceBroken(format!(
            "control request {} unreadable",
            chain.head
        )));
    }
    let word = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let first_byte = sub_segments(&chain.writable, 0, 1);
    let kind = if readable >= 4 { word(0) } else { u32::MAX };
    let lun_at = |at: usize| -> [u8; 8] { head[at..at + 8].try_into().expect("8 bytes") };
    let request = match kind {
        VIRTIO_SCSI_T_TMF if readable >= TMF_LEN => ControlRequest::TaskManagement {
            subtype: word(4),
            lun: lun_at(8),
            response: first_byte,
        },
        VIRTIO_SCSI_T_AN_QUERY | VIRTIO_SCSI_T_AN_SUBSCRIBE
            if readable >= AN_LEN && writable >= AN_RESPONSE_LEN =>
        {
            ControlRequest::AsyncNotification {
                lun: lun_at(4),
                requested: word(12),
                reply: sub_segments(&chain.writable, 0, AN_RESPONSE_LEN),
            }
        }
        _ => ControlRequest::Malformed {
            response: first_byte,
            kind,
        },
    };
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_fields() {
        assert_eq!(addressee(&[1, 0, 0x40, 0, 0, 0, 0, 0]), Addressee::Unit);
        assert_eq!(addressee(&[1, 0, 0, 0, 0, 0, 0, 0]), Addressee::Unit);
        assert_eq!(
            addressee(&[1, 0, 0x40, 1, 0, 0, 0, 0]),
            Addressee::MissingLun
        );
        assert_eq!(
            addressee(&[1, 0, 0x80, 0, 0, 0, 0, 0]),
            Addressee::MissingLun
        );
        assert_eq!(
            addressee(&[1, 0, 0x40, 0, 0, 0, 0, 1]),
            Addressee::MissingLun
        );
        assert_eq!(
            addressee(&[1, 1, 0x40, 0, 0, 0, 0, 0]),
            Addressee::MissingTarget
        );
        assert_eq!(addressee(&[0; 8]), Addressee::MissingTarget);
        assert_eq!(
            addressee(&[2, 0, 0, 0, 0, 0, 0, 0]),
            Addressee::MissingTarget
        );
    }
}
