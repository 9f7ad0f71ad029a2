//! The DSDT: the devices the guest cannot probe by itself.
//!
//! - `\_SB.PCI0`: the PCI root bridge on bus 0, its I/O and MMIO windows,
//!   and `_PRT`, which routes each present function's INTA to the fixed
//!   IRQ it was given (docs/machine.md, "PCI devices"). The routing comes from the bus as
//!   built, so new devices need no edit here. Entries name the GSI
//!   directly (no link devices): the IRQs never move.
//! - `\_SB.COM1`: the 16550 at 0x3F8, IRQ 4.
//! - `\_SB.Cnnn`: one processor device per vCPU, matching the MADT's
//!   processor UIDs.
//! - `\_S5`: the sleep type that powers the machine off through PM1a_CNT.

use acpi_tables::aml::{
    self, AddressSpace, AddressSpaceCacheable, Device, EISAName, IO, Name, Package, Path,
    ResourceTemplate, Scope,
};
use acpi_tables::{Aml, AmlSink};

use crate::devices::acpi_pm::SLP_TYP_S5;
use crate::devices::pci::root::{CONFIG_PORTS_BASE, CONFIG_PORTS_LEN};
use crate::devices::serial::{COM1_BASE, COM1_IRQ, COM1_LEN};
use crate::memory::PCI_HOLE_START;
use crate::platform::{IOAPIC_ADDR, Platform};

/// The PCI memory window: from the MMIO hole to below the IOAPIC, whose
/// page and the LAPIC's above it are not PCI's to hand out.
const PCI_MMIO_END: u32 = IOAPIC_ADDR - 1;

/// A legacy IRQ descriptor (`IRQNoFlags`): edge-triggered, active high,
/// not shared, the ISA convention for COM1.
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let mask = 1u16 << self.0;
        // Small resource, type 4 (IRQ), two bytes of mask.
        sink.byte(0x22);
        sink.word(mask);
    }
}

/// The DSDT's AML body (everything after the table header).
pub fn body(platform: &Platform) -> Vec<u8> {
    let mut out = Vec::new();
    Scope::new(
        Path::new("\\_SB_"),
        vec![&pci_root(platform), &com1(), &processors(platform)],
    )
    .to_aml_bytes(&mut out);
    sleep_state_s5().to_aml_bytes(&mut out);
    out
}

fn pci_root(platform: &Platform) -> impl Aml {
    PciRoot {
        routes: platform
            .pci_interrupts
            .iter()
            .map(|p| (p.slot, p.irq))
            .collect(),
    }
}

struct PciRoot {
    routes: Vec<(u8, u8)>,
}

impl Aml for PciRoot {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let config_ports = IO::new(
            CONFIG_PORTS_BASE as u16,
            CONFIG_PORTS_BASE as u16,
            1,
            CONFIG_PORTS_LEN as u8,
        );
        let config_end = (CONFIG_PORTS_BASE + CONFIG_PORTS_LEN) as u16;
        let bus_numbers = AddressSpace::<u16>::new_bus_number(0, 0);
        let io_below = AddressSpace::<u16>::new_io(0, CONFIG_PORTS_BASE as u16 - 1, None);
        let io_above = AddressSpace::<u16>::new_io(config_end, 0xffff, None);
        let mmio = AddressSpace::<u32>::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            PCI_HOLE_START as u32,
            PCI_MMIO_END,
            None,
        );
        let crs = ResourceTemplate::new(vec![
            &bus_numbers,
            &config_ports,
            &io_below,
            &io_above,
            &mmio,
        ]);

        // _PRT entries: {address (slot in the high word, any function),
        // pin (0 = INTA), source (0 = a GSI, not a link device), GSI}.
        let addresses: Vec<u32> = self
            .routes
            .iter()
            .map(|&(slot, _)| (u32::from(slot) << 16) | 0xffff)
            .collect();
        let gsis: Vec<u32> = self.routes.iter().map(|&(_, irq)| u32::from(irq)).collect();
        let pin_inta = aml::ZERO;
        let source_gsi = aml::ZERO;
        let entries: Vec<Package> = addresses
            .iter()
            .zip(&gsis)
            .map(|(address, gsi)| Package::new(vec![address, &pin_inta, &source_gsi, gsi]))
            .collect();
        let prt = Package::new(entries.iter().map(|e| e as &dyn Aml).collect());

        let zero = aml::ZERO;
        Device::new(
            Path::new("PCI0"),
            vec![
                &Name::new(Path::new("_HID"), &EISAName::new("PNP0A03")),
                &Name::new(Path::new("_ADR"), &zero),
                &Name::new(Path::new("_BBN"), &zero),
                &Name::new(Path::new("_UID"), &zero),
                &Name::new(Path::new("_CRS"), &crs),
                &Name::new(Path::new("_PRT"), &prt),
            ],
        )
        .to_aml_bytes(sink);
    }
}

fn com1() -> impl Aml {
    Com1
}

struct Com1;

impl Aml for Com1 {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let ports = IO::new(COM1_BASE as u16, COM1_BASE as u16, 1, COM1_LEN as u8);
        let irq = IrqNoFlags(COM1_IRQ as u8);
        let crs = ResourceTemplate::new(vec![&ports, &irq]);
        let uid: u8 = 1;
        Device::new(
            Path::new("COM1"),
            vec![
                &Name::new(Path::new("_HID"), &EISAName::new("PNP0501")),
                &Name::new(Path::new("_UID"), &uid),
                &Name::new(Path::new("_CRS"), &crs),
            ],
        )
        .to_aml_bytes(sink);
    }
}

fn processors(platform: &Platform) -> impl Aml {
    Processors {
        count: platform.cpus,
    }
}

struct Processors {
    count: u32,
}

impl Aml for Processors {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let hid: &'static str = "ACPI0007";
        for index in 0..self.count {
            // Names are four characters: C plus three hex digits.
            let name = format!("C{index:03X}");
            Device::new(
                Path::new(&name),
                vec![
                    &Name::new(Path::new("_HID"), &hid),
                    &Name::new(Path::new("_UID"), &index),
                ],
            )
            .to_aml_bytes(sink);
        }
    }
}

fn sleep_state_s5() -> impl Aml {
    S5
}

struct S5;

impl Aml for S5 {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let slp_typ = SLP_TYP_S5 as u8;
        let zero = aml::ZERO;
        // {PM1a SLP_TYP, PM1b SLP_TYP, reserved, reserved}
        Name::new(
            Path::new("_S5_"),
            &Package::new(vec![&slp_typ, &slp_typ, &zero, &zero]),
        )
        .to_aml_bytes(sink);
    }
}
