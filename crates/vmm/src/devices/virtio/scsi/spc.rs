//! What the primary commands (SPC-4) return for this unit: standard and
//! vital product data, the LUN inventory, sense for REQUEST SENSE, and
//! the framing of mode parameter data around the pages [`super::mmc`]
//! provides.
//!
//! Every function builds the whole response; the caller cuts it to the
//! allocation length, so length fields always describe the full data
//! (SPC-4 §4.2.5.6).

use super::BLOCK_SIZE;

/// Peripheral qualifier 0 (connected), device type 05h (CD/DVD).
pub const PERIPHERAL_CD_DVD: u8 = 0x05;

/// INQUIRY identification, space-padded ASCII as SPC-4 §6.6.2 asks.
pub const VENDOR: &[u8; 8] = b"VMD     ";
pub const PRODUCT: &[u8; 16] = b"VIRTUAL CD-ROM  ";
pub const REVISION: &[u8; 4] = b"1.0 ";

pub mod vpd {
    pub const SUPPORTED_PAGES: u8 = 0x00;
    pub const UNIT_SERIAL_NUMBER: u8 = 0x80;
    pub const DEVICE_IDENTIFICATION: u8 = 0x83;
}

const STANDARD_INQUIRY_LEN: usize = 36;
/// Removable medium.
const RMB: u8 = 0x80;
/// The version field: SPC-3 (the level guests key their command set on;
/// SPC-4 adds nothing this unit uses).
const VERSION_SPC3: u8 = 0x05;
/// Response data format 2, the only one defined.
const RESPONSE_DATA_FORMAT: u8 = 0x02;
/// Command queuing: the driver may have many commands in the queue.
const CMDQUE: u8 = 0x02;

/// Standard INQUIRY data (SPC-4 §6.6.2), without version descriptors.
pub fn standard_inquiry() -> Vec<u8> {
    let mut d = vec![0u8; STANDARD_INQUIRY_LEN];
    d[0] = PERIPHERAL_CD_DVD;
    d[1] = RMB;
    d[2] = VERSION_SPC3;
    d[3] = RESPONSE_DATA_FORMAT;
    d[4] = (STANDARD_INQUIRY_LEN - 5) as u8;
    d[7] = CMDQUE;
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(PRODUCT);
    d[32..36].copy_from_slice(REVISION);
    d
}

/// A VPD page with its 4-byte header.
fn vpd_page_with(page: u8, body: &[u8]) -> Vec<u8> {
    let mut d = vec![PERIPHERAL_CD_DVD, page];
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(body);
    d
}

/// Vital product data page `page` (SPC-4 §7.8), or `None` for a page
/// this unit does not have.
pub fn vpd_page(page: u8, serial: &str) -> Option<Vec<u8>> {
    match page {
        vpd::SUPPORTED_PAGES => Some(vpd_page_with(
            page,
            &[
                vpd::SUPPORTED_PAGES,
                vpd::UNIT_SERIAL_NUMBER,
                vpd::DEVICE_IDENTIFICATION,
            ],
        )),
        vpd::UNIT_SERIAL_NUMBER => Some(vpd_page_with(page, serial.as_bytes())),
        vpd::DEVICE_IDENTIFICATION => {
            // One designator: T10 vendor ID based (type 1), ASCII (code
            // set 2), naming the logical unit (association 0): the vendor
            // followed by a vendor-specific part, here product and serial.
            let mut id = VENDOR.to_vec();
            id.extend_from_slice(PRODUCT);
            id.extend_from_slice(serial.as_bytes());
            let mut designator = vec![0x02, 0x01, 0x00, id.len() as u8];
            designator.extend_from_slice(&id);
            Some(vpd_page_with(page, &designator))
        }
        _ => None,
    }
}

