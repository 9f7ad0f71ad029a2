//! The SCSI host's saved state: the `sense_size` and `cdb_size` the
//! driver wrote, and what the guest did to the CD-ROM drive: the tray,
//! the removal prevention and the media event not yet reported. Sense is
//! reported with the status of the command that caused it (autosense),
//! so none is ever pending between commands; nothing is in flight either,
//! since each command completes before the I/O thread looks at the next
//! and the event queue's buffers are never taken (the transport's queue
//! positions cover both). The image is not part of the state: the
//! receiving host opens the same path read-only, and its capacity must be
//! what the guest knew.

use serde::{Deserialize, Serialize};

use super::Scsi;
use super::mmc::MediaEvent;
use super::request::FieldSizes;
use super::unit::UnitState;
use crate::devices::persist::{Persist, PersistError, decode, encode};

#[derive(Debug, Serialize, Deserialize)]
struct ScsiState {
    sense_size: u32,
    cdb_size: u32,
    /// The image's capacity in 2048-byte blocks.
    blocks: u64,
    tray_open: bool,
    prevent_removal: bool,
    /// MMC-6 table 164: 0 no change, 2 new media, 3 media removal.
    media_event: u8,
}

fn media_event(code: u8) -> Result<MediaEvent, PersistError> {
    match code {
        c if c == MediaEvent::NoChange as u8 => Ok(MediaEvent::NoChange),
        c if c == MediaEvent::NewMedia as u8 => Ok(MediaEvent::NewMedia),
        c if c == MediaEvent::MediaRemoval as u8 => Ok(MediaEvent::MediaRemoval),
        c => Err(PersistError(format!("media event {c} unknown"))),
    }
}

impl Persist for Scsi {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        let sizes = self.sizes.get();
        let unit = self.unit.lock().unwrap_or_else(|e| e.into_inner()).state();
        Ok(encode(&ScsiState {
            sense_size: sizes.sense,
            cdb_size: sizes.cdb,
            blocks: unit.blocks,
            tray_open: unit.tray_open,
            prevent_removal: unit.prevent_removal,
            media_event: unit.media_event as u8,
        }))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        let s: ScsiState = decode(state)?;
        let unit = UnitState {
            blocks: s.blocks,
            tray_open: s.tray_open,
            prevent_removal: s.prevent_removal,
            media_event: media_event(s.media_event)?,
        };
        self.unit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore(&unit)
            .map_err(|e| PersistError(format!("cd-rom: {e}")))?;
        // Any sizes the driver could write are sizes the device can take.
        self.sizes.set(FieldSizes {
            sense: s.sense_size,
            cdb: s.cdb_size,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::device::VirtioDevice;
    use crate::devices::virtio::driver::memory_image;
    use crate::devices::virtio::scsi::cdb::Command;

    fn image(bytes: usize) -> std::sync::Arc<dyn disk::BlockBackend> {
        memory_image(&vec![0u8; bytes])
    }

    fn execute(dev: &Scsi, command: Command) -> Result<(), super::super::sense::Sense> {
        dev.unit.lock().unwrap().execute(&command).map(|_| ())
    }

    #[test]
    fn the_drive_and_the_sizes_move_and_a_changed_image_is_refused() {
        let mut from = Scsi::new(image(4 * 2048), "a");
        from.write_config(20, &64u32.to_le_bytes());
        from.write_config(24, &16u32.to_le_bytes());
        // Eject (a media removal event is pending), then lock the tray.
        execute(
            &from,
            Command::StartStopUnit {
                load_eject: true,
                start: false,
                power_condition: 0,
            },
        )
        .unwrap();
        execute(&from, Command::PreventAllowMediumRemoval { prevent: true }).unwrap();
        let state = from.save().unwrap();

        let mut to = Scsi::new(image(4 * 2048), "a");
        to.restore(&state).unwrap();
        assert_eq!(to.save().unwrap(), state);
        assert_eq!(to.sizes.get().sense, 64);
        assert_eq!(to.sizes.get().cdb, 16);
        let unit = to.unit.lock().unwrap().state();
        assert!(unit.tray_open && unit.prevent_removal);
        assert_eq!(unit.media_event, MediaEvent::MediaRemoval);
        // Activation keeps what was restored; a reset by the driver ends
        // the prevention and the sizes the driver chose.
        drop(to.activate(to.features()));
        assert!(to.unit.lock().unwrap().state().prevent_removal);
        to.reset();
        assert!(!to.unit.lock().unwrap().state().prevent_removal);
        assert_eq!(to.sizes.get().sense, 96);

        let mut other = Scsi::new(image(5 * 2048), "a");
        assert!(other.restore(&state).is_err());
        let mut bad = state.clone();
        *bad.last_mut().unwrap() = 1;
        assert!(Scsi::new(image(4 * 2048), "a").restore(&bad).is_err());
    }
}
