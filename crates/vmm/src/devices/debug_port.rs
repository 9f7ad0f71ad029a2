//! Port 0x402: the firmware debug console (QEMU's debugcon), line by line
//! into the VM's log. SeaBIOS writes its diagnostics here (PCI probing, CPU
//! count, boot decisions); reading the port returns 0xE9, which is how
//! SeaBIOS knows the port is there.
//!
//! The port is only present when vmd logs debug messages: every byte
//! written costs a VM exit, and firmware that finds no port skips its
//! diagnostics altogether, which makes booting noticeably faster.

use crate::bus::BusDevice;

pub const DEBUG_PORT: u64 = 0x402;
const READBACK: u8 = 0xe9;
/// What an absent port reads as.
const ABSENT: u8 = 0xff;
/// Lines longer than this are logged in pieces.
const MAX_LINE: usize = 512;

pub struct DebugPort {
    vm_name: String,
    present: bool,
    line: Vec<u8>,
    sink: Box<dyn FnMut(&str) + Send>,
}

impl DebugPort {
    /// Logs each line at debug level; `present` says whether firmware
    /// should find the port at all.
    pub fn new(vm_name: &str, present: bool) -> DebugPort {
        let name = vm_name.to_string();
        DebugPort::with_sink(
            vm_name,
            present,
            Box::new(move |line| tracing::debug!("{name}: firmware: {line}")),
        )
    }

    pub fn with_sink(vm_name: &str, present: bool, sink: Box<dyn FnMut(&str) + Send>) -> DebugPort {
        DebugPort {
            vm_name: vm_name.to_string(),
            present,
            line: Vec::new(),
            sink,
        }
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line).into_owned();
        let text = text.trim_end_matches('\r');
        (self.sink)(text);
        self.line.clear();
    }

    pub fn vm_name(&self) -> &str {
        &self.vm_name
    }
}

impl BusDevice for DebugPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = if self.present { READBACK } else { ABSENT };
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if !self.present {
            return;
        }
        for &b in data {
            if b == b'\n' {
                self.emit();
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn lines_and_readback() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let l = lines.clone();
        let mut port = DebugPort::with_sink(
            "t",
            true,
            Box::new(move |s: &str| l.lock().unwrap().push(s.into())),
        );
        for b in b"Found 1 cpu(s)\r\nnext" {
            port.write(0, &[*b]);
        }
        assert_eq!(*lines.lock().unwrap(), vec!["Found 1 cpu(s)".to_string()]);
        let mut d = [0u8];
        port.read(0, &mut d);
        assert_eq!(d[0], 0xe9);

        let mut absent = DebugPort::with_sink("t", false, Box::new(|_: &str| panic!("no output")));
        absent.read(0, &mut d);
        assert_eq!(d[0], 0xff);
        absent.write(0, b"x\n");
    }
}
