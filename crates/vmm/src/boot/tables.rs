//! The platform tables of a direct boot, in the BIOS area below 1 MiB
//! (reserved in the e820 map) where kernels look for them when nothing
//! tells them otherwise: the RSDP and ACPI tables in 0xE0000–0xEFFFF
//! (searched by OpenBSD; Linux gets the RSDP's address from the boot
//! protocol), the MP table at 0xF0000 (searched by everyone).

use proto::ErrorCode;

use super::BootError;
use crate::acpi::AcpiTables;
use crate::memory::GuestMemoryMmap;
use crate::mptable;
use crate::platform::Platform;

pub const RSDP_ADDR: u64 = 0xe0000;
/// The other ACPI tables, right after the RSDP, 64-byte aligned (FACS).
pub const ACPI_TABLES_ADDR: u64 = 0xe0040;
pub const MP_TABLE_ADDR: u32 = 0xf0000;
/// End of the room for the MP table (the BIOS area's end).
const AREA_END: u64 = 0x10_0000;

/// Writes the ACPI and MP tables; returns the RSDP's address.
pub fn write(mem: &GuestMemoryMmap, platform: &Platform) -> Result<u64, BootError> {
    let acpi = AcpiTables::build(platform, ACPI_TABLES_ADDR);
    let mp = mptable::build(platform, MP_TABLE_ADDR);
    let too_big = |what: &str| {
        BootError::new(
            ErrorCode::EINVAL,
            format!("{what} do not fit their area below 1 MiB"),
        )
    };
    if ACPI_TABLES_ADDR + acpi.tables.len() as u64 > u64::from(MP_TABLE_ADDR) {
        return Err(too_big("the ACPI tables"));
    }
    if u64::from(MP_TABLE_ADDR) + mp.len() as u64 > AREA_END {
        return Err(too_big("the MP tables"));
    }
    acpi.write_to(mem, RSDP_ADDR, ACPI_TABLES_ADDR)
        .map_err(|e| BootError::memory("the ACPI tables", e))?;
    mptable::write_to(mem, platform, MP_TABLE_ADDR)
        .map_err(|e| BootError::memory("the MP table", e))?;
    Ok(RSDP_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestRam, Layout, MIB};
    use crate::platform::PciInterrupt;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn the_largest_machine_fits() {
        let ram = GuestRam::new(Layout::new(64 * MIB), "tables-test").unwrap();
        let platform = Platform {
            cpus: 64,
            cpu_signature: 0,
            cpu_features: 0,
            pci_interrupts: (1..32).map(|slot| PciInterrupt { slot, irq: 5 }).collect(),
        };
        assert_eq!(write(&ram.mem, &platform).unwrap(), RSDP_ADDR);
        let mut sig = [0u8; 8];
        ram.mem
            .read_slice(&mut sig, GuestAddress(RSDP_ADDR))
            .unwrap();
        assert_eq!(&sig, b"RSD PTR ");
        let mut mp = [0u8; 4];
        ram.mem
            .read_slice(&mut mp, GuestAddress(u64::from(MP_TABLE_ADDR)))
            .unwrap();
        assert_eq!(&mp, b"_MP_");
    }
}
