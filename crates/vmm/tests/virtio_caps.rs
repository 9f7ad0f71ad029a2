//! Every virtio device the VM process builds, found the way Linux's
//! virtio_pci driver finds it: the capability list walked through
//! configuration reads, each vendor capability held to what the driver
//! insists on before it maps the structure (a length above zero, the
//! structure inside a BAR that exists and is big enough, the offsets
//! aligned, the common configuration whole, a notification address for
//! every queue), and to what virtio 1.x §4.1.4 asks of a device. A
//! structure that breaks one of these makes the driver refuse the whole
//! device. Needs root (a tap in a namespace of its own) and /dev/kvm.

mod rig;

use std::collections::BTreeSet;

use guestnet::tap::Tap;
use rig::{Backing, Host, KINDS, Kind, Machine};
use testkit::netns::NetNs;

const VENDOR_CAPABILITY: u8 = 0x09;
const MSIX_CAPABILITY: u8 = 0x11;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;
/// `struct virtio_pci_common_cfg`: what the driver needs at least.
const COMMON_CFG_LEN: u64 = 56;
const STATUS_CAPABILITY_LIST: u32 = 1 << 4;
/// Registers of the common configuration the walk reads.
const NUM_QUEUES: u64 = 0x12;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;

/// A BAR as sizing reports it.
#[derive(Debug, Clone, Copy)]
struct BarInfo {
    io: bool,
    size: u64,
}

/// Sizes the BARs the way firmware and Linux do: all ones written, the
/// read-back's low bits say the size, the old value goes back.
fn size_bars(m: &mut Machine) -> [Option<BarInfo>; 6] {
    let mut bars = [None; 6];
    let mut index = 0u32;
    while index < 6 {
        let reg = 0x10 + 4 * index;
        let old = m.cfg_read32(reg);
        m.cfg_write(reg, 0xffff_ffff, 4);
        let probe = m.cfg_read32(reg);
        m.cfg_write(reg, old, 4);
        if probe == 0 {
            index += 1;
            continue;
        }
        let io = probe & 1 == 1;
        let wide = !io && probe & 0x6 == 0x4;
        let mut mask = if io {
            u64::from(probe & !0x3) | 0xffff_ffff_0000_0000
        } else {
            u64::from(probe & !0xf) | 0xffff_ffff_0000_0000
        };
        if wide {
            let high = reg + 4;
            let old_high = m.cfg_read32(high);
            m.cfg_write(high, 0xffff_ffff, 4);
            mask = u64::from(m.cfg_read32(high)) << 32 | (mask & 0xffff_ffff);
            m.cfg_write(high, old_high, 4);
        }
        let size = (!mask).wrapping_add(1);
        if io {
            assert!(size <= 1 << 16, "BAR{index}: {size:#x} bytes of port I/O");
        }
        assert!(size.is_power_of_two(), "BAR{index}: size {size:#x}");
        bars[index as usize] = Some(BarInfo { io, size });
        index += if wide { 2 } else { 1 };
    }
    bars
}

/// One `virtio_pci_cap` as read from configuration space.
#[derive(Debug, Clone, Copy)]
struct VirtioCap {
    at: u32,
    cap_len: u8,
    cfg_type: u8,
    bar: u8,
    offset: u64,
    length: u64,
}

/// What Linux's virtio_pci_find_capability() takes: the first vendor
/// capability of the type whose BAR is a standard one that exists.
fn find(caps: &[VirtioCap], bars: &[Option<BarInfo>; 6], cfg_type: u8) -> Option<VirtioCap> {
    caps.iter()
        .find(|c| {
            c.cfg_type == cfg_type && usize::from(c.bar) < 6 && bars[usize::from(c.bar)].is_some()
        })
        .copied()
}

/// Linux's vp_modern_map_capability() checks for one structure, with the
/// spec's containment in the BAR: what it refuses, as a message.
fn check_mapping(
    what: &str,
    cap: &VirtioCap,
    bars: &[Option<BarInfo>; 6],
    minlen: u64,
    align: u64,
) -> Result<(), String> {
    let bar = bars[usize::from(cap.bar)].ok_or(format!("{what}: BAR{} absent", cap.bar))?;
    if cap.length == 0 {
        return Err(format!("{what}: bad capability len 0 (>0 expected)"));
    }
    if cap.length < minlen {
        return Err(format!(
            "{what}: bad capability len {} (>={minlen} expected)",
            cap.length
        ));
    }
    if !cap.offset.is_multiple_of(align) {
        return Err(format!(
            "{what}: offset {:#x} not aligned to {align}",
            cap.offset
        ));
    }
    if cap.offset + cap.length > bar.size {
        return Err(format!(
            "{what}: {:#x}@{:#x} out of range on BAR{} of {:#x} bytes",
            cap.length, cap.offset, cap.bar, bar.size
        ));
    }
    Ok(())
}

