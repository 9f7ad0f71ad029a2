//! The UART's saved state: vm-superio's registers and receive FIFO, and a
//! BREAK the guest has not seen yet. The console ring is host-side and
//! stays behind.

use serde::{Deserialize, Serialize};
use vm_superio::Serial as Uart;
use vm_superio::serial::SerialState;

use super::{ConsoleWriter, InputEvents, IrqTrigger, Serial};
use crate::devices::persist::{Persist, PersistError, decode, encode};

#[derive(Serialize, Deserialize)]
struct UartState {
    divisor_low: u8,
    divisor_high: u8,
    interrupt_enable: u8,
    interrupt_identification: u8,
    line_control: u8,
    line_status: u8,
    modem_control: u8,
    modem_status: u8,
    scratch: u8,
    receive_fifo: Vec<u8>,
    break_pending: bool,
}

impl Persist for Serial {
    fn save(&self) -> Result<Vec<u8>, PersistError> {
        let s = self.uart.state();
        Ok(encode(&UartState {
            divisor_low: s.baud_divisor_low,
            divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            receive_fifo: s.in_buffer,
            break_pending: self.break_pending,
        }))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError> {
        let s: UartState = decode(state)?;
        let registers = SerialState {
            baud_divisor_low: s.divisor_low,
            baud_divisor_high: s.divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.receive_fifo,
        };
        // The new UART keeps this VM's interrupt line and console.
        let irq = self
            .uart
            .interrupt_evt()
            .0
            .try_clone()
            .map_err(|e| PersistError(format!("uart irq: {e}")))?;
        let events = InputEvents(self.uart.events().0.clone());
        let writer = ConsoleWriter(self.uart.writer().0.clone());
        self.uart = Uart::from_state(&registers, IrqTrigger(irq), events, writer)
            .map_err(|e| PersistError(format!("uart: {e:?}")))?;
        self.break_pending = s.break_pending;
        Ok(())
    }
}
