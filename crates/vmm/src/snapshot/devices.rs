//! The devices a stream carries a record for, each under a name that says
//! where it sits (`com1`, `pci/03`), in the order the machine is built.
//! Both sides build the same list from the same description, so a record
//! is restored into the device at the same place.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::devices::pci::root::SharedPciDevice;
use crate::devices::persist::{Persist, PersistError};

enum Handle {
    /// A device on the port bus.
    Port(Arc<Mutex<dyn Persist + Send>>),
    /// A PCI function, with its BARs' contents.
    Pci(SharedPciDevice),
}

/// One device whose state travels.
pub struct SavedDevice {
    pub name: String,
    handle: Handle,
}

/// The payload of a device frame.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub name: String,
    /// The device's own encoding (see [`crate::devices::persist`]).
    pub state: Vec<u8>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SavedDevice {
    pub fn port(name: &str, device: Arc<Mutex<dyn Persist + Send>>) -> SavedDevice {
        SavedDevice {
            name: name.to_string(),
            handle: Handle::Port(device),
        }
    }

    /// The function in PCI `slot`, `label` saying what it is.
    pub fn pci(slot: usize, label: &str, device: SharedPciDevice) -> SavedDevice {
        SavedDevice {
            name: format!("pci/{slot:02x}:{label}"),
            handle: Handle::Pci(device),
        }
    }

    pub fn save(&self) -> Result<Vec<u8>, PersistError> {
        match &self.handle {
            Handle::Port(d) => lock(d).save(),
            Handle::Pci(d) => lock(d).save(),
        }
        .map_err(|e| PersistError(format!("{}: {e}", self.name)))
    }

    pub fn restore(&self, state: &[u8]) -> Result<(), PersistError> {
        match &self.handle {
            Handle::Port(d) => lock(d).restore(state),
            Handle::Pci(d) => lock(d).restore(state),
        }
        .map_err(|e| PersistError(format!("{}: {e}", self.name)))
    }
}
