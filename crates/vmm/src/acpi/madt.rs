//! The MADT: one local APIC per vCPU, the in-kernel IOAPIC, the SCI's
//! trigger mode, and the LINT1 NMI wiring every CPU has.
//!
//! ISA IRQ 0 needs no override: KVM's default routing sends the PIT's
//! GSI 0 to IOAPIC pin 0, which is what "no override" means.

use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic,
};
use acpi_tables::{Aml, AmlSink};
use zerocopy::{Immutable, IntoBytes};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::devices::acpi_pm::SCI_IRQ;
use crate::platform::{IOAPIC_ADDR, IOAPIC_ID, LAPIC_ADDR, Platform};

/// MADT flag: the machine also has dual 8259 PICs.
const PCAT_COMPAT: u32 = 1;

/// MPS INTI flags: polarity active low (bits 1:0 = 3), trigger level
/// (bits 3:2 = 3).
const ACTIVE_LOW_LEVEL: u16 = 0x000f;

/// Interrupt Source Override (type 2).
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct InterruptSourceOverride {
    kind: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: u32,
    flags: u16,
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

/// Local APIC NMI (type 4).
#[repr(C, packed)]
#[derive(Clone, Copy, IntoBytes, Immutable)]
struct LocalApicNmi {
    kind: u8,
    length: u8,
    processor_uid: u8,
    flags: u16,
    lint: u8,
}

impl Aml for LocalApicNmi {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.as_bytes());
    }
}

/// The MADT's bytes.
pub fn table(platform: &Platform) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for index in 0..platform.cpus {
        // UID and APIC ID are the vCPU index, as CPUID reports it.
        madt.add_structure(ProcessorLocalApic::new(
            index as u8,
            index as u8,
            EnabledStatus::Enabled,
        ));
    }
    madt.add_structure(IoApic::new(IOAPIC_ID, IOAPIC_ADDR, 0));
    madt.add_structure(InterruptSourceOverride {
        kind: 2,
        length: 10,
        bus: 0,
        source: SCI_IRQ,
        gsi: u32::from(SCI_IRQ),
        flags: ACTIVE_LOW_LEVEL,
    });
    madt.add_structure(LocalApicNmi {
        kind: 4,
        length: 6,
        // All processors.
        processor_uid: 0xff,
        flags: 0,
        lint: 1,
    });
    let mut bytes = Vec::new();
    madt.to_aml_bytes(&mut bytes);
    set_flags(&mut bytes, PCAT_COMPAT);
    bytes
}

/// The crate builds the MADT with no flags; set them and fix the checksum.
fn set_flags(table: &mut [u8], flags: u32) {
    const FLAGS: usize = 40;
    table[FLAGS..FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    super::fix_checksum(table);
}
