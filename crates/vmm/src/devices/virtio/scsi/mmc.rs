//! What the multimedia commands (MMC-6) return for a finished,
//! single-session disc holding one data track: the ISO image.
//!
//! The disc is a CD-ROM up to the 80 minutes a CD holds, a DVD-ROM above
//! (guests check the profile before trusting a large capacity). Its one
//! track is mode 1 data from block 0 to the lead-out at the last block.
//!
//! As in [`super::spc`], responses are built whole and cut to the
//! allocation length by the caller.

use super::BLOCK_SIZE;
use super::cdb::{FeatureRequest, PageControl, TocFormat, TrackAddress};
use super::sense::Sense;

/// A CD holds 80 minutes of 75 blocks a second; a larger image is a DVD.
pub const CD_MAX_BLOCKS: u64 = 80 * 60 * 75;

pub mod profile {
    pub const NONE: u16 = 0x0000;
    pub const CD_ROM: u16 = 0x0008;
    pub const DVD_ROM: u16 = 0x0010;
}

/// The disc in the drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disc {
    pub blocks: u64,
}

impl Disc {
    pub fn profile(&self) -> u16 {
        if self.blocks > CD_MAX_BLOCKS {
            profile::DVD_ROM
        } else {
            profile::CD_ROM
        }
    }

    /// The lead-out's address: the first block after the track.
    fn lead_out(&self) -> u32 {
        self.blocks.min(u64::from(u32::MAX)) as u32
    }
}

/// Control nibble of a data track recorded uninterrupted, with ADR 1
/// (Q sub-channel gives the position).
const ADR_CONTROL_DATA: u8 = 0x14;
const LEAD_OUT_TRACK: u8 = 0xaa;
/// A CD's addresses in minutes/seconds/frames count from the start of
/// the lead-in's last two seconds.
const MSF_OFFSET: u64 = 150;

/// `lba` as minute, second, frame (MMC-6 §4.2.3.2); saturates where a
/// DVD's addresses would not fit a CD's clock.
fn msf(lba: u64) -> [u8; 3] {
    let frames = lba + MSF_OFFSET;
    let minutes = (frames / (75 * 60)).min(255) as u8;
    [minutes, (frames / 75 % 60) as u8, (frames % 75) as u8]
}

/// A 4-byte address field: the LBA, or 0 followed by M, S, F.
fn address(lba: u64, as_msf: bool) -> [u8; 4] {
    if as_msf {
        let [m, s, f] = msf(lba);
        [0, m, s, f]
    } else {
        (lba.min(u64::from(u32::MAX)) as u32).to_be_bytes()
    }
}

/// Prefixes `body` with its 2-byte length, counting the bytes after the
/// length field as READ TOC and READ DISC INFORMATION do.
fn with_length(prefix: &[u8], body: &[u8]) -> Vec<u8> {
    let len = (prefix.len() + body.len()) as u16;
    let mut d = len.to_be_bytes().to_vec();
    d.extend_from_slice(prefix);
    d.extend_from_slice(body);
    d
}

/// READ TOC/PMA/ATIP data (MMC-6 §6.26).
pub fn toc(format: TocFormat, as_msf: bool, disc: Disc) -> Result<Vec<u8>, Sense> {
    let track_descriptor = |track: u8, lba: u64| {
        let mut d = vec![0, ADR_CONTROL_DATA, track, 0];
        d.extend_from_slice(&address(lba, as_msf));
        d
    };
    match format {
        TocFormat::Toc { track } => {
            let mut body = Vec::new();
            match track {
                0 | 1 => body.extend(track_descriptor(1, 0)),
                LEAD_OUT_TRACK => {}
                // A track after the last one.
                _ => return Err(Sense::invalid_field(6, None)),
            }
            body.extend(track_descriptor(LEAD_OUT_TRACK, u64::from(disc.lead_out())));
            // First and last track: the only one.
            Ok(with_length(&[1, 1], &body))
        }
        // First and last session, then the first track of the last one.
        TocFormat::SessionInfo => Ok(with_length(&[1, 1], &track_descriptor(1, 0))),
        TocFormat::FullToc => {
            // The lead-in's Q entries (MMC-6 table 484), always in MSF:
            // A0 names the first track and the disc type (00h: CD-ROM),
            // A1 the last track, A2 the lead-out; then track 1.
            let entry = |point: u8, p: [u8; 3]| {
                vec![1, ADR_CONTROL_DATA, 0, point, 0, 0, 0, 0, p[0], p[1], p[2]]
            };
            let mut body = Vec::new();
            body.extend(entry(0xa0, [1, 0x00, 0]));
            body.extend(entry(0xa1, [1, 0, 0]));
            body.extend(entry(0xa2, msf(u64::from(disc.lead_out()))));
            body.extend(entry(1, msf(0)));
            Ok(with_length(&[1, 1], &body))
        }
    }
}

