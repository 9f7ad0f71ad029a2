//! The SCSI host model: what it offers and what its configuration space
//! says (virtio 1.x §5.6.4), around one CD-ROM unit.
//!
//! No feature bits beyond the transport's: no bidirectional commands
//! (F_INOUT), no hot-plug events, no parameter-change events, no
//! protection information. One request queue. The configuration tells
//! the driver the truth about the topology: one channel, one target, one
//! LUN, so a driver that believes it only ever asks for target 0, LUN 0.

use std::sync::{Arc, Mutex};

use disk::BlockBackend;
use virtio_bindings::virtio_scsi::{VIRTIO_SCSI_CDB_DEFAULT_SIZE, VIRTIO_SCSI_SENSE_DEFAULT_SIZE};

use super::handler::{ScsiHandler, SharedSizes};
use super::request::FieldSizes;
use super::unit::CdRom;
use super::{DEVICE_TYPE, MAX_TRANSFER_BLOCKS, QUEUE_SIZE, SEG_MAX};
use crate::devices::virtio::device::{QueueHandler, TRANSPORT_FEATURES, VirtioDevice};

/// The configuration structure's length (36 bytes, as vmd has it).
pub const CONFIG_LEN: usize = 36;
/// Offsets of the two fields the driver may write.
const SENSE_SIZE_AT: usize = 20;
const CDB_SIZE_AT: usize = 24;
/// An event: type, LUN, reason (virtio 1.x §5.6.6.3).
const EVENT_INFO_SIZE: u32 = 16;
/// Sectors of 512 bytes in the largest transfer.
const MAX_SECTORS: u32 = MAX_TRANSFER_BLOCKS * 4;

const DEFAULT_SIZES: FieldSizes = FieldSizes {
    sense: VIRTIO_SCSI_SENSE_DEFAULT_SIZE,
    cdb: VIRTIO_SCSI_CDB_DEFAULT_SIZE,
};

pub struct Scsi {
    pub(super) unit: Arc<Mutex<CdRom>>,
    pub(super) sizes: Arc<SharedSizes>,
}

impl Scsi {
    /// A host with the CD-ROM over `backend` (read-only) at target 0,
    /// LUN 0; `serial` is the unit's serial number.
    pub fn new(backend: Arc<dyn BlockBackend>, serial: &str) -> Scsi {
        Scsi {
            unit: Arc::new(Mutex::new(CdRom::new(backend, serial))),
            sizes: Arc::new(SharedSizes::new(DEFAULT_SIZES)),
        }
    }

    fn config(&self) -> [u8; CONFIG_LEN] {
        let sizes = self.sizes.get();
        let mut c = [0u8; CONFIG_LEN];
        let fields: [(usize, u32); 7] = [
            (0, 1), // request queues
            (4, SEG_MAX),
            (8, MAX_SECTORS),
            (12, u32::from(QUEUE_SIZE)), // commands per LUN
            (16, EVENT_INFO_SIZE),
            (SENSE_SIZE_AT, sizes.sense),
            (CDB_SIZE_AT, sizes.cdb),
        ];
        for (at, value) in fields {
            c[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        // max_channel (28), max_target (30) and max_lun (32) are 0.
        c
    }
}

impl VirtioDevice for Scsi {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE
    }

    fn queue_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        TRANSPORT_FEATURES
    }

    fn config_len(&self) -> u64 {
        CONFIG_LEN as u64
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| config.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Only `sense_size` and `cdb_size` are writable; they change the
    /// layout of the requests that follow.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut config = self.config();
        for (i, b) in data.iter().enumerate() {
            let Some(at) = usize::try_from(offset).ok().map(|o| o + i) else {
                return;
            };
            if (SENSE_SIZE_AT..CDB_SIZE_AT + 4).contains(&at) {
                config[at] = *b;
            }
        }
        let field = |at: usize| u32::from_le_bytes(config[at..at + 4].try_into().expect("4 bytes"));
        self.sizes.set(FieldSizes {
            sense: field(SENSE_SIZE_AT),
            cdb: field(CDB_SIZE_AT),
        });
    }

    /// The sizes go back to their defaults (virtio 1.x §5.6.4.2), and a
    /// removal prevention ends as a hard reset would end it. (On the
    /// reset, not when the driver activates the device again: a received
    /// device is activated with the state the sender's had.)
    fn reset(&mut self) {
        self.sizes.set(DEFAULT_SIZES);
        self.unit.lock().unwrap_or_else(|e| e.into_inner()).reset();
    }

    fn activate(&mut self, _features: u64) -> Box<dyn QueueHandler> {
        Box::new(ScsiHandler {
            unit: self.unit.clone(),
            sizes: self.sizes.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_u32(dev: &Scsi, at: u64) -> u32 {
        let mut b = [0u8; 4];
        dev.read_config(at, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn configuration_space() {
        let mut dev = Scsi::new(crate::devices::virtio::driver::memory_image(&[]), "x");
        assert_eq!(read_u32(&dev, 0), 1);
        assert_eq!(read_u32(&dev, 4), SEG_MAX);
        assert_eq!(read_u32(&dev, 20), 96);
        assert_eq!(read_u32(&dev, 24), 32);
        assert_eq!(read_u32(&dev, 28), 0, "one channel, one target");
        assert_eq!(read_u32(&dev, 32), 0, "one LUN");
        // The driver's sizes stick; other fields are read-only.
        dev.write_config(20, &200u32.to_le_bytes());
        dev.write_config(24, &[16]);
        dev.write_config(0, &7u32.to_le_bytes());
        assert_eq!(read_u32(&dev, 20), 200);
        assert_eq!(read_u32(&dev, 24), 16);
        assert_eq!(read_u32(&dev, 0), 1);
        dev.reset();
        assert_eq!(read_u32(&dev, 20), 96);
        assert_eq!(read_u32(&dev, 24), 32);
        let mut past = [0xffu8; 4];
        dev.read_config(34, &mut past);
        assert_eq!(past, [0; 4]);
    }
}
