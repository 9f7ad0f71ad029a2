use super::table_loader::{LOADER_FILE, RSDP_FILE, TABLES_FILE, commands, files};
use super::*;
use crate::platform::PciInterrupt;

fn platform(cpus: u32) -> Platform {
    Platform {
        cpus,
        cpu_signature: 0,
        cpu_features: 0,
        pci_interrupts: vec![
            PciInterrupt { slot: 1, irq: 3 },
            PciInterrupt { slot: 2, irq: 5 },
        ],
    }
}

fn sums_to_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[test]
fn every_table_checksums_and_points_where_it_should() {
    let base = 0xe0040;
    let t = AcpiTables::build(&platform(2), base);
    for sig in [b"DSDT", b"FACP", b"APIC", b"XSDT"] {
        let table = t.table(sig).unwrap_or_else(|| panic!("no {sig:?}"));
        assert!(sums_to_zero(table), "{sig:?} checksum");
    }
    assert!(sums_to_zero(&t.rsdp[..20]));
    assert!(sums_to_zero(&t.rsdp));
    assert_eq!(&t.rsdp[..8], b"RSD PTR ");
    assert_eq!(u64_at(&t.rsdp, 24), base + t.offsets.xsdt as u64);
    assert_eq!(t.offsets.facs % FACS_ALIGN, 0);

    let fadt = t.table(b"FACP").unwrap();
    assert_eq!(u64_at(fadt, fadt::X_DSDT), base + t.offsets.dsdt as u64);
    assert_eq!(
        u64_at(fadt, fadt::X_FIRMWARE_CTRL),
        base + t.offsets.facs as u64
    );
    let xsdt = t.table(b"XSDT").unwrap();
    assert_eq!(xsdt.len(), 36 + 16);
    assert_eq!(u64_at(xsdt, 36), base + t.offsets.fadt as u64);
    assert_eq!(u64_at(xsdt, 44), base + t.offsets.madt as u64);
}

#[test]
fn madt_lists_every_cpu_and_the_ioapic() {
    let t = AcpiTables::build(&platform(4), 0);
    let madt = t.table(b"APIC").unwrap();
    let mut at = 44;
    let mut lapics = Vec::new();
    let mut ioapics = 0;
    let mut overrides = Vec::new();
    while at < madt.len() {
        let (kind, len) = (madt[at], madt[at + 1] as usize);
        match kind {
            0 => lapics.push((madt[at + 2], madt[at + 3])),
            1 => ioapics += 1,
            2 => overrides.push((madt[at + 3], madt[at + 8])),
            _ => {}
        }
        at += len;
    }
    assert_eq!(at, madt.len());
    assert_eq!(lapics, vec![(0, 0), (1, 1), (2, 2), (3, 3)]);
    assert_eq!(ioapics, 1);
    // SCI: level (bits 3:2 = 3), active low (bits 1:0 = 3).
    assert_eq!(overrides, vec![(9, 0x0f)]);
    assert_eq!(u32::from_le_bytes(madt[40..44].try_into().unwrap()), 1);
}

/// Runs the loader commands the way SeaBIOS does, with the files placed
/// at the given addresses.
fn run_loader(t: &AcpiTables, rsdp_at: u64, tables_at: u64) -> (Vec<u8>, Vec<u8>) {
    let loader = commands(t);
    assert_eq!(loader.len() % 128, 0);
    let mut rsdp = t.rsdp.clone();
    let mut tables = t.tables.clone();
    let name = |bytes: &[u8]| {
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        String::from_utf8(bytes[..end].to_vec()).unwrap()
    };
    for cmd in loader.chunks(128) {
        let kind = u32::from_le_bytes(cmd[0..4].try_into().unwrap());
        match kind {
            1 => {
                let file = name(&cmd[4..60]);
                assert!(file == RSDP_FILE || file == TABLES_FILE, "{file}");
            }
            2 => {
                let dest = name(&cmd[4..60]);
                assert_eq!(name(&cmd[60..116]), TABLES_FILE);
                let offset = u32::from_le_bytes(cmd[116..120].try_into().unwrap()) as usize;
                let size = cmd[120] as usize;
                let blob = if dest == RSDP_FILE {
                    &mut rsdp
                } else {
                    &mut tables
                };
                let mut value = [0u8; 8];
                value[..size].copy_from_slice(&blob[offset..offset + size]);
                let patched = u64::from_le_bytes(value) + tables_at;
                blob[offset..offset + size].copy_from_slice(&patched.to_le_bytes()[..size]);
            }
            3 => {
                let file = name(&cmd[4..60]);
                let field = u32::from_le_bytes(cmd[60..64].try_into().unwrap()) as usize;
                let start = u32::from_le_bytes(cmd[64..68].try_into().unwrap()) as usize;
                let len = u32::from_le_bytes(cmd[68..72].try_into().unwrap()) as usize;
                let blob = if file == RSDP_FILE {
                    &mut rsdp
                } else {
                    &mut tables
                };
                let sum = blob[start..start + len]
                    .iter()
                    .fold(0u8, |a, b| a.wrapping_add(*b));
                blob[field] = blob[field].wrapping_sub(sum);
            }
            other => panic!("unknown loader command {other}"),
        }
    }
    let _ = rsdp_at;
    (rsdp, tables)
}

#[test]
fn the_firmware_loader_produces_the_tables_a_direct_boot_gets() {
    let platform = platform(3);
    let at = 0x7ffe_0000;
    let direct = AcpiTables::build(&platform, at);
    let (rsdp, tables) = run_loader(&AcpiTables::build(&platform, 0), 0xf5000, at);
    assert_eq!(rsdp, direct.rsdp);
    assert_eq!(tables, direct.tables);
}

#[test]
fn fw_cfg_file_names() {
    let t = AcpiTables::build(&platform(1), 0);
    let names: Vec<&str> = files(&t).iter().map(|(n, _)| *n).collect();
    assert_eq!(names, [RSDP_FILE, TABLES_FILE, LOADER_FILE]);
}

#[test]
fn prt_follows_the_bus() {
    let mut p = platform(1);
    let with_two = AcpiTables::build(&p, 0);
    p.pci_interrupts.push(PciInterrupt { slot: 3, irq: 6 });
    let with_three = AcpiTables::build(&p, 0);
    let dsdt2 = with_two.table(b"DSDT").unwrap();
    let dsdt3 = with_three.table(b"DSDT").unwrap();
    assert!(dsdt3.len() > dsdt2.len());
    // The new entry's address (slot 3 << 16 | 0xffff) is in the AML.
    let address = 0x0003_ffffu32.to_le_bytes();
    assert!(dsdt3.windows(4).any(|w| w == address));
    assert!(!dsdt2.windows(4).any(|w| w == address));
}