/// Standard disc information (MMC-6 §6.22.3.1): a complete disc with one
/// finalized session of one track.
pub fn disc_information() -> Vec<u8> {
    let mut body = [0u8; 32];
    // Not erasable; last session complete (11b); disc finalized (10b).
    body[0] = 0b0000_1110;
    body[1] = 1; // first track on the disc
    body[2] = 1; // sessions
    body[3] = 1; // first track in the last session
    body[4] = 1; // last track in the last session
    // Lead-in and last possible lead-out start of a complete disc.
    body[14..18].copy_from_slice(&[0xff; 4]);
    body[18..22].copy_from_slice(&[0xff; 4]);
    with_length(&[], &body)
}

/// Track information (MMC-6 §6.27) for the one track, if `address`
/// names it.
pub fn track_information(address: TrackAddress, disc: Disc) -> Result<Vec<u8>, Sense> {
    match address {
        TrackAddress::Lba(lba) if u64::from(lba) < disc.blocks => {}
        TrackAddress::Lba(_) => return Err(Sense::LBA_OUT_OF_RANGE),
        TrackAddress::Track(1) | TrackAddress::Session(1) => {}
        _ => return Err(Sense::invalid_field(2, None)),
    }
    let mut body = [0u8; 46];
    body[0] = 1; // track number
    body[1] = 1; // session number
    body[3] = 0x04; // track mode: data, recorded uninterrupted
    body[4] = 0x01; // data mode 1
    // Start address 0 (bytes 6..10); the size:
    body[22..26].copy_from_slice(&disc.lead_out().to_be_bytes());
    Ok(with_length(&[], &body))
}

/// One feature descriptor (MMC-6 §5.2.2).
fn feature(code: u16, version: u8, persistent: bool, current: bool, data: &[u8]) -> Vec<u8> {
    let mut d = code.to_be_bytes().to_vec();
    d.push(version << 2 | u8::from(persistent) << 1 | u8::from(current));
    d.push(data.len() as u8);
    d.extend_from_slice(data);
    d
}

/// The features of this drive with what is current for `disc`, in code
/// order.
fn features(disc: Option<Disc>) -> Vec<(u16, bool, Vec<u8>)> {
    let current = disc.map_or(profile::NONE, |d| d.profile());
    let cd = current == profile::CD_ROM;
    let dvd = current == profile::DVD_ROM;
    let profile_entry = |p: u16| {
        let mut e = p.to_be_bytes().to_vec();
        e.extend_from_slice(&[u8::from(p == current), 0]);
        e
    };
    let mut profiles = profile_entry(profile::DVD_ROM);
    profiles.extend(profile_entry(profile::CD_ROM));
    let blocking: u16 = if dvd { 16 } else { 1 };
    let mut random_readable = (BLOCK_SIZE as u32).to_be_bytes().to_vec();
    random_readable.extend_from_slice(&blocking.to_be_bytes());
    random_readable.extend_from_slice(&[0, 0]);
    vec![
        // Profile list: every profile the drive has.
        (0x0000, true, feature(0x0000, 0, true, true, &profiles)),
        // Core: physical interface "SCSI family"; DBE: device busy
        // events are reported.
        (
            0x0001,
            true,
            feature(0x0001, 2, true, true, &[0, 0, 0, 1, 0x01, 0, 0, 0]),
        ),
        // Morphing: polled events only.
        (0x0002, true, feature(0x0002, 1, true, true, &[0, 0, 0, 0])),
        // Removable medium: tray loader, eject, lock.
        (
            0x0003,
            true,
            feature(0x0003, 0, true, true, &[0b0010_1001, 0, 0, 0]),
        ),
        (
            0x0010,
            disc.is_some(),
            feature(0x0010, 0, false, disc.is_some(), &random_readable),
        ),
        (0x001d, cd, feature(0x001d, 0, false, cd, &[])),
        (0x001e, cd, feature(0x001e, 2, false, cd, &[0, 0, 0, 0])),
        (0x001f, dvd, feature(0x001f, 0, false, dvd, &[])),
        // Power management: START STOP UNIT's power conditions.
        (0x0100, true, feature(0x0100, 0, true, true, &[])),
    ]
}

/// GET CONFIGURATION data (MMC-6 §6.6).
pub fn configuration(request: FeatureRequest, start: u16, disc: Option<Disc>) -> Vec<u8> {
    let current_profile = disc.map_or(profile::NONE, |d| d.profile());
    let mut body = Vec::new();
    for (code, current, descriptor) in features(disc) {
        let wanted = match request {
            FeatureRequest::All => code >= start,
            FeatureRequest::Current => code >= start && current,
            FeatureRequest::One => code == start,
        };
        if wanted {
            body.extend(descriptor);
        }
    }
    // The data length counts the bytes after its own 4.
    let mut d = ((4 + body.len()) as u32).to_be_bytes().to_vec();
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(&current_profile.to_be_bytes());
    d.extend(body);
    d
}

