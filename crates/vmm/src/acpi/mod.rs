//! ACPI tables for both boot paths.
//!
//! The tables are built once as two blobs: the RSDP, and everything else
//! (DSDT, FACS, FADT, MADT, XSDT) back to back. Pointers between tables
//! hold `base + offset`, where `base` is where the second blob will live:
//!
//! - direct kernel boot builds with the real guest address and copies the
//!   blobs into guest memory ([`AcpiTables::write_to`]);
//! - firmware boot builds with base 0 and hands both blobs to SeaBIOS
//!   through fw_cfg with the list of pointer fields and checksums
//!   ([`table_loader`]), so the firmware places them and patches the
//!   pointers itself.

pub mod dsdt;
pub mod fadt;
pub mod madt;
pub mod table_loader;

use acpi_tables::Aml;
use acpi_tables::facs::FACS;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;
use crate::platform::Platform;

pub const OEM_ID: [u8; 6] = *b"VMDLNX";
pub const OEM_TABLE_ID: [u8; 8] = *b"VMD-KVM ";
pub const OEM_REVISION: u32 = 1;

/// Offset of the checksum byte in every table header.
const HEADER_CHECKSUM: usize = 9;
/// Offset of the RSDT address in the RSDP.
const RSDP_RSDT: usize = 16;
/// Offset of the XSDT address in the RSDP.
const RSDP_XSDT: usize = 24;
/// The RSDP's two checksums: over its first 20 bytes (ACPI 1.0), and over
/// all 36 (the extended checksum).
const RSDP_CHECKSUM: usize = 8;
const RSDP_V1_LEN: usize = 20;
const RSDP_EXTENDED_CHECKSUM: usize = 32;
/// The FACS must be 64-byte aligned; other tables are 8-byte aligned.
pub const FACS_ALIGN: usize = 64;
const TABLE_ALIGN: usize = 8;

/// One of the two blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    Rsdp,
    Tables,
}

/// A field in `blob` that holds an address in the tables blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    pub blob: Blob,
    pub offset: usize,
    pub size: u8,
}

/// A checksum byte at `field` covering `[start, start + len)` of `blob`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumRange {
    pub blob: Blob,
    pub field: usize,
    pub start: usize,
    pub len: usize,
}

/// Where each table sits in the tables blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offsets {
    pub dsdt: usize,
    pub facs: usize,
    pub fadt: usize,
    pub madt: usize,
    pub rsdt: usize,
    pub xsdt: usize,
}

#[derive(Debug, Clone)]
pub struct AcpiTables {
    pub rsdp: Vec<u8>,
    pub tables: Vec<u8>,
    pub offsets: Offsets,
    pub pointers: Vec<Pointer>,
    pub checksums: Vec<ChecksumRange>,
}

fn align(value: usize, to: usize) -> usize {
    value.div_ceil(to) * to
}

/// Sets a table's header checksum so its bytes sum to zero.
pub fn fix_checksum(table: &mut [u8]) {
    table[HEADER_CHECKSUM] = 0;
    let sum = table.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    table[HEADER_CHECKSUM] = sum.wrapping_neg();
}

/// Recomputes the RSDP's checksum (first 20 bytes) and extended checksum.
fn fix_rsdp_checksums(rsdp: &mut [u8]) {
    let sum = |bytes: &[u8]| bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    rsdp[RSDP_CHECKSUM] = 0;
    rsdp[RSDP_CHECKSUM] = sum(&rsdp[..RSDP_V1_LEN]).wrapping_neg();
    rsdp[RSDP_EXTENDED_CHECKSUM] = 0;
    rsdp[RSDP_EXTENDED_CHECKSUM] = sum(rsdp).wrapping_neg();
}

/// Appends `table` at the next multiple of `alignment`; returns its offset.
fn append(blob: &mut Vec<u8>, table: &[u8], alignment: usize) -> usize {
    let offset = align(blob.len(), alignment);
    blob.resize(offset, 0);
    blob.extend_from_slice(table);
    offset
}

