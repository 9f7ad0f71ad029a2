//! Port-I/O and MMIO dispatch: which device answers an access at an address.
//!
//! A bus maps non-overlapping address ranges to devices. The PCI layer adds
//! and removes ranges at run time when firmware or the guest moves a BAR,
//! so the map sits behind a read-write lock that vCPUs only read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// A device reachable through port I/O or MMIO.
pub trait BusDevice: Send {
    /// Read `data.len()` bytes at `offset` from the start of the range the
    /// device was registered at.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Write `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Wraps a device for sharing between the bus and its owner.
pub fn shared<D>(device: D) -> Arc<Mutex<D>> {
    Arc::new(Mutex::new(device))
}

#[derive(Debug, PartialEq, Eq)]
pub struct Overlap {
    pub base: u64,
    pub len: u64,
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "range {:#x}+{:#x} overlaps a registered device",
            self.base, self.len
        )
    }
}

impl std::error::Error for Overlap {}

struct Entry {
    len: u64,
    device: SharedDevice,
}

/// An address space of devices.
#[derive(Default)]
pub struct Bus {
    entries: RwLock<BTreeMap<u64, Entry>>,
}

impl Bus {
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Registers `device` for `[base, base + len)`.
    pub fn insert(&self, base: u64, len: u64, device: SharedDevice) -> Result<(), Overlap> {
        let overlap = Overlap { base, len };
        if len == 0 || base.checked_add(len).is_none() {
            return Err(overlap);
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if let Some((&start, entry)) = entries.range(..base + len).next_back()
            && start + entry.len > base
        {
            return Err(overlap);
        }
        entries.insert(base, Entry { len, device });
        Ok(())
    }

    /// Removes the range registered at exactly `base`.
    pub fn remove(&self, base: u64) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.remove(&base).is_some()
    }

    /// The device covering `addr .. addr + size` and the offset of `addr`
    /// in its range.
    fn resolve(&self, addr: u64, size: u64) -> Option<(SharedDevice, u64)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let (&start, entry) = entries.range(..=addr).next_back()?;
        let offset = addr - start;
        if offset.checked_add(size)? > entry.len {
            return None;
        }
        Some((entry.device.clone(), offset))
    }

    /// Dispatches a read. Returns false when no device covers the access;
    /// the caller then answers with all ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len() as u64) {
            Some((device, offset)) => {
                device
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write. Returns false when no device covers the access;
    /// the write is then ignored.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len() as u64) {
            Some((device, offset)) => {
                device
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo {
        last: Vec<u8>,
    }

    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.last = data.to_vec();
        }
    }

    #[test]
    fn dispatch_and_overlap() {
        let bus = Bus::new();
        let dev = shared(Echo { last: vec![] });
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        assert!(bus.insert(0x3f0, 9, dev.clone()).is_err());
        assert!(bus.insert(0x3ff, 1, dev.clone()).is_err());
        assert!(bus.insert(0x3fc, 1, dev.clone()).is_err());
        bus.insert(0x400, 1, dev.clone()).unwrap();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fa, &mut data));
        assert_eq!(data, [2]);
        assert!(!bus.read(0x3f7, &mut data));
        let mut wide = [0u8; 2];
        assert!(!bus.read(0x3ff, &mut wide), "access crossing the range end");
        assert!(bus.write(0x3f8, &[9]));
        assert_eq!(dev.lock().unwrap().last, vec![9]);
        assert!(bus.remove(0x3f8));
        assert!(!bus.read(0x3fa, &mut data));
        assert!(bus.insert(u64::MAX, 2, dev).is_err());
    }
}