/// A media event (MMC-6 table 164).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MediaEvent {
    NoChange = 0,
    NewMedia = 2,
    MediaRemoval = 3,
}

pub mod event_class {
    pub const MEDIA: u8 = 4;
    pub const DEVICE_BUSY: u8 = 6;
}
const SUPPORTED_CLASSES: u8 = 1 << event_class::MEDIA | 1 << event_class::DEVICE_BUSY;
/// No event available: the class field is meaningless.
const NEA: u8 = 0x80;

/// The media class's view of the drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaStatus {
    pub event: MediaEvent,
    pub tray_open: bool,
    pub present: bool,
}

/// GET EVENT STATUS NOTIFICATION data (MMC-6 §6.7) for the classes in
/// `requested`; returns it and whether the media event was reported
/// (and so is consumed).
pub fn event_status(requested: u8, media: MediaStatus) -> (Vec<u8>, bool) {
    let asked = requested & SUPPORTED_CLASSES;
    // One class per answer: media events before device busy ones, and
    // media when there is nothing to tell of either.
    let media_asked = asked & 1 << event_class::MEDIA != 0;
    let (class, descriptor) = if media_asked {
        let status = u8::from(media.present) << 1 | u8::from(media.tray_open);
        (event_class::MEDIA, vec![media.event as u8, status, 0, 0])
    } else if asked != 0 {
        // Device busy: never busy.
        (event_class::DEVICE_BUSY, vec![0, 0, 0, 0])
    } else {
        let header = [0, 2, NEA, SUPPORTED_CLASSES];
        return (header.to_vec(), false);
    };
    let mut d = ((2 + descriptor.len()) as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&[class, SUPPORTED_CLASSES]);
    d.extend(descriptor);
    (d, media_asked)
}

/// MECHANISM STATUS data (MMC-6 §6.10): no changer, idle, no slots.
pub fn mechanism_status(tray_open: bool) -> Vec<u8> {
    vec![0, u8::from(tray_open) << 4, 0, 0, 0, 0, 0, 0]
}

pub mod page {
    pub const READ_ERROR_RECOVERY: u8 = 0x01;
    pub const CAPABILITIES: u8 = 0x2a;
    pub const ALL: u8 = 0x3f;
}

/// Read/write error recovery parameters (MMC-6 §7.3): retries are
/// pointless on an image, so all zero.
fn read_error_recovery(_control: PageControl) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p[0] = page::READ_ERROR_RECOVERY;
    p[1] = 10;
    p
}

/// The CD/DVD capabilities and mechanical status page (2Ah, from MMC-3:
/// Linux and the BSDs still read it to learn what the drive does).
fn capabilities(control: PageControl) -> Vec<u8> {
    let mut p = vec![0u8; 32];
    p[0] = page::CAPABILITIES;
    p[1] = (p.len() - 2) as u8;
    if control == PageControl::Changeable {
        // Nothing can be changed.
        return p;
    }
    p[2] = 0b0000_1011; // reads CD-R, CD-RW and DVD-ROM media
    p[3] = 0; // writes nothing
    p[4] = 0b0100_0000; // multi-session
    p[6] = 0b0010_1001; // tray loader, eject, lock
    // Lock state (bit 1) is not reported: it belongs to the initiator
    // that asked for it.
    p[8..10].copy_from_slice(&7056u16.to_be_bytes()); // 40x, in KB/s
    p[14..16].copy_from_slice(&7056u16.to_be_bytes());
    p
}

