//! Sense data (SPC-4 §4.5): why a command ended in CHECK CONDITION, in
//! the fixed format every initiator understands.
//!
//! The device reports sense with the status in the same response
//! ("autosense"), so no sense is kept for a later REQUEST SENSE.

/// Sense keys (SPC-4 table 48) this unit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SenseKey {
    NoSense = 0x0,
    NotReady = 0x2,
    MediumError = 0x3,
    IllegalRequest = 0x5,
}

/// Where in the CDB the error is (the sense-key specific "field pointer"),
/// so an initiator can tell which field it got wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// Byte of the CDB.
    pub byte: u16,
    /// Bit of that byte, if the error is a single bit or starts at one.
    pub bit: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    /// Additional sense code and qualifier.
    pub asc: u8,
    pub ascq: u8,
    pub field: Option<FieldPointer>,
}

/// Bytes of fixed-format sense data with the sense-key specific bytes.
pub const FIXED_SENSE_LEN: usize = 18;

const RESPONSE_CODE_CURRENT_FIXED: u8 = 0x70;
const SKSV: u8 = 0x80;
const SKS_COMMAND_DATA: u8 = 0x40;
const SKS_BIT_POINTER_VALID: u8 = 0x08;

impl Sense {
    const fn new(key: SenseKey, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            field: None,
        }
    }

    /// Nothing to report (REQUEST SENSE when all is well).
    pub const NO_SENSE: Sense = Sense::new(SenseKey::NoSense, 0x00, 0x00);
    /// 20h/00h: the operation code is not one this unit implements.
    pub const INVALID_OPCODE: Sense = Sense {
        field: Some(FieldPointer { byte: 0, bit: None }),
        ..Sense::new(SenseKey::IllegalRequest, 0x20, 0x00)
    };
    /// 24h/00h without saying where: the CDB is shorter than its
    /// command.
    pub const INVALID_FIELD_IN_CDB: Sense = Sense::new(SenseKey::IllegalRequest, 0x24, 0x00);
    /// 21h/00h: the blocks asked for are not all on the medium.
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(SenseKey::IllegalRequest, 0x21, 0x00);
    /// 39h/00h: MODE SENSE asked for saved values; nothing is saved.
    pub const SAVING_NOT_SUPPORTED: Sense = Sense {
        field: Some(FieldPointer {
            byte: 2,
            bit: Some(7),
        }),
        ..Sense::new(SenseKey::IllegalRequest, 0x39, 0x00)
    };
    /// 53h/02h: an eject while the initiator prevents removal.
    pub const MEDIUM_REMOVAL_PREVENTED: Sense = Sense::new(SenseKey::IllegalRequest, 0x53, 0x02);
    /// 3Ah/02h: no medium, the tray is open (after an eject).
    pub const MEDIUM_NOT_PRESENT_TRAY_OPEN: Sense = Sense::new(SenseKey::NotReady, 0x3a, 0x02);
    /// 3Ah/01h: no medium in a closed tray (an empty image).
    pub const MEDIUM_NOT_PRESENT_TRAY_CLOSED: Sense = Sense::new(SenseKey::NotReady, 0x3a, 0x01);
    /// 11h/00h: the image could not be read.
    pub const UNRECOVERED_READ_ERROR: Sense = Sense::new(SenseKey::MediumError, 0x11, 0x00);

    /// 24h/00h, pointing at `byte` (and `bit`) of the CDB.
    pub const fn invalid_field(byte: u16, bit: Option<u8>) -> Sense {
        Sense {
            field: Some(FieldPointer { byte, bit }),
            ..Sense::new(SenseKey::IllegalRequest, 0x24, 0x00)
        }
    }

    /// Fixed-format sense data (response code 70h, current error).
    pub fn to_fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut s = [0u8; FIXED_SENSE_LEN];
        s[0] = RESPONSE_CODE_CURRENT_FIXED;
        s[2] = self.key as u8;
        // Additional sense length: the bytes after byte 7.
        s[7] = (FIXED_SENSE_LEN - 8) as u8;
        s[12] = self.asc;
        s[13] = self.ascq;
        if let Some(field) = self.field {
            s[15] = SKSV | SKS_COMMAND_DATA;
            if let Some(bit) = field.bit {
                s[15] |= SKS_BIT_POINTER_VALID | (bit & 0x7);
            }
            s[16..18].copy_from_slice(&field.byte.to_be_bytes());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_layout() {
        let s = Sense::invalid_field(4, Some(1)).to_fixed();
        assert_eq!(s[0], 0x70);
        assert_eq!(s[2], 0x05);
        assert_eq!(s[7], 10);
        assert_eq!((s[12], s[13]), (0x24, 0x00));
        assert_eq!(s[15], 0x80 | 0x40 | 0x08 | 1);
        assert_eq!(&s[16..18], &[0, 4]);
        let s = Sense::LBA_OUT_OF_RANGE.to_fixed();
        assert_eq!((s[2], s[12], s[13], s[15]), (0x05, 0x21, 0x00, 0));
        let s = Sense::INVALID_OPCODE.to_fixed();
        assert_eq!((s[15], s[16], s[17]), (0xc0, 0, 0));
    }
}
