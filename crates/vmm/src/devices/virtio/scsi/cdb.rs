//! Command descriptor blocks: the guest's SCSI command bytes turned into
//! a [`Command`], or the sense data that refuses them.
//!
//! This is where every CDB byte is read (and the cargo-fuzz target
//! `scsi_cdb` starts). Layouts are those of SPC-4, SBC-3 and MMC-6; the
//! byte and bit named in a refusal's field pointer are the ones found
//! wrong, so an initiator can tell which field it got wrong.
//!
//! Fields that only matter to real hardware (FUA, DPO, IMMED, the
//! obsolete RelAdr bit) are accepted and ignored; fields asking for
//! something this unit cannot do (protection information, saved mode
//! pages, asynchronous event notification, ACA, linked commands) are
//! refused.

use super::MAX_TRANSFER_BLOCKS;
use super::sense::Sense;

pub mod opcode {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const READ_TOC_PMA_ATIP: u8 = 0x43;
    pub const GET_CONFIGURATION: u8 = 0x46;
    pub const GET_EVENT_STATUS_NOTIFICATION: u8 = 0x4a;
    pub const READ_DISC_INFORMATION: u8 = 0x51;
    pub const READ_TRACK_INFORMATION: u8 = 0x52;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_16: u8 = 0x88;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const READ_12: u8 = 0xa8;
    pub const MECHANISM_STATUS: u8 = 0xbd;
}

/// SERVICE ACTION IN(16)'s READ CAPACITY(16).
const SERVICE_ACTION_READ_CAPACITY_16: u8 = 0x10;

/// Which values MODE SENSE reports (SPC-4 table 98).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageControl {
    Current,
    /// A mask of the bits MODE SELECT could change.
    Changeable,
    Default,
}

/// What READ TOC/PMA/ATIP returns (MMC-6 table 478).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TocFormat {
    /// Track descriptors from `track` on, and the lead-out.
    Toc { track: u8 },
    /// The first track of the last session.
    SessionInfo,
    /// The raw Q sub-channel entries of the lead-in.
    FullToc,
}

/// Which features GET CONFIGURATION returns (its RT field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureRequest {
    /// Every feature from the starting number on.
    All,
    /// Only current ones.
    Current,
    /// Only the feature named by the starting number.
    One,
}

/// How READ TRACK INFORMATION names the track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackAddress {
    /// The track containing this block.
    Lba(u32),
    /// A track number (0 is the lead-in, 0xff the invisible track).
    Track(u32),
    /// The first track of a session number.
    Session(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    TestUnitReady,
    RequestSense {
        allocation: u32,
    },
    Inquiry {
        /// A vital product data page, or the standard data.
        vpd_page: Option<u8>,
        allocation: u32,
    },
    ModeSense {
        /// MODE SENSE(10)'s 8-byte header rather than (6)'s 4 bytes.
        ten: bool,
        control: PageControl,
        page: u8,
        subpage: u8,
        block_descriptors: bool,
        allocation: u32,
    },
    StartStopUnit {
        load_eject: bool,
        start: bool,
        /// A power condition other than "start valid": LoEj and Start
        /// are then ignored.
        power_condition: u8,
    },
    PreventAllowMediumRemoval {
        prevent: bool,
    },
    ReadCapacity10,
    ReadCapacity16 {
        allocation: u32,
    },
    Read {
        lba: u64,
        blocks: u32,
    },
    ReadToc {
        format: TocFormat,
        msf: bool,
        allocation: u32,
    },
    GetConfiguration {
        request: FeatureRequest,
        start: u16,
        allocation: u32,
    },
    GetEventStatusNotification {
        /// Bit n asks for event class n.
        classes: u8,
        allocation: u32,
    },
    ReadDiscInformation {
        allocation: u32,
    },
    ReadTrackInformation {
        address: TrackAddress,
        allocation: u32,
    },
    MechanismStatus {
        allocation: u32,
    },
    ReportLuns {
        select: u8,
        allocation: u32,
    },
}

/// The CDB's length from its operation code's group (SPC-4 §4.2.5.1);
/// `None` for the reserved and vendor-specific groups.
pub fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// Reads the fields of a CDB that is at least its group's length.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u8(&self, i: usize) -> u8 {
        self.0[i]
    }

    fn bit(&self, i: usize, bit: u8) -> bool {
        self.0[i] >> bit & 1 != 0
    }

    fn be16(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.0[i], self.0[i + 1]])
    }

    fn be32(&self, i: usize) -> u32 {
        u32::from_be_bytes(self.0[i..i + 4].try_into().expect("4 bytes"))
    }

    fn be64(&self, i: usize) -> u64 {
        u64::from_be_bytes(self.0[i..i + 8].try_into().expect("8 bytes"))
    }
}

