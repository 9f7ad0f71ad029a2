//! The network device's saved state: the MAC the guest knows, which the
//! receiving device must have (vmd gives it the same one; its tap, and a
//! local interface's addresses, are new). Receive buffers the I/O thread
//! held go back to the ring with the queue position
//! ([`crate::devices::virtio::QueueHandler::held_chains`]); replies of
//! the DHCP responder not yet delivered are dropped, as a lost frame
//! would be, and the guest asks again.

use serde::{Deserialize, Serialize};

use super::Net;
use crate::devices::persist::{Persist, PersistError, decode, encode};

#[derive(Serialize, Deserialize)]
struct NetState {
    mac: [u8; 6],
}

impl Persist for Net {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        Ok(encode(&NetState { mac: self.mac }))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        let s: NetState = decode(state)?;
        if s.mac != self.mac {
            return Err(PersistError(format!(
                "{}: the guest knew MAC {:02x?}, the device has {:02x?}",
                self.name, s.mac, self.mac
            )));
        }
        Ok(())
    }
}
