//! The fw_cfg files through which SeaBIOS receives ACPI tables it did not
//! build: `etc/acpi/rsdp`, `etc/acpi/tables`, and `etc/table-loader`, a
//! list of 128-byte commands the firmware runs in order:
//!
//! - ALLOCATE (1): copy a file into firmware memory (`zone` 1 = high
//!   memory, 2 = the F-segment, where guests scan for the RSDP);
//! - ADD_POINTER (2): add the address a file landed at to a little-endian
//!   pointer field inside another (or the same) file;
//! - ADD_CHECKSUM (3): fix a checksum byte after the pointers changed.

use super::{AcpiTables, Blob};

pub const RSDP_FILE: &str = "etc/acpi/rsdp";
pub const TABLES_FILE: &str = "etc/acpi/tables";
pub const LOADER_FILE: &str = "etc/table-loader";

const COMMAND_SIZE: usize = 128;
const FILE_NAME_SIZE: usize = 56;

const ALLOCATE: u32 = 1;
const ADD_POINTER: u32 = 2;
const ADD_CHECKSUM: u32 = 3;

const ZONE_HIGH: u8 = 1;
const ZONE_FSEG: u8 = 2;
/// The RSDP must be 16-byte aligned to be found by a scan.
const RSDP_ALIGN: u32 = 16;

fn file_name(blob: Blob) -> &'static str {
    match blob {
        Blob::Rsdp => RSDP_FILE,
        Blob::Tables => TABLES_FILE,
    }
}

/// One command being assembled: the type, then fields in order.
struct Command(Vec<u8>);

impl Command {
    fn new(kind: u32) -> Command {
        Command(kind.to_le_bytes().to_vec())
    }

    fn name(mut self, name: &str) -> Command {
        let mut field = [0u8; FILE_NAME_SIZE];
        field[..name.len()].copy_from_slice(name.as_bytes());
        self.0.extend_from_slice(&field);
        self
    }

    fn u32(mut self, value: u32) -> Command {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    fn u8(mut self, value: u8) -> Command {
        self.0.push(value);
        self
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        self.0.resize(COMMAND_SIZE, 0);
        out.extend_from_slice(&self.0);
    }
}

/// The contents of `etc/table-loader` for `tables` (built with base 0).
pub fn commands(tables: &AcpiTables) -> Vec<u8> {
    let mut out = Vec::new();
    Command::new(ALLOCATE)
        .name(RSDP_FILE)
        .u32(RSDP_ALIGN)
        .u8(ZONE_FSEG)
        .finish(&mut out);
    Command::new(ALLOCATE)
        .name(TABLES_FILE)
        .u32(super::FACS_ALIGN as u32)
        .u8(ZONE_HIGH)
        .finish(&mut out);
    for pointer in &tables.pointers {
        Command::new(ADD_POINTER)
            .name(file_name(pointer.blob))
            .name(TABLES_FILE)
            .u32(pointer.offset as u32)
            .u8(pointer.size)
            .finish(&mut out);
    }
    for checksum in &tables.checksums {
        Command::new(ADD_CHECKSUM)
            .name(file_name(checksum.blob))
            .u32(checksum.field as u32)
            .u32(checksum.start as u32)
            .u32(checksum.len as u32)
            .finish(&mut out);
    }
    out
}

/// The three fw_cfg files, name and contents.
pub fn files(tables: &AcpiTables) -> [(&'static str, Vec<u8>); 3] {
    [
        (RSDP_FILE, tables.rsdp.clone()),
        (TABLES_FILE, tables.tables.clone()),
        (LOADER_FILE, commands(tables)),
    ]
}
