//! ACPI fixed hardware: the PM1a event and control blocks and the PM timer
//! the FADT points at, at 0x600–0x60B (free in the port map of docs/machine.md, "Legacy devices").
//! Every address, bit and value the ACPI tables publish about this
//! hardware is defined here, so tables and device cannot drift apart.
//!
//! | port  | size | register |
//! |-------|------|----------|
//! | 0x600 | 2 | PM1a_STS: status, write 1 to clear |
//! | 0x602 | 2 | PM1a_EN: event enables (TMR, GBL, PWRBTN, SLPBTN, RTC, PCIEXP_WAKE_DIS read back; only PWRBTN's event is ever raised) |
//! | 0x604 | 2 | PM1a_CNT: SCI_EN (always set: there is no SMI command port, the machine is always in ACPI mode), SLP_TYP, SLP_EN |
//! | 0x608 | 4 | PM_TMR: 32-bit free-running counter at 3.579545 MHz |
//!
//! Writing SLP_TYP = [`SLP_TYP_S5`] with SLP_EN powers the VM off (the
//! DSDT's `_S5`). The power button is a fixed feature (FADT flag
//! PWR_BUTTON clear): whoever presses it sets [`PWRBTN_STS`] with
//! [`Pm1::press_power_button`] and, when [`Pm1::sci_pending`] holds,
//! raises [`SCI_IRQ`] (level-triggered, shareable, active low as the MADT
//! says) until the guest clears the status bit.

use std::sync::Arc;
use std::time::Instant;

use crate::bus::BusDevice;
use crate::devices::level_irq::LevelIrq;

mod persist;

/// First port of the block.
pub const PM_BASE: u64 = 0x600;
/// Ports the block spans (event 4, control 2, padding 2, timer 4).
pub const PM_LEN: u64 = 0xc;
pub const PM1A_EVT_BLK: u16 = PM_BASE as u16;
pub const PM1_EVT_LEN: u8 = 4;
pub const PM1A_CNT_BLK: u16 = PM_BASE as u16 + 4;
pub const PM1_CNT_LEN: u8 = 2;
pub const PM_TMR_BLK: u16 = PM_BASE as u16 + 8;
pub const PM_TMR_LEN: u8 = 4;

/// The system control interrupt: ISA IRQ 9, as on most PCs. It is also in
/// vmd's PCI IRQ list (the fifth device's), so it may be shared: the MADT
/// declares it level-triggered and active low, the attributes a PCI INTx
/// routed by `_PRT` gets, so both users of the line agree.
pub const SCI_IRQ: u8 = 9;

/// The `_S5` sleep type value the DSDT publishes and PM1a_CNT decodes.
pub const SLP_TYP_S5: u16 = 5;

/// PM1 status and enable bits of the fixed events ACPI defines, at the
/// same position in both registers: the PM timer's carry, the Global
/// Lock's release, the power and sleep buttons, the RTC alarm.
pub const TMR_STS: u16 = 1 << 0;
pub const GBL_STS: u16 = 1 << 5;
pub const PWRBTN_STS: u16 = 1 << 8;
pub const SLPBTN_STS: u16 = 1 << 9;
pub const RTC_STS: u16 = 1 << 10;
/// PM1_EN bit 14 disables PCI Express wake events; unlike the others it
/// enables nothing.
pub const PCIEXP_WAKE_DIS: u16 = 1 << 14;
/// Enable bits that read back as written; the reserved ones read 0. OSPM
/// enables each fixed event by writing its bit and reading it back, and
/// takes a bit that does not stick for missing hardware (Linux then turns
/// off the Global Lock and the RTC event and logs errors). Enabling an
/// event this device never raises is harmless: only the power button's
/// status is ever set.
const PM1_EN_WRITABLE: u16 =
    TMR_STS | GBL_STS | PWRBTN_STS | SLPBTN_STS | RTC_STS | PCIEXP_WAKE_DIS;
/// The enable bits that let a status bit raise the SCI.
const PM1_EVENTS: u16 = TMR_STS | GBL_STS | PWRBTN_STS | SLPBTN_STS | RTC_STS;

/// PM1 control bits.
pub const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0x7 << SLP_TYP_SHIFT;
pub const SLP_EN: u16 = 1 << 13;
/// Bits of PM1a_CNT that read back what was written (BM_RLD, SLP_TYP).
/// GBL_RLS (bit 2), like SLP_EN, is write-only and reads 0: it would tell
/// firmware that OSPM released the Global Lock, and no firmware here ever
/// holds the lock.
const PM1_CNT_STORED: u16 = (1 << 1) | SLP_TYP_MASK;

