//! The PM1 block's saved state: status, enables, control, and the PM
//! timer's count, which carries on from there instead of jumping (guests
//! use it as a clock).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{PM_TIMER_HZ, Pm1, SCI_EN};
use crate::devices::persist::{Persist, PersistError, decode, encode};

#[derive(Serialize, Deserialize)]
struct Pm1State {
    status: u16,
    enable: u16,
    control: u16,
    /// Nanoseconds the PM timer has run.
    timer_ns: u64,
}

impl Persist for Pm1 {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        Ok(encode(&Pm1State {
            status: self.status,
            enable: self.enable,
            control: self.control,
            timer_ns: u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        }))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        let s: Pm1State = decode(state)?;
        self.status = s.status;
        self.enable = s.enable;
        // SCI_EN is fixed: the machine is always in ACPI mode.
        self.control = s.control | SCI_EN;
        // The timer wraps at 32 bits; only its phase in that period
        // matters, which also keeps `started` representable.
        let period_ns = (1u128 << 32) * 1_000_000_000 / u128::from(PM_TIMER_HZ);
        let phase = Duration::from_nanos((u128::from(s.timer_ns) % period_ns) as u64);
        let now = Instant::now();
        self.started = now.checked_sub(phase).unwrap_or(now);
        // A pending event keeps its level-triggered line up.
        self.update_sci();
        Ok(())
    }
}