/// Parses `cdb`, the bytes the driver put in the request's CDB field
/// (longer than the command is fine: the rest is padding).
pub fn parse(cdb: &[u8]) -> Result<Command, Sense> {
    use opcode::*;
    let Some(&op) = cdb.first() else {
        return Err(Sense::INVALID_FIELD_IN_CDB);
    };
    let Some(len) = cdb_len(op) else {
        return Err(Sense::INVALID_OPCODE);
    };
    if !is_implemented(op) {
        return Err(Sense::INVALID_OPCODE);
    }
    if cdb.len() < len {
        // The driver's CDB field is shorter than this command.
        return Err(Sense::INVALID_FIELD_IN_CDB);
    }
    let f = Fields(&cdb[..len]);
    check_control(&f, len - 1)?;
    let command = match op {
        TEST_UNIT_READY => Command::TestUnitReady,
        REQUEST_SENSE => {
            // Descriptor-format sense is not implemented (SPC-4: then
            // the DESC bit is an invalid field).
            if f.bit(1, 0) {
                return Err(Sense::invalid_field(1, Some(0)));
            }
            Command::RequestSense {
                allocation: f.u8(4).into(),
            }
        }
        READ_6 => {
            let lba = u64::from(f.u8(1) & 0x1f) << 16 | u64::from(f.be16(2));
            // Zero means 256 blocks in READ(6) (SBC-3 §5.11).
            let blocks = match f.u8(4) {
                0 => 256,
                n => n.into(),
            };
            Command::Read { lba, blocks }
        }
        INQUIRY => {
            // CMDDT: obsolete, refused as SPC-4 asks.
            if f.bit(1, 1) {
                return Err(Sense::invalid_field(1, Some(1)));
            }
            let evpd = f.bit(1, 0);
            let page = f.u8(2);
            if !evpd && page != 0 {
                return Err(Sense::invalid_field(2, None));
            }
            Command::Inquiry {
                vpd_page: evpd.then_some(page),
                allocation: f.be16(3).into(),
            }
        }
        MODE_SENSE_6 | MODE_SENSE_10 => {
            let control = match f.u8(2) >> 6 {
                0 => PageControl::Current,
                1 => PageControl::Changeable,
                2 => PageControl::Default,
                _ => return Err(Sense::SAVING_NOT_SUPPORTED),
            };
            let ten = op == MODE_SENSE_10;
            Command::ModeSense {
                ten,
                control,
                page: f.u8(2) & 0x3f,
                subpage: f.u8(3),
                block_descriptors: !f.bit(1, 3),
                allocation: if ten {
                    f.be16(7).into()
                } else {
                    f.u8(4).into()
                },
            }
        }
        START_STOP_UNIT => {
            let power_condition = f.u8(4) >> 4;
            // The values MMC-6 table 594 defines; the rest are reserved.
            if !matches!(power_condition, 0x0..=0x3 | 0x5 | 0x7 | 0xa | 0xb) {
                return Err(Sense::invalid_field(4, Some(7)));
            }
            Command::StartStopUnit {
                load_eject: f.bit(4, 1),
                start: f.bit(4, 0),
                power_condition,
            }
        }
        PREVENT_ALLOW_MEDIUM_REMOVAL => Command::PreventAllowMediumRemoval {
            // Bit 1 makes the prevention persistent across resets in
            // MMC; this unit has no resets to persist across.
            prevent: f.bit(4, 0),
        },
        READ_CAPACITY_10 => {
            // Without PMI the LBA field must be zero (SBC-3 §5.15).
            if !f.bit(8, 0) && f.be32(2) != 0 {
                return Err(Sense::invalid_field(2, None));
            }
            Command::ReadCapacity10
        }
        READ_10 => read(&f, u64::from(f.be32(2)), (f.be16(7).into(), 7))?,
        READ_12 => read(&f, u64::from(f.be32(2)), (f.be32(6), 6))?,
        READ_16 => read(&f, f.be64(2), (f.be32(10), 10))?,
        SERVICE_ACTION_IN_16 => {
            if f.u8(1) & 0x1f != SERVICE_ACTION_READ_CAPACITY_16 {
                return Err(Sense::invalid_field(1, Some(4)));
            }
            if !f.bit(14, 0) && f.be64(2) != 0 {
                return Err(Sense::invalid_field(2, None));
            }
            Command::ReadCapacity16 {
                allocation: f.be32(10),
            }
        }
        READ_TOC_PMA_ATIP => {
            let mut format = f.u8(2) & 0x0f;
            // Drivers written for SFF-8020 put the format in the top bits
            // of the last byte instead.
            if format == 0 {
                format = f.u8(9) >> 6;
            }
            let format = match format {
                0 => TocFormat::Toc { track: f.u8(6) },
                1 => TocFormat::SessionInfo,
                2 => TocFormat::FullToc,
                // PMA, ATIP and CD-TEXT exist only on recordable media
                // and audio discs.
                _ => return Err(Sense::invalid_field(2, Some(3))),
            };
            Command::ReadToc {
                format,
                msf: f.bit(1, 1),
                allocation: f.be16(7).into(),
            }
        }
        GET_CONFIGURATION => {
            let request = match f.u8(1) & 0x3 {
                0 => FeatureRequest::All,
                1 => FeatureRequest::Current,
                2 => FeatureRequest::One,
                _ => return Err(Sense::invalid_field(1, Some(1))),
            };
            Command::GetConfiguration {
                request,
                start: f.be16(2),
                allocation: f.be16(7).into(),
            }
        }
        GET_EVENT_STATUS_NOTIFICATION => {
            // Only polling: asynchronous notification needs a transport
            // this device does not have.
            if !f.bit(1, 0) {
                return Err(Sense::invalid_field(1, Some(0)));
            }
            Command::GetEventStatusNotification {
                classes: f.u8(4),
                allocation: f.be16(7).into(),
            }
        }
        READ_DISC_INFORMATION => {
            // Only the standard disc information; track and POW
            // resources describe recordable media.
            if f.u8(1) & 0x7 != 0 {
                return Err(Sense::invalid_field(1, Some(2)));
            }
            Command::ReadDiscInformation {
                allocation: f.be16(7).into(),
            }
        }
        READ_TRACK_INFORMATION => {
            let number = f.be32(2);
            let address = match f.u8(1) & 0x3 {
                0 => TrackAddress::Lba(number),
                1 => TrackAddress::Track(number),
                2 => TrackAddress::Session(number),
                _ => return Err(Sense::invalid_field(1, Some(1))),
            };
            Command::ReadTrackInformation {
                address,
                allocation: f.be16(7).into(),
            }
        }
        MECHANISM_STATUS => Command::MechanismStatus {
            allocation: f.be16(8).into(),
        },
        REPORT_LUNS => {
            let allocation = f.be32(6);
            // SPC-4 §6.33: less than room for the header is an error.
            if allocation < 16 {
                return Err(Sense::invalid_field(6, None));
            }
            Command::ReportLuns {
                select: f.u8(2),
                allocation,
            }
        }
        _ => unreachable!("is_implemented lists every operation code matched here"),
    };
    Ok(command)
}

