//! fw_cfg's saved state: every item with its contents (the tables, boot
//! order and kernel the firmware may still read were made for the sending
//! VM and are not rebuilt), the file directory, and where the guest is
//! reading.

use serde::{Deserialize, Serialize};

use super::{FILE_FIRST, FwCfg, MAX_FILES};
use crate::devices::persist::{Persist, PersistError, check, decode, encode};

#[derive(Serialize, Deserialize)]
struct FwCfgState {
    items: Vec<(u16, Vec<u8>)>,
    files: Vec<(String, u16)>,
    selected: u16,
    offset: u64,
    dma_high: u32,
}

impl Persist for FwCfg {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        Ok(encode(&FwCfgState {
            items: self.items.clone(),
            files: self.files.clone(),
            selected: self.selected,
            offset: self.offset as u64,
            dma_high: self.dma_high,
        }))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        let s: FwCfgState = decode(state)?;
        check(s.files.len() <= MAX_FILES, "too many fw_cfg files")?;
        for (index, (_, selector)) in s.files.iter().enumerate() {
            check(
                *selector == FILE_FIRST + index as u16,
                "fw_cfg file selectors out of order",
            )?;
        }
        self.items = s.items;
        self.files = s.files;
        self.selected = s.selected;
        self.offset = usize::try_from(s.offset).unwrap_or(usize::MAX);
        self.dma_high = s.dma_high;
        Ok(())
    }
}
