//! Saved state of the PCI side of a device and of the bus: a function's
//! 256 configuration bytes, and the address latch of configuration
//! mechanism #1. BAR placement needs nothing else: the bytes hold the
//! addresses and the command register, and the root maps what decodes
//! after a restore as after any configuration write.

use serde::{Deserialize, Serialize};

use super::config_space::{
    CLASS, CONFIG_SIZE, ConfigSpace, HEADER_TYPE, SUBSYSTEM_ID, SUBSYSTEM_VENDOR_ID, VENDOR_ID,
};
use super::host_bridge::HostBridge;
use super::msix::{Entry, Msix};
use super::root::PciConfigPorts;
use crate::devices::persist::{Persist, PersistError, decode, encode};

/// The configuration bytes of one function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigSpaceState {
    bytes: Vec<u8>,
}

/// Registers that say which device a function is: a state is only taken
/// by the same kind of device in the same slot.
const IDENTITY: [(usize, usize); 4] = [
    (VENDOR_ID, 4),
    (CLASS - 3, 4),
    (HEADER_TYPE, 1),
    (SUBSYSTEM_VENDOR_ID, SUBSYSTEM_ID + 2 - SUBSYSTEM_VENDOR_ID),
];

impl ConfigSpace {
    pub fn state(&self) -> ConfigSpaceState {
        ConfigSpaceState {
            bytes: self.bytes.to_vec(),
        }
    }

    /// Takes the saved bytes; refuses those of another kind of device.
    pub fn restore_state(&mut self, state: &ConfigSpaceState) -> Result<(), PersistError> {
        let bytes: [u8; CONFIG_SIZE] = state
            .bytes
            .as_slice()
            .try_into()
            .map_err(|_| PersistError::new("PCI configuration space is not 256 bytes"))?;
        for (start, len) in IDENTITY {
            if bytes[start..start + len] != self.bytes[start..start + len] {
                return Err(PersistError(format!(
                    "PCI function {:04x}:{:04x} saved where {:04x}:{:04x} is",
                    u16::from_le_bytes([bytes[0], bytes[1]]),
                    u16::from_le_bytes([bytes[2], bytes[3]]),
                    self.u16(VENDOR_ID),
                    self.u16(VENDOR_ID + 2),
                )));
            }
        }
        self.bytes = bytes;
        Ok(())
    }
}

impl Persist for HostBridge {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        Ok(encode(&self.config.state()))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        self.config.restore_state(&decode(state)?)
    }
}

/// A device's MSI-X table, pending bits and enables.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MsixState {
    /// Per vector: address low, address high, data, vector control.
    entries: Vec<[u32; 4]>,
    pending: Vec<bool>,
    enabled: bool,
    function_masked: bool,
}

impl Msix {
    pub fn state(&self) -> MsixState {
        MsixState {
            entries: self
                .entries
                .iter()
                .map(|e| [e.address_lo, e.address_hi, e.data, e.control])
                .collect(),
            pending: self.pending.clone(),
            enabled: self.enabled,
            function_masked: self.function_masked,
        }
    }

    /// Takes the saved table and routes the GSI of every vector the guest
    /// programmed (an MSI address is never 0) to its message again.
    /// Pending vectors stay pending until unmasked.
    pub fn restore_state(&mut self, state: &MsixState) -> Result<(), PersistError> {
        let count = self.entries.len();
        if state.entries.len() != count || state.pending.len() != count {
            return Err(PersistError(format!(
                "MSI-X state for {} vectors where the device has {count}",
                state.entries.len()
            )));
        }
        for (entry, &[address_lo, address_hi, data, control]) in
            self.entries.iter_mut().zip(&state.entries)
        {
            *entry = Entry {
                address_lo,
                address_hi,
                data,
                control,
            };
        }
        self.pending = state.pending.clone();
        self.enabled = state.enabled;
        self.function_masked = state.function_masked;
        for index in 0..count {
            let entry = self.entries[index];
            if entry.address_lo != 0 || entry.address_hi != 0 {
                self.route(index);
            }
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct ConfigPortsState {
    address: u32,
    reset_control: u8,
}

impl Persist for PciConfigPorts {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        Ok(encode(&ConfigPortsState {
            address: self.address,
            reset_control: self.reset_control,
        }))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        let s: ConfigPortsState = decode(state)?;
        self.address = s.address;
        self.reset_control = s.reset_control;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::pci::Identity;
    use crate::devices::pci::bars::BarKind;
    use crate::devices::pci::config_space::COMMAND;

    fn space(device: u16) -> ConfigSpace {
        let mut cs = ConfigSpace::new(Identity {
            vendor: 0x1af4,
            device,
            class: 1,
            ..Default::default()
        });
        cs.add_bar(0, BarKind::Io, 0x1000);
        cs
    }

    #[test]
    fn bars_and_command_come_across_and_identity_must_match() {
        let mut from = space(0x1042);
        from.write(COMMAND, &[1, 0]);
        from.write(0x10, &0xc000u32.to_le_bytes());
        let state = decode::<ConfigSpaceState>(&encode(&from.state())).unwrap();
        let mut to = space(0x1042);
        to.restore_state(&state).unwrap();
        assert_eq!(to.decoded_bars(), from.decoded_bars());
        assert_eq!(to.bars()[0].base, 0xc000);
        let mut other = space(0x1041);
        let err = other.restore_state(&state).unwrap_err();
        assert!(err.0.contains("1af4:1042 saved where 1af4:1041"), "{err}");
    }
}