fn is_implemented(op: u8) -> bool {
    use opcode::*;
    matches!(
        op,
        TEST_UNIT_READY
            | REQUEST_SENSE
            | READ_6
            | INQUIRY
            | MODE_SENSE_6
            | START_STOP_UNIT
            | PREVENT_ALLOW_MEDIUM_REMOVAL
            | READ_CAPACITY_10
            | READ_10
            | READ_TOC_PMA_ATIP
            | GET_CONFIGURATION
            | GET_EVENT_STATUS_NOTIFICATION
            | READ_DISC_INFORMATION
            | READ_TRACK_INFORMATION
            | MODE_SENSE_10
            | READ_16
            | SERVICE_ACTION_IN_16
            | REPORT_LUNS
            | READ_12
            | MECHANISM_STATUS
    )
}

/// The control byte (SPC-4 §4.2.5.3): NACA asks for auto contingent
/// allegiance and LINK for linked commands; this unit has neither.
fn check_control(f: &Fields<'_>, at: usize) -> Result<(), Sense> {
    for bit in [2, 0] {
        if f.bit(at, bit) {
            return Err(Sense::invalid_field(at as u16, Some(bit)));
        }
    }
    Ok(())
}

/// READ(10/12/16), whose transfer length is at byte `length_at`:
/// protection information cannot be checked on a disc that has none
/// (RDPROTECT, SBC-3 §5.10), and no transfer may exceed
/// [`MAX_TRANSFER_BLOCKS`].
fn read(f: &Fields<'_>, lba: u64, (blocks, length_at): (u32, u16)) -> Result<Command, Sense> {
    if f.u8(1) >> 5 != 0 {
        return Err(Sense::invalid_field(1, Some(7)));
    }
    if blocks > MAX_TRANSFER_BLOCKS {
        return Err(Sense::invalid_field(length_at, None));
    }
    Ok(Command::Read { lba, blocks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdb(bytes: &[u8]) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v.resize(32, 0);
        v
    }

    #[test]
    fn reads_of_every_size() {
        assert_eq!(
            parse(&cdb(&[0x08, 0x1f, 0xff, 0xfe, 0])),
            Ok(Command::Read {
                lba: 0x1f_fffe,
                blocks: 256
            })
        );
        assert_eq!(
            parse(&cdb(&[0x28, 0x08, 0, 0, 1, 2, 0, 0, 3])),
            Ok(Command::Read {
                lba: 258,
                blocks: 3
            }),
            "FUA is ignored"
        );
        assert_eq!(
            parse(&cdb(&[0xa8, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x40, 0])),
            Ok(Command::Read {
                lba: u64::from(u32::MAX),
                blocks: MAX_TRANSFER_BLOCKS
            })
        );
        assert_eq!(
            parse(&cdb(&[0xa8, 0, 0, 0, 0, 0, 0, 0, 0x40, 1])),
            Err(Sense::invalid_field(6, None)),
            "more than the largest transfer"
        );
        let mut r16 = cdb(&[0x88, 0]);
        r16[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        r16[10..14].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(
            parse(&r16),
            Ok(Command::Read {
                lba: u64::MAX,
                blocks: 7
            })
        );
        assert_eq!(
            parse(&cdb(&[0x28, 0x20])),
            Err(Sense::invalid_field(1, Some(7))),
            "RDPROTECT"
        );
    }

    #[test]
    fn unknown_and_reserved_operation_codes() {
        for op in [0x0a, 0x2a, 0x35, 0xbe, 0x15, 0x55, 0x60, 0x7f, 0xc0, 0xff] {
            assert_eq!(parse(&cdb(&[op])), Err(Sense::INVALID_OPCODE), "{op:#x}");
        }
        assert_eq!(parse(&[]), Err(Sense::INVALID_FIELD_IN_CDB));
        assert_eq!(
            parse(&[0x28, 0, 0, 0, 0, 0]),
            Err(Sense::INVALID_FIELD_IN_CDB),
            "10-byte command in a 6-byte field"
        );
        assert_eq!(parse(&[0x00; 6]), Ok(Command::TestUnitReady));
    }

    #[test]
    fn control_byte_naca_and_link() {
        assert_eq!(
            parse(&cdb(&[0, 0, 0, 0, 0, 0x04])),
            Err(Sense::invalid_field(5, Some(2)))
        );
        let mut c = cdb(&[0x28]);
        c[9] = 0x01;
        assert_eq!(parse(&c), Err(Sense::invalid_field(9, Some(0))));
    }

    #[test]
    fn inquiry_fields() {
        assert_eq!(
            parse(&cdb(&[0x12, 0, 0, 0x01, 0x00])),
            Ok(Command::Inquiry {
                vpd_page: None,
                allocation: 256
            })
        );
        assert_eq!(
            parse(&cdb(&[0x12, 1, 0x83, 0, 0xff])),
            Ok(Command::Inquiry {
                vpd_page: Some(0x83),
                allocation: 255
            })
        );
        assert_eq!(
            parse(&cdb(&[0x12, 0, 0x80, 0, 0xff])),
            Err(Sense::invalid_field(2, None))
        );
        assert_eq!(
            parse(&cdb(&[0x12, 2, 0, 0, 0xff])),
            Err(Sense::invalid_field(1, Some(1)))
        );
    }

    #[test]
    fn mode_sense_fields() {
        assert_eq!(
            parse(&cdb(&[0x5a, 0x08, 0x6a, 0, 0, 0, 0, 0x01, 0x00])),
            Ok(Command::ModeSense {
                ten: true,
                control: PageControl::Changeable,
                page: 0x2a,
                subpage: 0,
                block_descriptors: false,
                allocation: 256
            })
        );
        assert_eq!(
            parse(&cdb(&[0x1a, 0, 0xbf, 0xff, 0x40])),
            Ok(Command::ModeSense {
                ten: false,
                control: PageControl::Default,
                page: 0x3f,
                subpage: 0xff,
                block_descriptors: true,
                allocation: 0x40
            })
        );
        assert_eq!(
            parse(&cdb(&[0x1a, 0, 0xc1, 0, 0x40])),
            Err(Sense::SAVING_NOT_SUPPORTED)
        );
    }

    #[test]
    fn read_capacity_and_service_actions() {
        assert_eq!(parse(&cdb(&[0x25])), Ok(Command::ReadCapacity10));
        assert_eq!(
            parse(&cdb(&[0x25, 0, 0, 0, 0, 1])),
            Err(Sense::invalid_field(2, None))
        );
        assert_eq!(
            parse(&cdb(&[0x25, 0, 0, 0, 0, 1, 0, 0, 1])),
            Ok(Command::ReadCapacity10),
            "PMI allows an LBA"
        );
        let mut rc16 = cdb(&[0x9e, 0x10]);
        rc16[13] = 32;
        assert_eq!(parse(&rc16), Ok(Command::ReadCapacity16 { allocation: 32 }));
        assert_eq!(
            parse(&cdb(&[0x9e, 0x11])),
            Err(Sense::invalid_field(1, Some(4)))
        );
    }

    #[test]
    fn mmc_fields() {
        assert_eq!(
            parse(&cdb(&[0x43, 0x02, 0x00, 0, 0, 0, 0xaa, 0x03, 0x24])),
            Ok(Command::ReadToc {
                format: TocFormat::Toc { track: 0xaa },
                msf: true,
                allocation: 0x324
            })
        );
        assert_eq!(
            parse(&cdb(&[0x43, 0, 0, 0, 0, 0, 0, 0, 12, 0x40])),
            Ok(Command::ReadToc {
                format: TocFormat::SessionInfo,
                msf: false,
                allocation: 12
            }),
            "format in the control byte"
        );
        assert_eq!(
            parse(&cdb(&[0x43, 0, 4])),
            Err(Sense::invalid_field(2, Some(3)))
        );
        assert_eq!(
            parse(&cdb(&[0x46, 2, 0, 0x1e, 0, 0, 0, 0, 8])),
            Ok(Command::GetConfiguration {
                request: FeatureRequest::One,
                start: 0x1e,
                allocation: 8
            })
        );
        assert_eq!(
            parse(&cdb(&[0x46, 3])),
            Err(Sense::invalid_field(1, Some(1)))
        );
        assert_eq!(
            parse(&cdb(&[0x4a, 0, 0, 0, 0x10, 0, 0, 0, 8])),
            Err(Sense::invalid_field(1, Some(0))),
            "asynchronous GESN"
        );
        assert_eq!(
            parse(&cdb(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8])),
            Ok(Command::GetEventStatusNotification {
                classes: 0x10,
                allocation: 8
            })
        );
        assert_eq!(
            parse(&cdb(&[0x51, 1])),
            Err(Sense::invalid_field(1, Some(2)))
        );
        assert_eq!(
            parse(&cdb(&[0x52, 1, 0, 0, 0, 1, 0, 0, 36])),
            Ok(Command::ReadTrackInformation {
                address: TrackAddress::Track(1),
                allocation: 36
            })
        );
        assert_eq!(
            parse(&cdb(&[0x1b, 1, 0, 0, 0x02])),
            Ok(Command::StartStopUnit {
                load_eject: true,
                start: false,
                power_condition: 0
            })
        );
        assert_eq!(
            parse(&cdb(&[0x1b, 0, 0, 0, 0x40])),
            Err(Sense::invalid_field(4, Some(7))),
            "reserved power condition"
        );
        assert_eq!(
            parse(&cdb(&[0x1e, 0, 0, 0, 0x01])),
            Ok(Command::PreventAllowMediumRemoval { prevent: true })
        );
        assert_eq!(
            parse(&cdb(&[0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8])),
            Ok(Command::MechanismStatus { allocation: 8 })
        );
    }

    #[test]
    fn report_luns_needs_room_for_the_header() {
        assert_eq!(
            parse(&cdb(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 15])),
            Err(Sense::invalid_field(6, None))
        );
        assert_eq!(
            parse(&cdb(&[0xa0, 0, 2, 0, 0, 0, 0, 0, 1, 0])),
            Ok(Command::ReportLuns {
                select: 2,
                allocation: 256
            })
        );
    }
}
