//! The FADT: where the fixed ACPI hardware lives (devices/acpi_pm.rs), the
//! SCI, the reset register, and which legacy devices exist.

use acpi_tables::Aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::devices::acpi_pm::{
    PM_TMR_BLK, PM_TMR_LEN, PM1_CNT_LEN, PM1_EVT_LEN, PM1A_CNT_BLK, PM1A_EVT_BLK, SCI_IRQ,
};
use crate::devices::pci::root::{RESET_CONTROL_PORT, RESET_VALUE};

/// Offsets of the FADT fields that hold addresses of other tables.
pub const DSDT: usize = 40;
pub const X_FIRMWARE_CTRL: usize = 132;
pub const X_DSDT: usize = 140;

/// IA-PC boot architecture flags: legacy devices (COM1, the RTC) exist;
/// no i8042 (only its reset line is emulated); no VGA.
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;

fn io_register(port: u16, bytes: u8) -> GAS {
    let access = match bytes {
        1 => AccessSize::ByteAccess,
        2 => AccessSize::WordAccess,
        _ => AccessSize::DwordAccess,
    };
    GAS::new(
        AddressSpace::SystemIo,
        bytes * 8,
        0,
        access,
        u64::from(port),
    )
}

/// The FADT's bytes, pointing at the FACS and DSDT at the given addresses.
pub fn table(facs: u64, dsdt: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        // The power button is a fixed feature (PWR_BUTTON clear); there is
        // no sleep button.
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup)
        .flag(Flags::TmrValExt);
    fadt.sci_int = u16::from(SCI_IRQ).into();
    // No SMI command port: the machine is always in ACPI mode.
    fadt.smi_cmd = 0.into();
    fadt.pm1a_evt_blk = u32::from(PM1A_EVT_BLK).into();
    fadt.pm1a_cnt_blk = u32::from(PM1A_CNT_BLK).into();
    fadt.pm_tmr_blk = u32::from(PM_TMR_BLK).into();
    fadt.pm1_evt_len = PM1_EVT_LEN;
    fadt.pm1_cnt_len = PM1_CNT_LEN;
    fadt.pm_tmr_len = PM_TMR_LEN;
    fadt.x_pm1a_evt_blk = io_register(PM1A_EVT_BLK, PM1_EVT_LEN);
    fadt.x_pm1a_cnt_blk = io_register(PM1A_CNT_BLK, PM1_CNT_LEN);
    fadt.x_pm_tmr_blk = io_register(PM_TMR_BLK, PM_TMR_LEN);
    fadt.iapc_boot_arch = (IAPC_LEGACY_DEVICES | IAPC_VGA_NOT_PRESENT).into();
    fadt.reset_reg = io_register(RESET_CONTROL_PORT, 1);
    fadt.reset_value = RESET_VALUE;
    // The FACS only in the 64-bit field: ACPI wants FIRMWARE_CTRL zero
    // when X_FIRMWARE_CTRL is set. The DSDT in both (tables live below
    // 4 GiB), for firmware that reads only the 32-bit one.
    fadt.x_firmware_ctrl = facs.into();
    fadt.dsdt = (dsdt as u32).into();
    fadt.x_dsdt = dsdt.into();
    let mut bytes = Vec::new();
    fadt.finalize().to_aml_bytes(&mut bytes);
    bytes
}