/// The PM timer's rate, in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;

// Register offsets inside the block.
const STS: u64 = 0;
const EN: u64 = 2;
const CNT: u64 = 4;
const TMR: u64 = 8;

pub struct Pm1 {
    status: u16,
    enable: u16,
    control: u16,
    started: Instant,
    on_power_off: Box<dyn Fn() + Send>,
    /// The SCI, once connected.
    sci: Option<Arc<LevelIrq>>,
}

impl Pm1 {
    /// `on_power_off` runs when the guest enters S5.
    pub fn new(on_power_off: Box<dyn Fn() + Send>) -> Pm1 {
        Pm1 {
            status: 0,
            enable: 0,
            control: SCI_EN,
            started: Instant::now(),
            on_power_off,
            sci: None,
        }
    }

    /// Connects the SCI line the device raises.
    pub fn connect_sci(&mut self, sci: Arc<LevelIrq>) {
        self.sci = Some(sci);
    }

    /// Records a power-button press and, if the guest listens for it,
    /// raises the SCI.
    pub fn press_power_button(&mut self) {
        self.status |= PWRBTN_STS;
        self.update_sci();
    }

    /// Whether the guest's ACPI code listens for the power button: an OS
    /// that handles it enables its event.
    pub fn power_button_enabled(&self) -> bool {
        self.enable & PWRBTN_STS != 0
    }

    fn update_sci(&self) {
        if self.sci_pending()
            && let Some(sci) = &self.sci
        {
            sci.raise();
        }
    }

    /// Whether the SCI line should be asserted.
    pub fn sci_pending(&self) -> bool {
        self.status & self.enable & PM1_EVENTS != 0
    }

