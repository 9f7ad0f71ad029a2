//! SMBIOS tables for the firmware: system, chassis, processors and memory
//! as dmidecode shows them in the guest.
//!
//! They reach SeaBIOS through fw_cfg (`etc/smbios/smbios-anchor` and
//! `etc/smbios/smbios-tables`), the way QEMU hands them over; SeaBIOS then
//! only places them (adding its own BIOS-information table) instead of
//! building them itself, which under an instruction emulator costs it a
//! noticeable share of its start-up.

use crate::memory::{Layout, RangeKind};

const TYPE_SYSTEM: u8 = 1;
const TYPE_CHASSIS: u8 = 3;
const TYPE_PROCESSOR: u8 = 4;
const TYPE_MEMORY_ARRAY: u8 = 16;
const TYPE_MEMORY_DEVICE: u8 = 17;
const TYPE_MEMORY_ARRAY_MAPPED: u8 = 19;
const TYPE_BOOT_INFO: u8 = 32;
const TYPE_END: u8 = 127;

const MANUFACTURER: &str = "vmd";

/// What the tables describe.
pub struct SmbiosInfo<'a> {
    pub vm_name: &'a str,
    pub vm_id: u32,
    pub vcpus: u32,
    pub layout: &'a Layout,
    /// 16 bytes for the system UUID.
    pub uuid: [u8; 16],
}

/// One structure: formatted area, then its strings.
struct Structure {
    kind: u8,
    handle: u16,
    formatted: Vec<u8>,
    strings: Vec<String>,
}

impl Structure {
    fn new(kind: u8, handle: u16) -> Structure {
        Structure {
            kind,
            handle,
            formatted: Vec::new(),
            strings: Vec::new(),
        }
    }

    /// Adds a string and returns its 1-based number (0 = no string).
    fn string(&mut self, text: &str) -> u8 {
        if text.is_empty() {
            return 0;
        }
        // Strings may not contain NUL; keep them short and printable.
        let clean: String = text.chars().filter(|c| !c.is_control()).take(64).collect();
        self.strings.push(clean);
        self.strings.len() as u8
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.formatted.push(v);
        self
    }

    fn u16(&mut self, v: u16) -> &mut Self {
        self.formatted.extend(v.to_le_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.formatted.extend(v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.formatted.extend(v.to_le_bytes());
        self
    }

    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.formatted.extend(v);
        self
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.kind, (4 + self.formatted.len()) as u8];
        out.extend(self.handle.to_le_bytes());
        out.extend(&self.formatted);
        if self.strings.is_empty() {
            out.extend([0, 0]);
        } else {
            for s in &self.strings {
                out.extend(s.as_bytes());
                out.push(0);
            }
            out.push(0);
        }
        out
    }
}