impl AcpiTables {
    /// Builds the tables for `platform`, addressed as if the tables blob
    /// started at guest address `base`.
    pub fn build(platform: &Platform, base: u64) -> AcpiTables {
        let mut dsdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
        dsdt.append_slice(&dsdt::body(platform));
        let mut facs = Vec::new();
        FACS::new().to_aml_bytes(&mut facs);

        // Offsets are known before the tables that point at them are made:
        // each table's size does not depend on addresses.
        let mut blob = Vec::new();
        let mut offsets = Offsets {
            dsdt: append(&mut blob, dsdt.as_slice(), TABLE_ALIGN),
            facs: append(&mut blob, &facs, FACS_ALIGN),
            ..Offsets::default()
        };
        let address = |offset: usize| base + offset as u64;
        let fadt = fadt::table(address(offsets.facs), address(offsets.dsdt));
        offsets.fadt = append(&mut blob, &fadt, TABLE_ALIGN);
        offsets.madt = append(&mut blob, &madt::table(platform), TABLE_ALIGN);
        let entries = [offsets.fadt, offsets.madt];
        // An RSDT besides the XSDT: boot loaders and older systems (GRUB's
        // ACPI power-off among them) only follow the 32-bit table.
        let mut rsdt = Sdt::new(*b"RSDT", 36, 1, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
        for &entry in &entries {
            rsdt.append_slice(&(address(entry) as u32).to_le_bytes());
        }
        let mut rsdt_bytes = rsdt.as_slice().to_vec();
        fix_checksum(&mut rsdt_bytes);
        offsets.rsdt = append(&mut blob, &rsdt_bytes, TABLE_ALIGN);
        let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
        for entry in entries {
            xsdt.add_entry(address(entry));
        }
        let mut xsdt_bytes = Vec::new();
        xsdt.to_aml_bytes(&mut xsdt_bytes);
        offsets.xsdt = append(&mut blob, &xsdt_bytes, TABLE_ALIGN);

        let mut rsdp = Vec::new();
        Rsdp::new(OEM_ID, address(offsets.xsdt)).to_aml_bytes(&mut rsdp);
        rsdp[RSDP_RSDT..RSDP_RSDT + 4]
            .copy_from_slice(&(address(offsets.rsdt) as u32).to_le_bytes());
        fix_rsdp_checksums(&mut rsdp);

        let tables_pointer = |offset: usize, size: u8| Pointer {
            blob: Blob::Tables,
            offset,
            size,
        };
        let mut pointers = vec![
            tables_pointer(offsets.fadt + fadt::DSDT, 4),
            tables_pointer(offsets.fadt + fadt::X_FIRMWARE_CTRL, 8),
            tables_pointer(offsets.fadt + fadt::X_DSDT, 8),
        ];
        pointers.extend((0..entries.len()).map(|i| tables_pointer(offsets.rsdt + 36 + 4 * i, 4)));
        pointers.extend((0..entries.len()).map(|i| tables_pointer(offsets.xsdt + 36 + 8 * i, 8)));
        pointers.push(Pointer {
            blob: Blob::Rsdp,
            offset: RSDP_RSDT,
            size: 4,
        });
        pointers.push(Pointer {
            blob: Blob::Rsdp,
            offset: RSDP_XSDT,
            size: 8,
        });

        let table_len = |offset: usize| {
            u32::from_le_bytes(blob[offset + 4..offset + 8].try_into().unwrap_or_default()) as usize
        };
        let mut checksums: Vec<ChecksumRange> = [
            offsets.dsdt,
            offsets.fadt,
            offsets.madt,
            offsets.rsdt,
            offsets.xsdt,
        ]
        .into_iter()
        .map(|offset| ChecksumRange {
            blob: Blob::Tables,
            field: offset + HEADER_CHECKSUM,
            start: offset,
            len: table_len(offset),
        })
        .collect();
        checksums.push(ChecksumRange {
            blob: Blob::Rsdp,
            field: RSDP_CHECKSUM,
            start: 0,
            len: RSDP_V1_LEN,
        });
        checksums.push(ChecksumRange {
            blob: Blob::Rsdp,
            field: RSDP_EXTENDED_CHECKSUM,
            start: 0,
            len: rsdp.len(),
        });

        AcpiTables {
            rsdp,
            tables: blob,
            offsets,
            pointers,
            checksums,
        }
    }

    /// Copies the RSDP to `rsdp_addr` and the other tables to the `base`
    /// they were built for.
    pub fn write_to(
        &self,
        mem: &GuestMemoryMmap,
        rsdp_addr: u64,
        base: u64,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        mem.write_slice(&self.rsdp, GuestAddress(rsdp_addr))?;
        mem.write_slice(&self.tables, GuestAddress(base))
    }

    /// The table of `signature` in the tables blob (for tests and
    /// diagnostics).
    pub fn table(&self, signature: &[u8; 4]) -> Option<&[u8]> {
        let o = self.offsets;
        [o.dsdt, o.facs, o.fadt, o.madt, o.rsdt, o.xsdt]
            .into_iter()
            .find(|&offset| &self.tables[offset..offset + 4] == signature)
            .map(|offset| {
                let len = u32::from_le_bytes(
                    self.tables[offset + 4..offset + 8]
                        .try_into()
                        .unwrap_or_default(),
                ) as usize;
                &self.tables[offset..offset + len]
            })
    }
}

#[cfg(test)]
mod tests;