    fn timer(&self) -> u32 {
        let ns = self.started.elapsed().as_nanos();
        (ns * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u32
    }

    fn register(&self, offset: u64) -> u32 {
        match offset {
            STS => u32::from(self.status),
            EN => u32::from(self.enable),
            CNT => u32::from(self.control),
            TMR => self.timer(),
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u16) {
        match offset {
            STS => self.status &= !value,
            EN => {
                self.enable = value & PM1_EN_WRITABLE;
                // Enabling an event that is already pending interrupts.
                self.update_sci();
            }
            CNT => {
                self.control = SCI_EN | (value & PM1_CNT_STORED);
                let sleep_type = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
                if value & SLP_EN != 0 && sleep_type == SLP_TYP_S5 {
                    (self.on_power_off)();
                }
            }
            _ => {}
        }
    }
}

/// Which register an access at `offset` hits, and the byte inside it.
fn locate(offset: u64) -> Option<(u64, u64)> {
    match offset {
        0..=1 => Some((STS, offset)),
        2..=3 => Some((EN, offset - 2)),
        4..=5 => Some((CNT, offset - 4)),
        8..=11 => Some((TMR, offset - 8)),
        _ => None,
    }
}

impl BusDevice for Pm1 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Each register is read once per access: the timer moves while
        // its bytes are gathered, and a byte taken from each side of a
        // carry would make time jump (0x28ff, 0x2900 read as 0x29ff).
        let mut read: Option<(u64, u32)> = None;
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = match locate(offset + i as u64) {
                Some((register, at)) => {
                    let value = match read {
                        Some((r, value)) if r == register => value,
                        _ => {
                            let value = self.register(register);
                            read = Some((register, value));
                            value
                        }
                    };
                    (value >> (8 * at)) as u8
                }
                None => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // The 16-bit registers are written whole (the ACPI access width);
        // a byte write changes its half and keeps the other.
        let Some((register, at)) = locate(offset) else {
            return;
        };
        if register == TMR {
            return;
        }
        let old = match register {
            // Status bits are write-1-to-clear: untouched bytes write 0.
            STS => 0u16,
            _ => self.register(register) as u16,
        };
        let mut bytes = old.to_le_bytes();
        for (i, &b) in data
            .iter()
            .enumerate()
            .take(2usize.saturating_sub(at as usize))
        {
            bytes[at as usize + i] = b;
        }
        self.write_register(register, u16::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn pm() -> (Pm1, Arc<AtomicBool>) {
        let off = Arc::new(AtomicBool::new(false));
        let flag = off.clone();
        (
            Pm1::new(Box::new(move || flag.store(true, Ordering::SeqCst))),
            off,
        )
    }

    fn read16(pm: &mut Pm1, offset: u64) -> u16 {
        let mut b = [0u8; 2];
        pm.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    #[test]
    fn always_in_acpi_mode_and_s5_powers_off() {
        let (mut pm, off) = pm();
        assert_eq!(read16(&mut pm, CNT) & SCI_EN, SCI_EN);
        // Another sleep state is not offered: nothing happens.
        pm.write(CNT, &(SLP_EN | (1 << SLP_TYP_SHIFT)).to_le_bytes());
        assert!(!off.load(Ordering::SeqCst));
        // SLP_TYP alone stores the type, SLP_EN reads back 0.
        pm.write(CNT, &(SLP_TYP_S5 << SLP_TYP_SHIFT).to_le_bytes());
        assert_eq!(read16(&mut pm, CNT), SCI_EN | (SLP_TYP_S5 << SLP_TYP_SHIFT));
        assert!(!off.load(Ordering::SeqCst));
        pm.write(CNT, &((SLP_TYP_S5 << SLP_TYP_SHIFT) | SLP_EN).to_le_bytes());
        assert!(off.load(Ordering::SeqCst));
    }

    #[test]
    fn power_button_status_enable_and_clear() {
        let (mut pm, _) = pm();
        pm.press_power_button();
        assert_eq!(read16(&mut pm, STS), PWRBTN_STS);
        assert!(!pm.sci_pending(), "not enabled yet");
        pm.write(EN, &PWRBTN_STS.to_le_bytes());
        assert_eq!(read16(&mut pm, EN), PWRBTN_STS);
        assert!(pm.sci_pending());
        // Writing 0 leaves the status; writing the bit clears it.
        pm.write(STS, &0u16.to_le_bytes());
        assert_eq!(read16(&mut pm, STS), PWRBTN_STS);
        pm.write(STS + 1, &[(PWRBTN_STS >> 8) as u8]);
        assert_eq!(read16(&mut pm, STS), 0);
        assert!(!pm.sci_pending());
    }

    #[test]
    fn timer_counts_at_its_rate() {
        let (mut pm, _) = pm();
        let read = |pm: &mut Pm1| {
            let mut b = [0u8; 4];
            pm.read(TMR, &mut b);
            u32::from_le_bytes(b)
        };
        let a = read(&mut pm);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = read(&mut pm);
        let ticks = b.wrapping_sub(a) as u64;
        // 20 ms is 71591 ticks; allow for a slow scheduler.
        assert!(ticks >= 71_000, "{ticks}");
        assert!(ticks < PM_TIMER_HZ, "{ticks}");
        pm.write(TMR, &[0; 4]);
        assert!(read(&mut pm) >= b, "the timer is read-only");
    }

    #[test]
    fn fixed_event_enables_read_back_and_reserved_bits_do_not() {
        let (mut pm, _) = pm();
        for bit in [
            TMR_STS,
            GBL_STS,
            PWRBTN_STS,
            SLPBTN_STS,
            RTC_STS,
            PCIEXP_WAKE_DIS,
        ] {
            pm.write(EN, &bit.to_le_bytes());
            assert_eq!(read16(&mut pm, EN), bit, "{bit:#x}");
            // As OSPM does it: one bit set in what is there, by byte too.
            pm.write(EN, &0u16.to_le_bytes());
            let [low, high] = bit.to_le_bytes();
            if low != 0 {
                pm.write(EN, &[low]);
            } else {
                pm.write(EN + 1, &[high]);
            }
            assert_eq!(read16(&mut pm, EN), bit, "{bit:#x} by byte");
        }
        pm.write(EN, &0xffffu16.to_le_bytes());
        assert_eq!(read16(&mut pm, EN), PM1_EN_WRITABLE, "reserved bits read 0");
        assert_eq!(PM1_EN_WRITABLE, 0x4721);
        // No event is pending for enabling: none of them was raised.
        assert_eq!(read16(&mut pm, STS), 0);
        assert!(!pm.sci_pending());
        pm.press_power_button();
        assert!(pm.sci_pending());
        pm.write(STS, &PWRBTN_STS.to_le_bytes());
        assert!(!pm.sci_pending());
    }

    #[test]
    fn write_only_control_bits_read_zero() {
        let (mut pm, _) = pm();
        pm.write(CNT, &((1u16 << 1) | (1 << 2)).to_le_bytes());
        assert_eq!(
            read16(&mut pm, CNT),
            SCI_EN | (1 << 1),
            "BM_RLD stays, GBL_RLS does not"
        );
    }
}
