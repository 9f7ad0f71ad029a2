//! vmmci's saved state: its configuration space, the registers the guest
//! sees, and how long a running request timer has left (timers count
//! only while the VM runs, so the time in transit does not count).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Registers, Vmmci};
use crate::devices::pci::persist::ConfigSpaceState;
use crate::devices::persist::{Persist, PersistError, decode, encode};

#[derive(Serialize, Deserialize)]
struct VmmciState {
    config: ConfigSpaceState,
    guest_features: u32,
    queue_pfn: u32,
    queue_select: u16,
    status: u8,
    isr: u8,
    command: u32,
    /// Milliseconds left on the request timer, if one runs.
    timer_left_ms: Option<u64>,
    /// When the timer runs out the VM is reset rather than ended.
    reboot_on_timeout: bool,
    /// The host time the guest last sampled (seconds, microseconds).
    sampled: (u64, u32),
}

impl Persist for Vmmci {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        let regs = self.shared.lock();
        let timer_left_ms = regs.deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
        });
        Ok(encode(&VmmciState {
            config: self.config.state(),
            guest_features: regs.guest_features,
            queue_pfn: regs.queue_pfn,
            queue_select: regs.queue_select,
            status: regs.status,
            isr: regs.isr,
            command: regs.command,
            timer_left_ms,
            reboot_on_timeout: regs.reboot_on_timeout,
            sampled: regs.sampled,
        }))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        let s: VmmciState = decode(state)?;
        self.config.restore_state(&s.config)?;
        let mut regs = self.shared.lock();
        *regs = Registers {
            guest_features: s.guest_features,
            queue_pfn: s.queue_pfn,
            queue_select: s.queue_select,
            status: s.status,
            isr: s.isr,
            command: s.command,
            deadline: None,
            reboot_on_timeout: false,
            sampled: s.sampled,
        };
        if let Some(ms) = s.timer_left_ms {
            self.shared.arm(&mut regs, Duration::from_millis(ms));
            regs.reboot_on_timeout = s.reboot_on_timeout;
        }
        // An interrupt the guest has not taken yet keeps the line up.
        if regs.isr != 0 {
            self.shared.raise();
        }
        Ok(())
    }
}
