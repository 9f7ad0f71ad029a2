//! Arbitrary bytes opened as a disk image, the way the VM process opens
//! one: from a descriptor, no path. Opening may fail; nothing may panic,
//! and an image that opens must serve reads (and, when writable, writes)
//! or fail them with an error.

#![no_main]

use std::fs::File;
use std::os::fd::FromRawFd;

use disk::{Access, DiskFormat, ImageChain};
use libfuzzer_sys::fuzz_target;

/// An anonymous in-memory file holding `bytes`.
fn memfd(bytes: &[u8]) -> File {
    // SAFETY: memfd_create takes a NUL-terminated name and flags; the
    // descriptor it returns is ours alone.
    let fd = unsafe { libc::memfd_create(c"image".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, 0).unwrap();
    file
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, bytes)) = input.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 { DiskFormat::Qcow2 } else { DiskFormat::Raw };
    let access = if selector & 2 == 0 { Access::ReadOnly } else { Access::ReadWrite };
    let file = memfd(bytes);
    let Ok(chain) = ImageChain::from_files("fuzz.img", format, access, vec![file]) else {
        return;
    };
    let Ok(backend) = chain.into_backend() else {
        return;
    };
    let size = backend.size();
    let mut buf = vec![0u8; 64 * 1024];
    // A handful of reads spread over the disk, and its block status.
    for i in 0..8u64 {
        let offset = (size / 8 * i).min(size.saturating_sub(buf.len() as u64));
        let len = (buf.len() as u64).min(size - offset) as usize;
        let _ = backend.read_at(&mut buf[..len], offset);
        let _ = backend.block_status(offset, 1 << 30);
    }
    if access == Access::ReadWrite && size > 0 {
        let len = (size.min(70_000)) as usize;
        let data = vec![0xa5u8; len];
        let _ = backend.write_at(&data, size - len as u64);
        let _ = backend.write_zeroes(0, size.min(4096));
        let _ = backend.discard(size / 2, (size / 2).min(1 << 20));
        let _ = backend.flush();
    }
});
