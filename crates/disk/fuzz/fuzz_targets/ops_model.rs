//! A random sequence of reads, writes, zeroing, discards, flushes and
//! reopens on a qcow2 image (any cluster size, optionally an overlay on a
//! base with data), checked against an in-memory model of the disk.

#![no_main]

use arbitrary::Arbitrary;
use disk::{Access, BlockBackend, DiskFormat, ImageChain};
use libfuzzer_sys::fuzz_target;

const SIZE: u64 = 2 << 20;

#[derive(Arbitrary, Debug)]
enum Op {
    Write { offset: u32, len: u16, byte: u8 },
    Read { offset: u32, len: u16 },
    Zeroes { offset: u32, len: u32 },
    Discard { offset: u32, len: u32 },
    Flush,
    Reopen,
}

#[derive(Arbitrary, Debug)]
struct Case {
    cluster_bits: u8,
    overlay: bool,
    ops: Vec<Op>,
}

/// A range inside the disk from arbitrary numbers.
fn range(offset: u32, len: u64) -> (u64, u64) {
    let offset = u64::from(offset) % SIZE;
    (offset, len.min(SIZE - offset))
}

fn open(path: &std::path::Path) -> Box<dyn BlockBackend> {
    ImageChain::open(path, DiskFormat::Qcow2, Access::ReadWrite)
        .and_then(|c| c.into_backend())
        .unwrap_or_else(|e| panic!("reopening our own image failed: {e}"))
}

fuzz_target!(|case: Case| {
    if case.ops.len() > 64 {
        return;
    }
    let cluster_size = 1usize << (9 + case.cluster_bits % 8);
    let dir = tempfile_dir();
    let top = dir.join("top.qcow2");
    let mut model = vec![0u8; SIZE as usize];

    let mut backend = if case.overlay {
        let base = dir.join("base.qcow2");
        let b = disk::create_qcow2_with_cluster_size(&base, SIZE, cluster_size).unwrap();
        for (i, chunk) in model.chunks_mut(100_000).enumerate().step_by(2) {
            chunk.fill(i as u8 + 1);
            b.write_at(chunk, (i * 100_000) as u64).unwrap();
        }
        drop(b);
        disk::create_overlay(&top, "base.qcow2", SIZE).unwrap();
        open(&top)
    } else {
        disk::create_qcow2_with_cluster_size(&top, SIZE, cluster_size).unwrap()
    };

    for op in case.ops {
        match op {
            Op::Write { offset, len, byte } => {
                let (offset, len) = range(offset, u64::from(len));
                let data = vec![byte; len as usize];
                backend.write_at(&data, offset).unwrap();
                model[offset as usize..(offset + len) as usize].copy_from_slice(&data);
            }
            Op::Read { offset, len } => {
                let (offset, len) = range(offset, u64::from(len));
                let mut got = vec![0u8; len as usize];
                backend.read_at(&mut got, offset).unwrap();
                assert!(got == model[offset as usize..(offset + len) as usize], "read {offset}+{len} differs");
            }
            Op::Zeroes { offset, len } => {
                let (offset, len) = range(offset, u64::from(len));
                backend.write_zeroes(offset, len).unwrap();
                model[offset as usize..(offset + len) as usize].fill(0);
            }
            Op::Discard { offset, len } => {
                let (offset, len) = range(offset, u64::from(len));
                backend.discard(offset, len).unwrap();
                model[offset as usize..(offset + len) as usize].fill(0);
            }
            Op::Flush => backend.flush().unwrap(),
            Op::Reopen => {
                drop(backend);
                backend = open(&top);
            }
        }
    }
    let mut all = vec![0u8; SIZE as usize];
    backend.read_at(&mut all, 0).unwrap();
    assert!(all == model, "disk differs from the model at the end");
    drop(backend);
    let _ = std::fs::remove_dir_all(&dir);
});

/// A fresh directory in memory-backed /dev/shm when there is one.
fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = std::path::PathBuf::from(format!(
        "{root}/disk-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