/// Mode page `page`/`subpage` (or all of them) in the form `control`
/// asks for; `None` for a page this drive does not have.
pub fn mode_pages(page: u8, subpage: u8, control: PageControl) -> Option<Vec<u8>> {
    // No page has subpages; 0xff with "all pages" asks for every page
    // and subpage.
    match (page, subpage) {
        (page::READ_ERROR_RECOVERY, 0) => Some(read_error_recovery(control)),
        (page::CAPABILITIES, 0) => Some(capabilities(control)),
        (page::ALL, 0 | 0xff) => {
            let mut all = read_error_recovery(control);
            all.extend(capabilities(control));
            Some(all)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CD: Disc = Disc { blocks: 1000 };

    #[test]
    fn msf_of_the_first_block_is_two_seconds_in() {
        assert_eq!(msf(0), [0, 2, 0]);
        assert_eq!(msf(75 * 60 - 150), [1, 0, 0]);
        assert_eq!(msf(1000), [0, 15, 25]);
        assert_eq!(msf(u64::from(u32::MAX))[0], 255);
    }

    #[test]
    fn toc_formats() {
        let t = toc(TocFormat::Toc { track: 0 }, false, CD).unwrap();
        assert_eq!(t.len(), 4 + 16);
        assert_eq!(&t[0..4], &[0, 18, 1, 1]);
        assert_eq!(&t[4..12], &[0, 0x14, 1, 0, 0, 0, 0, 0]);
        assert_eq!(&t[12..20], &[0, 0x14, 0xaa, 0, 0, 0, 0x03, 0xe8]);
        let t = toc(TocFormat::Toc { track: 0xaa }, true, CD).unwrap();
        assert_eq!(&t[4..12], &[0, 0x14, 0xaa, 0, 0, 0, 15, 25]);
        assert_eq!(
            toc(TocFormat::Toc { track: 2 }, false, CD),
            Err(Sense::invalid_field(6, None))
        );
        let s = toc(TocFormat::SessionInfo, false, CD).unwrap();
        assert_eq!(s, [0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0]);
        let f = toc(TocFormat::FullToc, false, CD).unwrap();
        assert_eq!(f.len(), 4 + 4 * 11);
        assert_eq!(&f[4 + 22 + 3..4 + 33], &[0xa2, 0, 0, 0, 0, 0, 15, 25]);
    }

    #[test]
    fn profiles_follow_the_size() {
        assert_eq!(CD.profile(), profile::CD_ROM);
        assert_eq!(
            Disc {
                blocks: CD_MAX_BLOCKS + 1
            }
            .profile(),
            profile::DVD_ROM
        );
        let c = configuration(FeatureRequest::All, 0, Some(CD));
        assert_eq!(
            u32::from_be_bytes(c[0..4].try_into().unwrap()) as usize,
            c.len() - 4
        );
        assert_eq!(&c[6..8], &[0, 8]);
        // Profile list first: DVD-ROM (not current), CD-ROM (current).
        assert_eq!(&c[8..20], &[0, 0, 0x03, 8, 0, 0x10, 0, 0, 0, 0x08, 1, 0]);
        let none = configuration(FeatureRequest::Current, 0x10, None);
        assert_eq!(&none[6..8], &[0, 0]);
        // Only power management is current at or after 0010h.
        assert_eq!(&none[8..], &[0x01, 0x00, 0x03, 0]);
        let one = configuration(FeatureRequest::One, 0x1e, Some(CD));
        assert_eq!(&one[8..], &[0, 0x1e, 0x09, 4, 0, 0, 0, 0]);
        let missing = configuration(FeatureRequest::One, 0x20, Some(CD));
        assert_eq!(missing.len(), 8);
    }

    #[test]
    fn event_status_reports_media_then_nothing() {
        let media = MediaStatus {
            event: MediaEvent::NewMedia,
            tray_open: false,
            present: true,
        };
        let (d, consumed) = event_status(1 << 4, media);
        assert!(consumed);
        assert_eq!(d, [0, 6, 4, 0x50, 2, 0x02, 0, 0]);
        let (d, consumed) = event_status(1 << 6, media);
        assert!(!consumed);
        assert_eq!(d, [0, 6, 6, 0x50, 0, 0, 0, 0]);
        let (d, _) = event_status(1 << 2, media);
        assert_eq!(d, [0, 2, 0x80, 0x50]);
    }

    #[test]
    fn mode_pages_and_their_masks() {
        let p = mode_pages(0x2a, 0, PageControl::Current).unwrap();
        assert_eq!(usize::from(p[1]) + 2, p.len());
        assert_eq!(p[6] & 0x08, 0x08, "eject");
        let mask = mode_pages(0x2a, 0, PageControl::Changeable).unwrap();
        assert!(mask[2..].iter().all(|&b| b == 0));
        assert_eq!(
            mode_pages(0x3f, 0xff, PageControl::Default).unwrap().len(),
            44
        );
        assert_eq!(mode_pages(0x2a, 1, PageControl::Current), None);
        assert_eq!(mode_pages(0x08, 0, PageControl::Current), None);
    }

    #[test]
    fn track_information_for_the_one_track() {
        let t = track_information(TrackAddress::Track(1), CD).unwrap();
        assert_eq!(t.len(), 48);
        assert_eq!(&t[0..4], &[0, 46, 1, 1]);
        assert_eq!(&t[24..28], &1000u32.to_be_bytes());
        assert!(track_information(TrackAddress::Lba(999), CD).is_ok());
        assert_eq!(
            track_information(TrackAddress::Lba(1000), CD),
            Err(Sense::LBA_OUT_OF_RANGE)
        );
        assert_eq!(
            track_information(TrackAddress::Track(2), CD),
            Err(Sense::invalid_field(2, None))
        );
        assert_eq!(disc_information().len(), 34);
    }
}
