//! The block device model: what it offers and what its configuration
//! space says (virtio 1.x §5.2.4), over one disk backend.

use std::path::Path;
use std::sync::Arc;

use disk::BlockBackend;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};

use super::handler::BlkHandler;
use super::request::Limits;
use super::{
    DEVICE_TYPE, ID_BYTES, MAX_RANGE_SECTORS, MAX_RANGES, QUEUE_SIZE, SECTOR_SIZE, SEG_MAX,
    SIZE_MAX,
};
use crate::devices::virtio::device::Flusher;
use crate::devices::virtio::device::{QueueHandler, TRANSPORT_FEATURES, VirtioDevice, has_feature};

/// Length of the configuration structure up to `write_zeroes_may_unmap`
/// and its padding.
const CONFIG_LEN: usize = 60;
/// Discards are aligned to 4 KiB: the smallest unit a raw file's hole or
/// a qcow2 image of any common cluster size can give back.
const DISCARD_ALIGNMENT_SECTORS: u32 = 8;

pub struct Blk {
    pub(super) backend: Arc<dyn BlockBackend>,
    pub(super) name: String,
    serial: [u8; ID_BYTES],
    config: [u8; CONFIG_LEN],
    features: u64,
}

/// The GET_ID answer for the image at `path`: its file name, cut to 20
/// bytes (shorter ones are NUL-padded, as the spec allows).
pub fn serial_from_path(path: &str) -> [u8; ID_BYTES] {
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string());
    let mut serial = [0u8; ID_BYTES];
    let bytes = name.as_bytes();
    let n = bytes.len().min(ID_BYTES);
    serial[..n].copy_from_slice(&bytes[..n]);
    serial
}

impl Blk {
    /// A block device over `backend`; `path` names it in logs and gives
    /// the serial number.
    pub fn new(backend: Arc<dyn BlockBackend>, path: &str) -> Blk {
        let read_only = backend.is_read_only();
        let mut features = TRANSPORT_FEATURES
            | 1 << VIRTIO_BLK_F_SIZE_MAX
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_FLUSH;
        if read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        } else {
            features |= 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        let mut config = [0u8; CONFIG_LEN];
        let mut put = |offset: usize, bytes: &[u8]| {
            config[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(0, &(backend.size() / SECTOR_SIZE).to_le_bytes());
        put(8, &SIZE_MAX.to_le_bytes());
        put(12, &SEG_MAX.to_le_bytes());
        put(20, &(SECTOR_SIZE as u32).to_le_bytes());
        put(34, &1u16.to_le_bytes()); // num_queues
        put(36, &MAX_RANGE_SECTORS.to_le_bytes());
        put(40, &MAX_RANGES.to_le_bytes());
        put(44, &DISCARD_ALIGNMENT_SECTORS.to_le_bytes());
        put(48, &MAX_RANGE_SECTORS.to_le_bytes());
        put(52, &MAX_RANGES.to_le_bytes());
        put(56, &[1]); // write_zeroes_may_unmap
        Blk {
            backend,
            name: path.to_string(),
            serial: serial_from_path(path),
            config,
            features,
        }
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.backend.size() / SECTOR_SIZE
    }
}

impl VirtioDevice for Blk {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE
    }

    fn queue_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn config_len(&self) -> u64 {
        CONFIG_LEN as u64
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| self.config.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn flusher(&self) -> Option<Flusher> {
        let backend = self.backend.clone();
        Some(Box::new(move || backend.flush()))
    }

    fn activate(&mut self, features: u64) -> Box<dyn QueueHandler> {
        Box::new(BlkHandler {
            backend: self.backend.clone(),
            limits: Limits {
                capacity_sectors: self.capacity_sectors(),
                read_only: self.backend.is_read_only(),
                discard: has_feature(features, VIRTIO_BLK_F_DISCARD),
                write_zeroes: has_feature(features, VIRTIO_BLK_F_WRITE_ZEROES),
            },
            serial: self.serial,
            name: self.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_the_file_name() {
        assert_eq!(&serial_from_path("/var/vm/disk.img")[..8], b"disk.img");
        assert_eq!(serial_from_path("/var/vm/disk.img")[8], 0);
        assert_eq!(
            &serial_from_path("/x/a-very-long-image-name.qcow2"),
            b"a-very-long-image-na"
        );
    }
}
