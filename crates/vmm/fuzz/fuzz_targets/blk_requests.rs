//! A hostile virtio-blk driver: descriptor tables, available rings and
//! request bytes chosen by the fuzzer, served by the real block handler
//! over a raw image in memory. Requests may fail and the device may give
//! up (needs reset); nothing may panic, hang, or reach outside guest
//! memory, and every completion the device reports must be for a head it
//! was offered (unless the driver had the device write over its own rings).

#![no_main]

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use arbitrary::Arbitrary;
use disk::{Access, DiskFormat, ImageChain};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::virtio::blk::driver::{BlkDriver, HEADERS};
use vmm::devices::virtio::driver::{Descriptor, queue_footprint, read_guest};

const MEM: u64 = 2 << 20;
const DISK: u64 = 64 << 10;

#[derive(Arbitrary, Debug)]
struct RawDescriptor {
    /// Mostly inside guest memory (and just past it); sometimes anywhere.
    addr: u32,
    wild_addr: Option<u64>,
    len: u16,
    long_len: bool,
    flags: u8,
    next: u16,
}

#[derive(Arbitrary, Debug)]
struct Input {
    queue_size_log2: u8,
    event_idx: bool,
    descriptors: Vec<RawDescriptor>,
    available: Vec<u16>,
    /// Bytes placed where headers and ranges usually live.
    payload: Vec<u8>,
    used_event: u16,
}

fn disk_file() -> File {
    // SAFETY: a NUL-terminated name and flags; the descriptor is ours.
    let fd = unsafe { libc::memfd_create(c"disk".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: a fresh descriptor owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(DISK).unwrap();
    file
}

fuzz_target!(|input: Input| {
    let backend = ImageChain::from_files("fuzz.img", DiskFormat::Raw, Access::ReadWrite, vec![disk_file()])
        .and_then(ImageChain::into_backend)
        .unwrap();
    let size = 1u16 << (input.queue_size_log2 % 9);
    let mut drv = BlkDriver::new(Arc::from(backend), MEM, size);
    if input.event_idx {
        drv = drv.with_event_idx();
        drv.queue.set_used_event(input.used_event);
    }
    let payload = &input.payload[..input.payload.len().min(0x1_0000)];
    drv.mem.write_slice(payload, GuestAddress(HEADERS)).unwrap();
    for (i, d) in input.descriptors.iter().take(usize::from(size)).enumerate() {
        let addr = d.wild_addr.unwrap_or(u64::from(d.addr) % (MEM + 0x1000));
        let len = if d.long_len { u32::from(d.len) << 12 } else { u32::from(d.len) };
        drv.queue.write_descriptor(
            i as u16,
            Descriptor {
                addr,
                len,
                // NEXT, WRITE, INDIRECT and some undefined bits.
                flags: u16::from(d.flags & 0x0f),
                next: d.next,
            },
        );
    }
    let offered: Vec<u16> = input.available.iter().take(usize::from(size) * 2).copied().collect();
    for &head in &offered {
        drv.queue.make_available(head);
    }
    let rings_overwritten = device_writes_reach_the_queue(&drv, size);
    // Served, or given up on: both are fine. Either way it returns.
    let _ = drv.process();
    while let Some((id, _len)) = drv.queue.pop_used() {
        // A driver that points a buffer the device writes at its own
        // rings (or at an indirect table) has the device write over them
        // as told: the heads completed are then what the rings said by
        // then, which is no longer what was offered.
        assert!(
            rings_overwritten || (u32::from(id as u16) == id && offered.contains(&(id as u16))),
            "completion for head {id} that was never offered"
        );
    }
});

const WRITE: u16 = 2;
const INDIRECT: u16 = 4;
/// Bytes of an indirect table read for its writable entries: 256 of them.
const MAX_TABLE_SCANNED: u64 = 16 * 256;

/// Whether a buffer the device may write (any descriptor marked
/// device-writable, in the table or in an indirect table it points to)
/// overlaps the queue's rings and table or an indirect table.
fn device_writes_reach_the_queue(drv: &BlkDriver, size: u16) -> bool {
    let descriptor = |bytes: &[u8]| {
        let addr = u64::from_le_bytes(bytes[0..8].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        let flags = u16::from_le_bytes(bytes[12..14].try_into().unwrap());
        (addr, u64::from(len), flags)
    };
    let table_start = drv.queue.desc_table();
    let mut kept = vec![(table_start, queue_footprint(size))];
    let mut written = Vec::new();
    let table = read_guest(&drv.mem, table_start, 16 * usize::from(size));
    for entry in table.chunks_exact(16) {
        let (addr, len, flags) = descriptor(entry);
        if flags & INDIRECT != 0 {
            kept.push((addr, len));
            // Only what lies in guest memory can be read as a table; a
            // table longer than any this device serves whole is taken to
            // write anywhere rather than read (which slowed every run).
            let readable = len.min(MEM.saturating_sub(addr)) / 16 * 16;
            if readable > MAX_TABLE_SCANNED {
                return true;
            }
            if addr < MEM && readable > 0 {
                for inner in read_guest(&drv.mem, addr, readable as usize).chunks_exact(16) {
                    let (addr, len, flags) = descriptor(inner);
                    if flags & WRITE != 0 {
                        written.push((addr, len));
                    }
                }
            }
        }
        if flags & WRITE != 0 {
            written.push((addr, len));
        }
    }
    let overlap = |(a, a_len): (u64, u64), (b, b_len): (u64, u64)| {
        let (a, b) = (u128::from(a), u128::from(b));
        a < b + u128::from(b_len) && b < a + u128::from(a_len)
    };
    written
        .iter()
        .any(|&w| kept.iter().any(|&k| overlap(w, k)))
}
