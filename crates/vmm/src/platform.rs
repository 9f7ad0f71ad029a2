//! What the platform tables (ACPI, MP) describe: the machine as built, not
//! a fixed model. The CPUs, the interrupt controllers KVM emulates in the
//! kernel, and the INTx line of every PCI function actually present, so a
//! new device needs no table edit.

use kvm_bindings::CpuId;

use crate::devices::pci::PciRoot;

/// The in-kernel IOAPIC: KVM places it at the standard address, with 24
/// pins wired one-to-one to GSIs 0–23 (KVM's default routing, which the
/// VMM keeps). Its ID register resets to 0, and the tables say the same.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const IOAPIC_ID: u8 = 0;
/// The version KVM's IOAPIC reports (82093AA-compatible).
pub const IOAPIC_VERSION: u8 = 0x11;
/// Every vCPU's local APIC, at the architectural default base.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// The version KVM's local APIC reports.
pub const LAPIC_VERSION: u8 = 0x14;

/// PCI function `slot` raises INTA on `irq` (docs/machine.md, "PCI devices").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciInterrupt {
    pub slot: u8,
    pub irq: u8,
}

/// The machine the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// vCPUs, with local APIC IDs 0..cpus (the IDs CPUID reports).
    pub cpus: u32,
    /// CPUID leaf 1 EAX and EDX of the guest's CPUs (the MP table's
    /// processor signature and feature flags).
    pub cpu_signature: u32,
    pub cpu_features: u32,
    /// One entry per PCI function with an interrupt pin, in slot order.
    pub pci_interrupts: Vec<PciInterrupt>,
}

impl Platform {
    /// Describes `cpus` vCPUs with the guest CPUID `cpuid` and the PCI bus
    /// as it is now.
    pub fn new(cpus: u32, cpuid: &CpuId, pci: &PciRoot) -> Platform {
        let leaf1 = cpuid.as_slice().iter().find(|e| e.function == 1);
        Platform {
            cpus,
            cpu_signature: leaf1.map_or(0, |e| e.eax),
            cpu_features: leaf1.map_or(0, |e| e.edx),
            pci_interrupts: pci.interrupts(),
        }
    }

    /// The PCI functions' IRQs, each once.
    pub fn pci_irqs(&self) -> Vec<u8> {
        let mut irqs: Vec<u8> = self.pci_interrupts.iter().map(|p| p.irq).collect();
        irqs.sort_unstable();
        irqs.dedup();
        irqs
    }
}
