//! The RTC's saved state: the CMOS bytes, the index latch and the guest's
//! clock offset. The clock keeps following the host's wall clock, so a
//! received guest reads the current time (plus whatever offset it set),
//! as after any pause; the periodic interrupt's phase starts afresh.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Cmos, host_now};
use crate::devices::persist::{Persist, PersistError, decode, encode};

#[derive(Serialize, Deserialize)]
struct RtcState {
    index: u8,
    nmi_disabled: bool,
    ram: Vec<u8>,
    /// Guest clock minus host clock, in seconds.
    offset: i64,
}

impl Persist for Cmos {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        Ok(encode(&RtcState {
            index: self.index as u8,
            nmi_disabled: self.nmi_disabled,
            ram: self.ram.to_vec(),
            offset: self.offset,
        }))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        let s: RtcState = decode(state)?;
        let ram: [u8; 128] = s
            .ram
            .try_into()
            .map_err(|_| PersistError::new("CMOS is not 128 bytes"))?;
        if s.index >= 128 {
            return Err(PersistError::new("CMOS index out of range"));
        }
        self.index = usize::from(s.index);
        self.nmi_disabled = s.nmi_disabled;
        self.ram = ram;
        self.offset = s.offset;
        self.flags_time = host_now();
        self.periodic_epoch = Instant::now();
        self.periodic_ticks = 0;
        Ok(())
    }
}