/// Reads `len` bytes of BAR0-relative register `offset` of the structure
/// `cap` points at.
fn structure_read(m: &mut Machine, cap: &VirtioCap, offset: u64, len: usize) -> u32 {
    let mut d = [0u8; 4];
    m.bar_read(u32::from(cap.bar), cap.offset + offset, &mut d[..len]);
    u32::from_le_bytes(d)
}

/// Every rule the device of `kind` must meet; the broken ones, as
/// messages.
fn check_device(kind: Kind, m: &mut Machine) -> Vec<String> {
    let mut broken = Vec::new();
    let mut fail = |what: String| broken.push(format!("{}: {what}", kind.name()));

    let status = m.cfg_read32(0x04) >> 16;
    if status & STATUS_CAPABILITY_LIST == 0 {
        fail("no capability list in the status register".into());
        return broken;
    }
    if m.cfg_read(0x34, 1) & 0x3 != 0 {
        fail("capability pointer not dword-aligned".into());
    }
    let list = m.capabilities();
    if list.len() >= 48 {
        fail("the capability list does not end".into());
    }
    let bars = size_bars(m);

    // The chain itself: each entry in the device-specific part of the
    // header's 256 bytes, dword-aligned, visited once, not overlapping
    // another.
    let mut seen = BTreeSet::new();
    let mut taken: Vec<(u32, u32)> = Vec::new();
    let mut vendor = Vec::new();
    for &(at, id) in &list {
        if !(0x40..0x100).contains(&at) || !at.is_multiple_of(4) {
            fail(format!(
                "capability at {at:#x}: outside 0x40..0x100 or unaligned"
            ));
            continue;
        }
        if !seen.insert(at) {
            fail(format!("capability at {at:#x} listed twice"));
            continue;
        }
        let len = match id {
            VENDOR_CAPABILITY => m.cfg_read(at + 2, 1),
            MSIX_CAPABILITY => 12,
            _ => 2,
        };
        if at + len > 0x100 {
            fail(format!(
                "capability at {at:#x} runs past configuration space"
            ));
        }
        if let Some(&(other, _)) = taken
            .iter()
            .find(|&&(start, end)| at < end && start < at + len)
        {
            fail(format!(
                "capability at {at:#x} overlaps the one at {other:#x}"
            ));
        }
        taken.push((at, at + len));
        if id == VENDOR_CAPABILITY {
            let head = m.cfg_read32(at);
            let cap = VirtioCap {
                at,
                cap_len: (head >> 16) as u8,
                cfg_type: (head >> 24) as u8,
                bar: m.cfg_read(at + 4, 1) as u8,
                offset: u64::from(m.cfg_read32(at + 8)),
                length: u64::from(m.cfg_read32(at + 12)),
            };
            let least = match cap.cfg_type {
                CFG_NOTIFY | CFG_PCI => 20,
                _ => 16,
            };
            if u32::from(cap.cap_len) < least {
                fail(format!(
                    "virtio capability type {} at {at:#x}: cap_len {} < {least}",
                    cap.cfg_type, cap.cap_len
                ));
            }
            vendor.push(cap);
        }
    }

    // The structures the driver cannot do without, as it maps them.
    let common = find(&vendor, &bars, CFG_COMMON);
    let notify = find(&vendor, &bars, CFG_NOTIFY);
    let isr = find(&vendor, &bars, CFG_ISR);
    let device = find(&vendor, &bars, CFG_DEVICE);
    for (name, cap) in [("common", common), ("notify", notify), ("isr", isr)] {
        if cap.is_none() {
            fail(format!("no {name} capability on a BAR that exists"));
        }
    }
    // Every declared structure must be mappable, not only the first of
    // its type; the PCI access window's fields are the driver's to set.
    for cap in vendor.iter().filter(|c| c.cfg_type != CFG_PCI) {
        if usize::from(cap.bar) >= 6 {
            continue; // reserved BAR values: the driver skips the entry
        }
        let (what, minlen, align) = match cap.cfg_type {
            CFG_COMMON => ("common", COMMON_CFG_LEN, 4),
            CFG_NOTIFY => ("notify", 2, 4),
            CFG_ISR => ("isr", 1, 1),
            CFG_DEVICE => ("device", 1, 4),
            _ => continue, // unknown types are the driver's to ignore
        };
        if let Err(e) = check_mapping(what, cap, &bars, minlen, align) {
            fail(format!("{e} (capability at {:#x})", cap.at));
        }
    }
    if kind.has_device_config() && device.is_none() {
        fail("no device configuration capability".into());
    }
    if !kind.has_device_config() && device.is_some() {
        fail("a device configuration capability for a device without one".into());
    }
    if find(&vendor, &bars, CFG_PCI).is_none() {
        fail("no PCI configuration access capability".into());
    }

    // Every queue's notification address lies inside the notify
    // structure.
    if let (Some(common), Some(notify)) = (common, notify)
        && check_mapping("common", &common, &bars, COMMON_CFG_LEN, 4).is_ok()
        && notify.cap_len >= 20
    {
        let multiplier = u64::from(m.cfg_read32(notify.at + 16));
        if multiplier != 0 && (!multiplier.is_multiple_of(2) || !multiplier.is_power_of_two()) {
            fail(format!(
                "notify_off_multiplier {multiplier} is neither 0 nor an even power of two"
            ));
        }
        let queues = structure_read(m, &common, NUM_QUEUES, 2);
        if queues == 0 {
            fail("no queues".into());
        }
        for queue in 0..queues {
            let mut select = [0u8; 2];
            select.copy_from_slice(&(queue as u16).to_le_bytes());
            m.bar_write(u32::from(common.bar), common.offset + QUEUE_SELECT, &select);
            let off = u64::from(structure_read(m, &common, QUEUE_NOTIFY_OFF, 2));
            if off * multiplier + 2 > notify.length {
                fail(format!(
                    "queue {queue}: notification offset {off} (x {multiplier}) beyond the \
                     {}-byte notify structure",
                    notify.length
                ));
            }
        }
    }

    // The MSI-X table and pending bits inside their BAR.
    if let Some(&(at, _)) = list.iter().find(|&&(_, id)| id == MSIX_CAPABILITY) {
        let vectors = u64::from((m.cfg_read32(at) >> 16) & 0x7ff) + 1;
        for (what, reg, len) in [
            ("table", at + 4, vectors * 16),
            ("PBA", at + 8, vectors.div_ceil(64) * 8),
        ] {
            let word = m.cfg_read32(reg);
            let (bir, offset) = ((word & 7) as usize, u64::from(word & !7));
            match bars.get(bir).copied().flatten() {
                Some(bar) if !bar.io && offset + len <= bar.size => {}
                other => fail(format!(
                    "MSI-X {what}: {len:#x}@{offset:#x} in BAR{bir} ({other:?})"
                )),
            }
        }
    }
    broken
}