/// REPORT LUNS data (SPC-4 §6.33) for SELECT REPORT `select`, or `None`
/// for a value SPC does not define. Only LUN 0 exists; there are no
/// well-known or administrative LUNs.
pub fn report_luns(select: u8) -> Option<Vec<u8>> {
    let luns: &[[u8; 8]] = match select {
        // Logical units, all of them, or the administrative LUN's
        // subsidiaries — this unit is its own administrative LUN.
        0x00 | 0x02 | 0x11 => &[[0; 8]],
        // Well-known LUNs, administrative LUNs, subsidiaries of a
        // subsidiary: none.
        0x01 | 0x10 | 0x12 => &[],
        _ => return None,
    };
    let mut d = ((luns.len() * 8) as u32).to_be_bytes().to_vec();
    d.extend_from_slice(&[0; 4]);
    for lun in luns {
        d.extend_from_slice(lun);
    }
    Some(d)
}

/// A mode parameter block descriptor (SPC-4 §7.5.5, the general form):
/// density 0, the number of blocks, the block length.
pub fn block_descriptor(blocks: u64) -> [u8; 8] {
    let mut d = [0u8; 8];
    let count = blocks.min(0xff_ffff) as u32;
    d[1..4].copy_from_slice(&count.to_be_bytes()[1..]);
    d[5..8].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes()[1..]);
    d
}

/// Mode parameter data: the MODE SENSE(6) or (10) header, the block
/// descriptor if any, and `pages` (SPC-4 §7.5.4).
pub fn mode_parameters(ten: bool, descriptor: Option<[u8; 8]>, pages: &[u8]) -> Vec<u8> {
    let descriptor_len = if descriptor.is_some() { 8u16 } else { 0 };
    let mut d = if ten {
        let mut h = vec![0u8; 8];
        h[6..8].copy_from_slice(&descriptor_len.to_be_bytes());
        h
    } else {
        vec![0, 0, 0, descriptor_len as u8]
    };
    if let Some(desc) = descriptor {
        d.extend_from_slice(&desc);
    }
    d.extend_from_slice(pages);
    // The mode data length counts the bytes after itself.
    if ten {
        let len = (d.len() - 2) as u16;
        d[0..2].copy_from_slice(&len.to_be_bytes());
    } else {
        d[0] = (d.len() - 1) as u8;
    }
    d
}

/// Cuts a response to the initiator's allocation length.
pub fn truncate(mut data: Vec<u8>, allocation: u32) -> Vec<u8> {
    data.truncate(allocation as usize);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_inquiry_says_removable_cd() {
        let d = standard_inquiry();
        assert_eq!(d.len(), 36);
        assert_eq!(usize::from(d[4]) + 5, d.len());
        assert_eq!((d[0], d[1]), (0x05, 0x80));
        assert_eq!(&d[8..16], b"VMD     ");
    }

    #[test]
    fn vpd_pages() {
        let p = vpd_page(0x00, "sn").unwrap();
        assert_eq!(p, [0x05, 0x00, 0, 3, 0x00, 0x80, 0x83]);
        let p = vpd_page(0x80, "abc").unwrap();
        assert_eq!(p, [0x05, 0x80, 0, 3, b'a', b'b', b'c']);
        let p = vpd_page(0x83, "abc").unwrap();
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len() - 4);
        assert_eq!(&p[4..8], &[0x02, 0x01, 0x00, 27]);
        assert_eq!(&p[8..16], VENDOR);
        assert!(p.ends_with(b"CD-ROM  abc"));
        assert_eq!(vpd_page(0xb0, "x"), None);
    }

    #[test]
    fn report_luns_lists_lun_zero() {
        assert_eq!(
            report_luns(0).unwrap(),
            [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(report_luns(1).unwrap(), [0; 8]);
        assert_eq!(report_luns(3), None);
    }

    #[test]
    fn mode_headers() {
        let d = mode_parameters(false, Some(block_descriptor(10)), &[0x2a, 0]);
        assert_eq!(d.len(), 4 + 8 + 2);
        assert_eq!(d[0], 13);
        assert_eq!(d[3], 8);
        assert_eq!(&d[4..12], &[0, 0, 0, 10, 0, 0, 0x08, 0x00]);
        let d = mode_parameters(true, None, &[0x01, 0]);
        assert_eq!(d.len(), 8 + 2);
        assert_eq!(&d[0..2], &[0, 8]);
        assert_eq!(&d[6..8], &[0, 0]);
        assert_eq!(block_descriptor(1 << 30)[1..4], [0xff, 0xff, 0xff]);
    }
}
