//! COM1: a 16550A UART at 0x3F8, IRQ 4, wired to the console.
//!
//! The register model is vm-superio's; this file connects it to the
//! console ring (output), the relay thread (input) and the interrupt line,
//! and adds the BREAK condition the console client can raise (`~#`), which
//! vm-superio does not model.

use std::io;
use std::sync::Arc;

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial as Uart, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::console::{Console, ConsoleInput};

mod persist;

pub const COM1_BASE: u64 = 0x3f8;
pub const COM1_LEN: u64 = 8;
pub const COM1_IRQ: u32 = 4;

const LSR_OFFSET: u64 = 5;
/// Line status: break interrupt.
const LSR_BREAK: u8 = 0x10;

/// Raises the UART's interrupt through an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Writes UART output into the console ring.
pub struct ConsoleWriter(Arc<Console>);

impl io::Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.output(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Tells the relay thread the receive FIFO drained.
pub struct InputEvents(Arc<Console>);

impl SerialEvents for InputEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        self.0.notify();
    }
}

pub struct Serial {
    uart: Uart<IrqTrigger, InputEvents, ConsoleWriter>,
    break_pending: bool,
}

impl Serial {
    pub fn new(irq: EventFd, console: Arc<Console>) -> Serial {
        Serial {
            uart: Uart::with_events(
                IrqTrigger(irq),
                InputEvents(console.clone()),
                ConsoleWriter(console),
            ),
            break_pending: false,
        }
    }

    /// Signals a BREAK: the guest sees a NUL with the break-interrupt bit in
    /// the line status (Linux turns it into SysRq, OpenBSD into ddb).
    pub fn send_break(&mut self) {
        self.break_pending = true;
        let _ = self.uart.enqueue_raw_bytes(&[0]);
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut value = self.uart.read(offset as u8);
        if offset == LSR_OFFSET && self.break_pending {
            // The bit is cleared by reading the line status, as on a 16550.
            value |= LSR_BREAK;
            self.break_pending = false;
        }
        data.fill(0);
        data[0] = value;
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let _ = self.uart.write(offset as u8, data[0]);
    }
}

impl ConsoleInput for Serial {
    fn space(&mut self) -> usize {
        self.uart.fifo_capacity()
    }
    fn push(&mut self, bytes: &[u8]) {
        let _ = self.uart.enqueue_raw_bytes(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_reaches_the_ring_and_raises_the_irq() {
        let console = Console::new(&Default::default()).unwrap();
        let irq = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let mut serial = Serial::new(irq.try_clone().unwrap(), console.clone());
        serial.write(1, &[0x02]); // IER: transmitter empty
        assert_eq!(irq.read().unwrap(), 1);
        let mut iir = [0u8];
        serial.read(2, &mut iir); // acknowledge
        serial.write(0, b"A");
        assert_eq!(console.history(), b"A");
        assert_eq!(irq.read().unwrap(), 1);
    }

    #[test]
    fn input_and_break() {
        let console = Console::new(&Default::default()).unwrap();
        let mut serial = Serial::new(EventFd::new(0).unwrap(), console);
        assert_eq!(serial.space(), 64);
        serial.push(b"hi");
        let mut b = [0u8];
        serial.read(5, &mut b);
        assert_eq!(b[0] & 1, 1, "data ready");
        serial.read(0, &mut b);
        assert_eq!(b[0], b'h');
        serial.read(0, &mut b);
        serial.send_break();
        serial.read(5, &mut b);
        assert_eq!(b[0] & (LSR_BREAK | 1), LSR_BREAK | 1);
        serial.read(5, &mut b);
        assert_eq!(b[0] & LSR_BREAK, 0, "break is reported once");
    }
}
