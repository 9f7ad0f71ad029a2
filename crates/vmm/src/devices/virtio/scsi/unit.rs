//! The CD-ROM logical unit: a read-only ISO image in a drive with a
//! tray, and what each command does to it and returns.
//!
//! The drive's state is what a guest can change: the tray (START STOP
//! UNIT ejects and loads; the image stays, so loading brings it back),
//! the removal prevention of PREVENT ALLOW MEDIUM REMOVAL, and the media
//! event GET EVENT STATUS NOTIFICATION reports next. A reset of the
//! device clears the prevention, as a hard reset does (SPC-4 §6.13).

use std::sync::Arc;

use disk::BlockBackend;

use super::BLOCK_SIZE;
use super::cdb::Command;
use super::mmc::{self, Disc, MediaEvent, MediaStatus};
use super::sense::Sense;
use super::spc;

/// The data a command returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataIn {
    None,
    /// A response built in memory, already cut to the allocation length.
    Bytes(Vec<u8>),
    /// `len` bytes of the image from byte `offset`; the image may end
    /// before (a last block it only partly fills reads as zeroes).
    Medium {
        offset: u64,
        len: u64,
    },
}

/// The drive's state as a send carries it (see [`super::persist`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitState {
    /// Capacity in blocks, which the receiving image must have.
    pub blocks: u64,
    pub tray_open: bool,
    pub prevent_removal: bool,
    /// The media event GET EVENT STATUS NOTIFICATION reports next.
    pub media_event: MediaEvent,
}

pub struct CdRom {
    backend: Arc<dyn BlockBackend>,
    /// Capacity in blocks: the image rounded up to whole blocks.
    blocks: u64,
    serial: String,
    tray_open: bool,
    prevent_removal: bool,
    media_event: MediaEvent,
}

impl CdRom {
    /// A drive holding `backend`'s image; `serial` (printable ASCII) is
    /// its unit serial number.
    pub fn new(backend: Arc<dyn BlockBackend>, serial: &str) -> CdRom {
        let blocks = backend.size().div_ceil(BLOCK_SIZE);
        CdRom {
            backend,
            blocks,
            serial: serial.to_string(),
            tray_open: false,
            prevent_removal: false,
            media_event: MediaEvent::NoChange,
        }
    }

    pub fn backend(&self) -> &Arc<dyn BlockBackend> {
        &self.backend
    }

    /// Capacity in 2048-byte blocks.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// A reset (device reset, LOGICAL UNIT RESET, I_T NEXUS RESET): the
    /// initiator's removal prevention ends.
    pub fn reset(&mut self) {
        self.prevent_removal = false;
    }

    /// What the guest has done to the drive, for a send.
    pub fn state(&self) -> UnitState {
        UnitState {
            blocks: self.blocks,
            tray_open: self.tray_open,
            prevent_removal: self.prevent_removal,
            media_event: self.media_event,
        }
    }

    /// Takes over a sent drive's state; its image must have the capacity
    /// the guest knew.
    pub fn restore(&mut self, state: &UnitState) -> Result<(), String> {
        if state.blocks != self.blocks {
            return Err(format!(
                "the guest knew a cd of {} blocks, the image has {}",
                state.blocks, self.blocks
            ));
        }
        self.tray_open = state.tray_open;
        self.prevent_removal = state.prevent_removal;
        self.media_event = state.media_event;
        Ok(())
    }

    /// The disc the guest can read, if the tray is closed on a non-empty
    /// image.
    fn disc(&self) -> Option<Disc> {
        (!self.tray_open && self.blocks > 0).then_some(Disc {
            blocks: self.blocks,
        })
    }

    /// NOT READY, medium not present, as the tray stands.
    fn not_ready(&self) -> Sense {
        if self.tray_open {
            Sense::MEDIUM_NOT_PRESENT_TRAY_OPEN
        } else {
            Sense::MEDIUM_NOT_PRESENT_TRAY_CLOSED
        }
    }

    fn need_disc(&self) -> Result<Disc, Sense> {
        self.disc().ok_or_else(|| self.not_ready())
    }