/// The device of `kind` with what it needs from the host.
fn machine(kind: Kind, host: &Host, ns: &NetNs, dir: &testkit::tmp::TempDir) -> Machine {
    let backing = match kind {
        Kind::Blk => Backing::Disk(
            disk::create_image(&dir.join("caps.img"), disk::DiskFormat::Raw, 1 << 20)
                .expect("disk image")
                .into(),
        ),
        Kind::Scsi => Backing::Disk(vmm::devices::virtio::driver::memory_image(&[0; 4096])),
        Kind::Net => {
            let tap = ns.enter(|| Tap::create(Some("caps0")).expect("tap"));
            Backing::Tap(tap.file().try_clone().expect("tap descriptor"))
        }
        Kind::Rng => Backing::None,
    };
    Machine::new(host, kind, rig::model(kind, backing))
}

#[test]
fn every_virtio_device_passes_linuxs_capability_checks() {
    testkit::needs!(root, kvm);
    let ns = NetNs::new("caps");
    let dir = testkit::tmp::TempDir::new("virtio-caps");
    let mut broken = Vec::new();
    for kind in KINDS {
        let host = Host::new();
        let mut m = machine(kind, &host, &ns, &dir);
        broken.extend(check_device(kind, &mut m));
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_walk_refuses_a_zero_length_structure() {
    // The checks themselves: a structure of length 0 is what Linux
    // refuses with "bad capability len 0".
    let bars = [
        Some(BarInfo {
            io: true,
            size: 0x1000,
        }),
        None,
        None,
        None,
        None,
        None,
    ];
    let cap = |length| VirtioCap {
        at: 0x40,
        cap_len: 16,
        cfg_type: CFG_DEVICE,
        bar: 0,
        offset: 0x300,
        length,
    };
    assert!(check_mapping("device", &cap(0), &bars, 1, 4).is_err());
    assert!(check_mapping("device", &cap(8), &bars, 1, 4).is_ok());
    assert!(check_mapping("device", &cap(0xd01), &bars, 1, 4).is_err());
    let mut unaligned = cap(8);
    unaligned.offset = 0x302;
    assert!(check_mapping("device", &unaligned, &bars, 1, 4).is_err());
}
