//! The Intel MultiProcessor Specification 1.4 table, for kernels that look
//! for CPUs and interrupt routing there rather than in ACPI (and for
//! `acpi=off`). Direct kernel boot only: under firmware, SeaBIOS writes
//! its own.
//!
//! Layout: the 16-byte floating pointer, then the configuration table
//! with its entries sorted by type as the specification requires:
//! processors, buses (0 = PCI, 1 = ISA), the IOAPIC, I/O interrupt
//! assignments, local interrupt assignments.

use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;
use crate::platform::{
    IOAPIC_ADDR, IOAPIC_ID, IOAPIC_VERSION, LAPIC_ADDR, LAPIC_VERSION, Platform,
};

const SPEC_REVISION: u8 = 4;
const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
const IOAPIC_ENABLED: u8 = 1;

const BUS_PCI: u8 = 0;
const BUS_ISA: u8 = 1;

// Interrupt types.
const INT: u8 = 0;
const NMI: u8 = 1;
const EXTINT: u8 = 3;
/// Polarity and trigger "conform to the bus": edge/high for ISA,
/// level/low for PCI.
const CONFORMS: u16 = 0;
/// ISA IRQ 2 is the PIC cascade, not an input.
const ISA_CASCADE: u8 = 2;
const ISA_IRQS: u8 = 16;
/// Destination "all local APICs".
const ALL_LAPICS: u8 = 0xff;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

fn interrupt(kind: u8, entry: u8, bus: u8, source: u8, dest: u8, pin: u8) -> [u8; 8] {
    let flags = CONFORMS.to_le_bytes();
    [entry, kind, flags[0], flags[1], bus, source, dest, pin]
}

fn entries(platform: &Platform) -> (Vec<u8>, u16) {
    let mut out = Vec::new();
    let mut count = 0u16;
    let mut push = |bytes: &[u8]| {
        out.extend_from_slice(bytes);
        count += 1;
    };
    for index in 0..platform.cpus {
        let mut entry = vec![
            ENTRY_PROCESSOR,
            index as u8,
            LAPIC_VERSION,
            CPU_ENABLED | if index == 0 { CPU_BOOTSTRAP } else { 0 },
        ];
        entry.extend_from_slice(&platform.cpu_signature.to_le_bytes());
        entry.extend_from_slice(&platform.cpu_features.to_le_bytes());
        entry.extend_from_slice(&[0; 8]);
        push(&entry);
    }
    push(&[ENTRY_BUS, BUS_PCI, b'P', b'C', b'I', b' ', b' ', b' ']);
    push(&[ENTRY_BUS, BUS_ISA, b'I', b'S', b'A', b' ', b' ', b' ']);
    let mut ioapic = vec![ENTRY_IOAPIC, IOAPIC_ID, IOAPIC_VERSION, IOAPIC_ENABLED];
    ioapic.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    push(&ioapic);

    // ISA IRQs reach the same-numbered IOAPIC pin (KVM's default routing),
    // except the cascade and the lines PCI functions use.
    let pci_irqs = platform.pci_irqs();
    for irq in (0..ISA_IRQS).filter(|irq| *irq != ISA_CASCADE && !pci_irqs.contains(irq)) {
        push(&interrupt(
            INT,
            ENTRY_IO_INTERRUPT,
            BUS_ISA,
            irq,
            IOAPIC_ID,
            irq,
        ));
    }
    for pci in &platform.pci_interrupts {
        // PCI source: slot in bits 6:2, pin (0 = INTA) in bits 1:0.
        push(&interrupt(
            INT,
            ENTRY_IO_INTERRUPT,
            BUS_PCI,
            pci.slot << 2,
            IOAPIC_ID,
            pci.irq,
        ));
    }
    // The PICs reach LINT0 of every CPU (virtual wire); NMI is on LINT1.
    push(&interrupt(
        EXTINT,
        ENTRY_LOCAL_INTERRUPT,
        BUS_ISA,
        0,
        ALL_LAPICS,
        0,
    ));
    push(&interrupt(
        NMI,
        ENTRY_LOCAL_INTERRUPT,
        BUS_ISA,
        0,
        ALL_LAPICS,
        1,
    ));
    (out, count)
}

