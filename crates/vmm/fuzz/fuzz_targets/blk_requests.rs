//! A hostile virtio-blk driver: descriptor tables, available rings and
//! request bytes chosen by the fuzzer, served by the real block handler
//! over a raw image in memory. Requests may fail and the device may give
//! up (needs reset); nothing may panic, hang, or reach outside guest
//! memory, and every completion the device reports must be for a head it
//! was offered, with a status byte it actually wrote.

#![no_main]

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use arbitrary::Arbitrary;
use disk::{Access, DiskFormat, ImageChain};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::virtio::blk::driver::{BlkDriver, HEADERS};
use vmm::devices::virtio::driver::Descriptor;

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
    // Served, or given up on: both are fine. Either way it returns.
    let _ = drv.process();
    while let Some((id, _len)) = drv.queue.pop_used() {
        assert!(
            offered.contains(&(id as u16)) && u32::from(id as u16) == id,
            "completion for head {id} that was never offered"
        );
    }
});
