//! The PM1 block's saved state: status, enables, control, and the PM
//! timer's count, which carries on from there instead of jumping (guests
//! use it as a clock).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{PM_TIMER_HZ, PM1_CNT_STORED, PM1_EN_WRITABLE, Pm1, SCI_EN};
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
        // What a guest could have written, whatever the stream says (an
        // older sender kept only the power button's enable bit).
        self.enable = s.enable & PM1_EN_WRITABLE;
        // SCI_EN is fixed: the machine is always in ACPI mode.
        self.control = (s.control & PM1_CNT_STORED) | SCI_EN;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;
    use crate::devices::acpi_pm::{GBL_STS, PWRBTN_STS, RTC_STS};

    #[test]
    fn every_enable_bit_moves_with_the_vm() {
        let mut sent = Pm1::new(Box::new(|| {}));
        let enabled = GBL_STS | PWRBTN_STS | RTC_STS;
        sent.write(2, &enabled.to_le_bytes());
        let state = sent.save().unwrap();
        let mut received = Pm1::new(Box::new(|| {}));
        received.restore(&state).unwrap();
        let mut b = [0; 2];
        received.read(2, &mut b);
        assert_eq!(u16::from_le_bytes(b), enabled);
        assert!(received.power_button_enabled());

        // The layout is unchanged (the enables were always a u16): the
        // bytes of a state that enabled only the power button, pressed,
        // restore as they were.
        let old = [0x80, 0x02, 0x80, 0x02, 0x01, 0x00];
        received.restore(&old).unwrap();
        received.read(2, &mut b);
        assert_eq!(u16::from_le_bytes(b), PWRBTN_STS);
        assert!(received.sci_pending());

        // Bits no guest could have set do not come in.
        let odd = encode(&Pm1State {
            status: 0,
            enable: 0xffff,
            control: 0xffff,
            timer_ns: 0,
        });
        received.restore(&odd).unwrap();
        received.read(2, &mut b);
        assert_eq!(u16::from_le_bytes(b), PM1_EN_WRITABLE);
        received.read(4, &mut b);
        assert_eq!(u16::from_le_bytes(b), PM1_CNT_STORED | SCI_EN);
    }
}
