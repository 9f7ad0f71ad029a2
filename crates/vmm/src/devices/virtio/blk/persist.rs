//! The block device's saved state. The disk's contents are not part of
//! it: the receiving host opens the same image path. What is saved is
//! what the guest knows about the disk (its size, whether it is
//! writable), so a receiving VM refuses an image that no longer matches.
//! Before it is taken, the I/O thread flushes the image
//! ([`Blk::flusher`](crate::devices::virtio::VirtioDevice::flusher)), so its
//! caches and metadata are in the file before another process opens it.

use serde::{Deserialize, Serialize};

use super::Blk;
use crate::devices::persist::{Persist, PersistError, decode, encode};

#[derive(Serialize, Deserialize)]
struct BlkState {
    capacity_sectors: u64,
    read_only: bool,
}

impl Persist for Blk {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        Ok(encode(&BlkState {
            capacity_sectors: self.capacity_sectors(),
            read_only: self.backend.is_read_only(),
        }))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        let s: BlkState = decode(state)?;
        if s.capacity_sectors != self.capacity_sectors()
            || s.read_only != self.backend.is_read_only()
        {
            return Err(PersistError(format!(
                "{}: the guest knew a disk of {} sectors{}, the image has {}{}",
                self.name,
                s.capacity_sectors,
                if s.read_only { " (read-only)" } else { "" },
                self.capacity_sectors(),
                if self.backend.is_read_only() {
                    " (read-only)"
                } else {
                    ""
                },
            )));
        }
        Ok(())
    }
}