/// The floating pointer (at `addr`) followed by the configuration table.
pub fn build(platform: &Platform, addr: u32) -> Vec<u8> {
    let table_addr = addr + FLOATING_POINTER_LEN as u32;
    let (entries, count) = entries(platform);

    let mut table = Vec::with_capacity(HEADER_LEN + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    table.push(SPEC_REVISION);
    table.push(0); // checksum
    table.extend_from_slice(b"VMD     "); // OEM ID
    table.extend_from_slice(b"KVM         "); // product ID
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    table.push(0); // extended table checksum
    table.push(0); // reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut pointer = Vec::with_capacity(FLOATING_POINTER_LEN);
    pointer.extend_from_slice(b"_MP_");
    pointer.extend_from_slice(&table_addr.to_le_bytes());
    pointer.push(1); // length in 16-byte units
    pointer.push(SPEC_REVISION);
    pointer.push(0); // checksum
    // Feature byte 1 = 0: a configuration table is present. Byte 2 = 0:
    // virtual-wire mode, no IMCR.
    pointer.extend_from_slice(&[0; 5]);
    pointer[10] = checksum(&pointer);

    pointer.extend_from_slice(&table);
    pointer
}

/// Writes the table at `addr` (inside the BIOS area, where kernels scan).
pub fn write_to(
    mem: &GuestMemoryMmap,
    platform: &Platform,
    addr: u32,
) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_slice(&build(platform, addr), GuestAddress(u64::from(addr)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::PciInterrupt;

    fn platform() -> Platform {
        Platform {
            cpus: 4,
            cpu_signature: 0x000a_0671,
            cpu_features: 0x0f8b_fbff,
            pci_interrupts: vec![
                PciInterrupt { slot: 1, irq: 3 },
                PciInterrupt { slot: 2, irq: 5 },
            ],
        }
    }

    #[test]
    fn pointer_and_table_are_consistent() {
        let bytes = build(&platform(), 0xf0000);
        assert_eq!(&bytes[0..4], b"_MP_");
        assert_eq!(
            bytes[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)),
            0,
            "floating pointer checksum"
        );
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 0xf0010);
        let table = &bytes[16..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        // 4 CPUs, 2 buses, 1 IOAPIC, 16 - cascade - 2 PCI IRQs = 13 ISA,
        // 2 PCI, 2 local.
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 4 + 2 + 1 + 13 + 2 + 2);
    }

    #[test]
    fn entries_are_sorted_and_pci_routes_are_present() {
        let bytes = build(&platform(), 0xf0000);
        let mut at = 16 + HEADER_LEN;
        let mut kinds = Vec::new();
        let mut pci = Vec::new();
        let mut bootstrap = 0;
        while at < bytes.len() {
            let kind = bytes[at];
            kinds.push(kind);
            if kind == ENTRY_PROCESSOR {
                bootstrap += usize::from(bytes[at + 3] & CPU_BOOTSTRAP != 0);
                at += 20;
                continue;
            }
            if kind == ENTRY_IO_INTERRUPT && bytes[at + 4] == BUS_PCI {
                pci.push((bytes[at + 5] >> 2, bytes[at + 7]));
            }
            if kind == ENTRY_IO_INTERRUPT && bytes[at + 4] == BUS_ISA {
                assert_ne!(bytes[at + 5], 3, "IRQ 3 belongs to PCI");
                assert_ne!(bytes[at + 5], 2, "the cascade is not an input");
            }
            at += 8;
        }
        assert_eq!(at, bytes.len());
        assert!(kinds.is_sorted(), "{kinds:?}");
        assert_eq!(bootstrap, 1);
        assert_eq!(pci, vec![(1, 3), (2, 5)]);
    }
}
