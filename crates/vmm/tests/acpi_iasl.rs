//! The ACPI tables as ACPICA's own disassembler sees them: every table
//! decompiles with `iasl -d` without errors or warnings, and the DSDT says
//! what the platform is.

use std::process::Command;

use vmm::acpi::AcpiTables;
use vmm::platform::{PciInterrupt, Platform};

fn platform() -> Platform {
    Platform {
        cpus: 4,
        cpu_signature: 0,
        cpu_features: 0,
        // Slots 1..=10 take vmd's IRQ list in order (docs/machine.md, "PCI devices").
        pci_interrupts: [3u8, 5, 6, 7, 9, 10, 11, 12, 14, 15]
            .iter()
            .enumerate()
            .map(|(i, &irq)| PciInterrupt {
                slot: i as u8 + 1,
                irq,
            })
            .collect(),
    }
}

/// Disassembles `table` and returns the .dsl text; fails on any error.
fn disassemble(dir: &std::path::Path, name: &str, table: &[u8]) -> String {
    let input = dir.join(format!("{name}.dat"));
    std::fs::write(&input, table).unwrap();
    let out = Command::new("iasl")
        .arg("-d")
        .arg(&input)
        .current_dir(dir)
        .output()
        .expect("iasl must be installed (acpica-tools, scripts/install-deps.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "iasl -d {name}: {stdout}\n{stderr}");
    for text in [&stdout, &stderr] {
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("error") || lower.contains("0 errors"),
            "iasl -d {name} reported errors:\n{text}"
        );
        assert!(!lower.contains("warning"), "iasl -d {name} warned:\n{text}");
    }
    std::fs::read_to_string(dir.join(format!("{name}.dsl"))).expect("iasl wrote no .dsl")
}

#[test]
fn every_table_decompiles_cleanly_with_iasl() {
    testkit::needs!("iasl");
    let dir = testkit::tmp::TempDir::new("iasl");
    let tables = AcpiTables::build(&platform(), 0xe0040);

    // The RSDP has no table header for iasl to recognise; its checksums
    // and pointer are checked by the unit tests.
    let dsdt = disassemble(dir.path(), "dsdt", tables.table(b"DSDT").unwrap());
    for needle in [
        "Device (PCI0)",
        "EisaId (\"PNP0A03\")",
        "Name (_PRT, Package",
        "Device (COM1)",
        "EisaId (\"PNP0501\")",
        "IO (Decode16,",
        "0x03F8,",
        "IRQNoFlags ()",
        "{4}",
        "Name (_S5, Package",
        "\"ACPI0007\"",
        "Device (C003)",
    ] {
        assert!(dsdt.contains(needle), "DSDT lacks {needle:?}:\n{dsdt}");
    }
    // One _PRT entry per slot, INTA to the slot's IRQ.
    for slot in 1..=10 {
        let address = format!("0x{slot:04X}FFFF");
        assert!(dsdt.contains(&address), "no _PRT entry {address}:\n{dsdt}");
    }

    let fadt = disassemble(dir.path(), "facp", tables.table(b"FACP").unwrap());
    for needle in [
        "SCI Interrupt : 0009",
        "PM1A Event Block Address : 00000600",
        "PM1A Control Block Address : 00000604",
        "PM Timer Block Address : 00000608",
        "Value to cause reset : 06",
    ] {
        let squeezed: String = fadt.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(squeezed.contains(needle), "FADT lacks {needle:?}:\n{fadt}");
    }

    let madt = disassemble(dir.path(), "apic", tables.table(b"APIC").unwrap());
    assert_eq!(madt.matches("Processor Local APIC").count(), 4, "{madt}");
    assert!(madt.contains("I/O APIC"), "{madt}");
    assert!(madt.contains("Interrupt Source Override"), "{madt}");

    let facs = disassemble(dir.path(), "facs", tables.table(b"FACS").unwrap());
    assert!(facs.contains("\"FACS\""), "{facs}");
    let xsdt = disassemble(dir.path(), "xsdt", tables.table(b"XSDT").unwrap());
    assert_eq!(xsdt.matches("ACPI Table Address").count(), 2, "{xsdt}");
}

#[test]
#[ignore = "writes the disassembly to $ACPI_DUMP_DIR for reading"]
fn dump() {
    let dir = std::path::PathBuf::from(std::env::var_os("ACPI_DUMP_DIR").expect("ACPI_DUMP_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let tables = AcpiTables::build(&platform(), 0xe0040);
    for sig in [b"DSDT", b"FACP", b"APIC"] {
        disassemble(
            &dir,
            std::str::from_utf8(sig).unwrap(),
            tables.table(sig).unwrap(),
        );
    }
}