    /// Runs `command`: the data it returns, or the sense that ends it in
    /// CHECK CONDITION.
    pub fn execute(&mut self, command: &Command) -> Result<DataIn, Sense> {
        use Command::*;
        let bytes =
            |data: Vec<u8>, allocation: u32| Ok(DataIn::Bytes(spc::truncate(data, allocation)));
        match *command {
            TestUnitReady => self.need_disc().map(|_| DataIn::None),
            RequestSense { allocation } => {
                // Sense comes with each CHECK CONDITION, so there is none
                // pending; what remains to tell is a missing medium.
                let sense = match self.disc() {
                    Some(_) => Sense::NO_SENSE,
                    None => self.not_ready(),
                };
                bytes(sense.to_fixed().to_vec(), allocation)
            }
            Inquiry {
                vpd_page: None,
                allocation,
            } => bytes(spc::standard_inquiry(), allocation),
            Inquiry {
                vpd_page: Some(page),
                allocation,
            } => match spc::vpd_page(page, &self.serial) {
                Some(data) => bytes(data, allocation),
                None => Err(Sense::invalid_field(2, None)),
            },
            ModeSense {
                ten,
                control,
                page,
                subpage,
                block_descriptors,
                allocation,
            } => {
                let Some(pages) = mmc::mode_pages(page, subpage, control) else {
                    let field = if mmc::mode_pages(page, 0, control).is_some() {
                        Sense::invalid_field(3, None)
                    } else {
                        Sense::invalid_field(2, Some(5))
                    };
                    return Err(field);
                };
                let descriptor = block_descriptors
                    .then(|| self.disc().map(|d| spc::block_descriptor(d.blocks)))
                    .flatten();
                bytes(spc::mode_parameters(ten, descriptor, &pages), allocation)
            }
            StartStopUnit {
                load_eject,
                start,
                power_condition,
            } => {
                // A power condition replaces LoEj and Start; there is no
                // power to manage, and without LoEj the motor is all
                // that would start or stop.
                if power_condition != 0 || !load_eject {
                    return Ok(DataIn::None);
                }
                if start {
                    self.load();
                } else {
                    self.eject()?;
                }
                Ok(DataIn::None)
            }
            PreventAllowMediumRemoval { prevent } => {
                self.prevent_removal = prevent;
                Ok(DataIn::None)
            }
            ReadCapacity10 => {
                let disc = self.need_disc()?;
                // The last block's address; all ones when it does not
                // fit, telling the initiator to use READ CAPACITY(16).
                let last = u32::try_from(disc.blocks - 1).unwrap_or(u32::MAX);
                let mut d = last.to_be_bytes().to_vec();
                d.extend_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
                Ok(DataIn::Bytes(d))
            }
            ReadCapacity16 { allocation } => {
                let disc = self.need_disc()?;
                let mut d = vec![0u8; 32];
                d[0..8].copy_from_slice(&(disc.blocks - 1).to_be_bytes());
                d[8..12].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
                bytes(d, allocation)
            }
            Read { lba, blocks } => {
                let disc = self.need_disc()?;
                let end = lba.checked_add(blocks.into());
                if end.is_none_or(|end| end > disc.blocks) {
                    return Err(Sense::LBA_OUT_OF_RANGE);
                }
                if blocks == 0 {
                    return Ok(DataIn::None);
                }
                Ok(DataIn::Medium {
                    offset: lba * BLOCK_SIZE,
                    len: u64::from(blocks) * BLOCK_SIZE,
                })
            }
            ReadToc {
                format,
                msf,
                allocation,
            } => bytes(mmc::toc(format, msf, self.need_disc()?)?, allocation),
            GetConfiguration {
                request,
                start,
                allocation,
            } => bytes(mmc::configuration(request, start, self.disc()), allocation),
            GetEventStatusNotification {
                classes,
                allocation,
            } => {
                let status = MediaStatus {
                    event: self.media_event,
                    tray_open: self.tray_open,
                    present: self.disc().is_some(),
                };
                let (data, reported) = mmc::event_status(classes, status);
                if reported {
                    self.media_event = MediaEvent::NoChange;
                }
                bytes(data, allocation)
            }
            ReadDiscInformation { allocation } => {
                self.need_disc()?;
                bytes(mmc::disc_information(), allocation)
            }
            ReadTrackInformation {
                address,
                allocation,
            } => bytes(
                mmc::track_information(address, self.need_disc()?)?,
                allocation,
            ),
            MechanismStatus { allocation } => {
                bytes(mmc::mechanism_status(self.tray_open), allocation)
            }
            ReportLuns { select, allocation } => match spc::report_luns(select) {
                Some(data) => bytes(data, allocation),
                None => Err(Sense::invalid_field(2, None)),
            },
        }
    }

    fn eject(&mut self) -> Result<(), Sense> {
        if self.prevent_removal {
            return Err(Sense::MEDIUM_REMOVAL_PREVENTED);
        }
        if !self.tray_open {
            if self.blocks > 0 {
                self.media_event = MediaEvent::MediaRemoval;
            }
            self.tray_open = true;
        }
        Ok(())
    }

    fn load(&mut self) {
        if self.tray_open {
            self.tray_open = false;
            if self.blocks > 0 {
                self.media_event = MediaEvent::NewMedia;
            }
        }
    }
}
