//! The one function of the i8042 keyboard controller a VM needs: the
//! "pulse reset line" command (0xFE written to port 0x64), which guests use
//! to reboot. No keyboard is emulated; reads of the controller's ports are
//! left to the unhandled-port rule (all ones), which makes firmware give up
//! its keyboard probe at once instead of waiting for a timeout.

use crate::bus::BusDevice;

pub const I8042_COMMAND_PORT: u64 = 0x64;
const CMD_PULSE_RESET: u8 = 0xfe;

pub struct I8042Reset {
    on_reset: Box<dyn Fn() + Send>,
}

impl I8042Reset {
    pub fn new(on_reset: Box<dyn Fn() + Send>) -> I8042Reset {
        I8042Reset { on_reset }
    }
}

impl BusDevice for I8042Reset {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if data.first() == Some(&CMD_PULSE_RESET) {
            (self.on_reset)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn pulse_reset() {
        let hit = Arc::new(AtomicBool::new(false));
        let h = hit.clone();
        let mut dev = I8042Reset::new(Box::new(move || h.store(true, Ordering::SeqCst)));
        dev.write(0, &[0xaa]);
        assert!(!hit.load(Ordering::SeqCst));
        dev.write(0, &[0xfe]);
        assert!(hit.load(Ordering::SeqCst));
    }
}