/// The structure table and the SMBIOS 2.8 entry point describing it (its
/// table address and checksums are the firmware's to fill in).
pub fn build(info: &SmbiosInfo) -> (Vec<u8>, Vec<u8>) {
    let mut structures = Vec::new();
    let mut handle = 0x100u16;
    let mut next_handle = || {
        handle += 1;
        handle
    };

    let mut system = Structure::new(TYPE_SYSTEM, next_handle());
    let manufacturer = system.string(MANUFACTURER);
    let product = system.string(info.vm_name);
    let version = system.string(env!("CARGO_PKG_VERSION"));
    let serial = system.string(&format!("vm{}", info.vm_id));
    system
        .u8(manufacturer)
        .u8(product)
        .u8(version)
        .u8(serial)
        .bytes(&info.uuid)
        .u8(0x06) // woken by power switch
        .u8(0)
        .u8(0);
    structures.push(system);

    let mut chassis = Structure::new(TYPE_CHASSIS, next_handle());
    let manufacturer = chassis.string(MANUFACTURER);
    chassis
        .u8(manufacturer)
        .u8(0x01) // other
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(0x03) // boot-up state: safe
        .u8(0x03) // power supply state: safe
        .u8(0x03) // thermal state: safe
        .u8(0x02) // security: unknown
        .u32(0)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(0);
    structures.push(chassis);

    for cpu in 0..info.vcpus {
        let mut processor = Structure::new(TYPE_PROCESSOR, next_handle());
        let socket = processor.string(&format!("CPU {cpu}"));
        let manufacturer = processor.string(MANUFACTURER);
        processor
            .u8(socket)
            .u8(0x03) // central processor
            .u8(0x01) // family: other
            .u8(manufacturer)
            .u64(0) // processor id
            .u8(0) // version string
            .u8(0) // voltage
            .u16(0) // external clock
            .u16(2000) // max speed, MHz
            .u16(2000) // current speed
            .u8(0x41) // populated, enabled
            .u8(0x01) // upgrade: other
            .u16(0xffff)
            .u16(0xffff)
            .u16(0xffff)
            .u8(0)
            .u8(0)
            .u8(0)
            .u8(1) // cores
            .u8(1) // enabled cores
            .u8(1) // threads
            .u16(0x0002) // characteristics: unknown
            .u16(0x0001); // family 2: other
        structures.push(processor);
    }

    let ram: u64 = info
        .layout
        .ranges
        .iter()
        .filter(|r| r.kind == RangeKind::Ram)
        .map(|r| r.size)
        .sum();
    let ram_kib = ram / 1024;
    let array_handle = next_handle();
    let mut array = Structure::new(TYPE_MEMORY_ARRAY, array_handle);
    array
        .u8(0x01) // location: other
        .u8(0x03) // use: system memory
        .u8(0x06) // error correction: multi-bit ECC
        .u32(if ram_kib < 0x8000_0000 {
            ram_kib as u32
        } else {
            0x8000_0000
        })
        .u16(0xfffe) // no error information
        .u16(1)
        .u64(if ram_kib < 0x8000_0000 { 0 } else { ram_kib });
    structures.push(array);

    let mut device = Structure::new(TYPE_MEMORY_DEVICE, next_handle());
    let locator = device.string("DIMM 0");
    let manufacturer = device.string(MANUFACTURER);
    let ram_mib = ram.div_ceil(1 << 20);
    device
        .u16(array_handle)
        .u16(0xfffe)
        .u16(64) // total width
        .u16(64) // data width
        .u16(if ram_mib < 0x7fff {
            ram_mib as u16
        } else {
            0x7fff
        })
        .u8(0x09) // form factor: DIMM
        .u8(0)
        .u8(locator)
        .u8(0)
        .u8(0x07) // type: RAM
        .u16(0x0002) // type detail: other
        .u16(0) // speed
        .u8(manufacturer)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(0) // attributes
        .u32(if ram_mib < 0x7fff { 0 } else { ram_mib as u32 })
        .u16(0);
    structures.push(device);

    for range in info
        .layout
        .ranges
        .iter()
        .filter(|r| r.kind == RangeKind::Ram)
    {
        let mut mapped = Structure::new(TYPE_MEMORY_ARRAY_MAPPED, next_handle());
        let start_kib = range.start / 1024;
        let end_kib = (range.start + range.size) / 1024 - 1;
        let fits = end_kib < 0xffff_ffff;
        mapped
            .u32(if fits { start_kib as u32 } else { 0xffff_ffff })
            .u32(if fits { end_kib as u32 } else { 0xffff_ffff })
            .u16(array_handle)
            .u8(1)
            .u64(if fits { 0 } else { range.start })
            .u64(if fits {
                0
            } else {
                range.start + range.size - 1
            });
        structures.push(mapped);
    }

    let mut boot = Structure::new(TYPE_BOOT_INFO, next_handle());
    boot.bytes(&[0; 6]).u8(0); // no errors detected
    structures.push(boot);
    structures.push(Structure::new(TYPE_END, next_handle()));

    let encoded: Vec<Vec<u8>> = structures.iter().map(Structure::encode).collect();
    let tables: Vec<u8> = encoded.concat();
    let max_structure = encoded.iter().map(Vec::len).max().unwrap_or(0) as u16;

    let mut anchor = Vec::with_capacity(31);
    anchor.extend(b"_SM_");
    anchor.push(0); // checksum, the firmware's
    anchor.push(31);
    anchor.push(2);
    anchor.push(8);
    anchor.extend(max_structure.to_le_bytes());
    anchor.push(0);
    anchor.extend([0u8; 5]);
    anchor.extend(b"_DMI_");
    anchor.push(0); // intermediate checksum, the firmware's
    anchor.extend((tables.len() as u16).to_le_bytes());
    anchor.extend(0u32.to_le_bytes()); // address, the firmware's
    anchor.extend((encoded.len() as u16).to_le_bytes());
    anchor.push(0x28);
    (tables, anchor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GIB, MIB};

    /// Walks the structure table as a reader would.
    fn walk(tables: &[u8]) -> Vec<(u8, Vec<String>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < tables.len() {
            let kind = tables[at];
            let len = usize::from(tables[at + 1]);
            let mut p = at + len;
            let mut strings = Vec::new();
            loop {
                let end = p + tables[p..].iter().position(|&b| b == 0).unwrap();
                if end == p {
                    p += 1;
                    if strings.is_empty() {
                        p += 1;
                    }
                    break;
                }
                strings.push(String::from_utf8(tables[p..end].to_vec()).unwrap());
                p = end + 1;
            }
            out.push((kind, strings));
            at = p;
        }
        out
    }

    #[test]
    fn tables_and_anchor_are_consistent() {
        let layout = Layout::new(6 * GIB);
        let (tables, anchor) = build(&SmbiosInfo {
            vm_name: "web1",
            vm_id: 3,
            vcpus: 2,
            layout: &layout,
            uuid: [7; 16],
        });
        assert_eq!(anchor.len(), 31);
        assert_eq!(&anchor[0..4], b"_SM_");
        assert_eq!(&anchor[0x10..0x15], b"_DMI_");
        assert_eq!(
            u16::from_le_bytes([anchor[0x16], anchor[0x17]]) as usize,
            tables.len()
        );
        let structures = walk(&tables);
        assert_eq!(
            u16::from_le_bytes([anchor[0x1c], anchor[0x1d]]) as usize,
            structures.len()
        );
        assert_eq!(
            structures[0],
            (
                1,
                vec![
                    "vmd".into(),
                    "web1".into(),
                    env!("CARGO_PKG_VERSION").into(),
                    "vm3".into()
                ]
            )
        );
        assert_eq!(structures.iter().filter(|s| s.0 == 4).count(), 2);
        assert_eq!(
            structures.iter().filter(|s| s.0 == 19).count(),
            3,
            "one per RAM range"
        );
        assert_eq!(structures.last().unwrap().0, 127);
        let _ = MIB;
    }
}
