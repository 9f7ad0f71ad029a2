//! Device-level virtio-blk benchmark, no guest: requests written into a
//! split virtqueue in guest memory, served by the real block handler into
//! a raw and a qcow2 image (every cluster allocated), next to a plain
//! `pread`/`pwrite` loop over the same file with the same sizes and
//! offsets, which is what the device could at best achieve. Prints
//! throughput and the ratio device/limit.
//!
//! `cargo run --release -p vmm --example blk_bench -- [work dir] [MiB]
//! [pattern name filter]`
//! (bench/blk-bench.sh runs it).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use disk::{Access, BlockBackend, DiskFormat, ImageChain};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use vmm::devices::virtio::blk::driver::{BlkDriver, DATA_START};
use vmm::devices::virtio::driver::Descriptor;

/// Requests in flight per batch, as a guest with a deep queue would keep.
const DEPTH: usize = 32;
const QUEUE_SIZE: u16 = 256;
const ROUNDS: usize = 3;

#[derive(Clone, Copy)]
struct Pattern {
    name: &'static str,
    block: usize,
    random: bool,
    write: bool,
    /// Bytes moved per measurement.
    volume: u64,
}

const PATTERNS: [Pattern; 4] = [
    Pattern {
        name: "4K random read",
        block: 4096,
        random: true,
        write: false,
        volume: 256 << 20,
    },
    Pattern {
        name: "4K random write",
        block: 4096,
        random: true,
        write: true,
        volume: 128 << 20,
    },
    Pattern {
        name: "1M sequential read",
        block: 1 << 20,
        random: false,
        write: false,
        volume: 2 << 30,
    },
    Pattern {
        name: "1M sequential write",
        block: 1 << 20,
        random: false,
        write: true,
        volume: 1 << 30,
    },
];

/// The offsets a pattern visits, the same for the device and the limit.
fn offsets(p: &Pattern, disk_size: u64) -> Vec<u64> {
    let count = (p.volume / p.block as u64) as usize;
    let blocks = disk_size / p.block as u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|i| {
            let block = if p.random {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % blocks
            } else {
                i as u64 % blocks
            };
            block * p.block as u64
        })
        .collect()
}

fn open_backend(path: &Path, format: DiskFormat) -> Arc<dyn BlockBackend> {
    let chain = ImageChain::open(path, format, Access::ReadWrite).expect("open image");
    Arc::from(chain.into_backend().expect("backend"))
}

/// Creates the image and writes every byte, so qcow2 clusters are all
/// allocated and raw files have no holes.
fn prepare(path: &Path, format: DiskFormat, size: u64) {
    let _ = std::fs::remove_file(path);
    let backend = disk::create_image(path, format, size).expect("create image");
    let chunk = vec![0x5au8; 4 << 20];
    let mut at = 0;
    while at < size {
        backend.write_at(&chunk, at).expect("fill image");
        at += chunk.len() as u64;
    }
    backend.flush().expect("flush");
}

/// Serves one batch through the device: the time from the available
/// ring to the used ring. Writing the requests is the guest driver's work
/// and not counted.
fn device_batch(drv: &mut BlkDriver, p: &Pattern, batch: &[u64]) -> Duration {
    let kind = if p.write {
        VIRTIO_BLK_T_OUT
    } else {
        VIRTIO_BLK_T_IN
    };
    for (i, &offset) in batch.iter().enumerate() {
        let buf = DATA_START + (i * p.block) as u64;
        let data = if p.write {
            Descriptor::readable(buf, p.block as u32)
        } else {
            Descriptor::writable(buf, p.block as u32)
        };
        drv.submit(kind, offset / 512, &[data]);
    }
    let start = Instant::now();
    drv.process().expect("device works");
    let busy = start.elapsed();
    let mut done = 0;
    while let Some((head, _)) = drv.queue.pop_used() {
        debug_assert_eq!(drv.read_status(head as u16), VIRTIO_BLK_S_OK as u8);
        done += 1;
    }
    assert_eq!(done, batch.len());
    busy
}

/// The same batch as a plain loop, into as many buffers as the device had
/// requests in flight, so both copy to and from the same memory.
fn limit_batch(file: &std::fs::File, bufs: &mut [u8], p: &Pattern, batch: &[u64]) -> Duration {
    let start = Instant::now();
    for (i, &offset) in batch.iter().enumerate() {
        let buf = &mut bufs[i * p.block..(i + 1) * p.block];
        if p.write {
            file.write_all_at(buf, offset).expect("pwrite");
        } else {
            file.read_exact_at(buf, offset).expect("pread");
        }
    }
    start.elapsed()
}

/// The file the plain loop uses: the image itself, except that writes
/// into a qcow2 file at virtual offsets would hit its metadata, so those
/// go to a raw file of the same size next to it (the same storage,
/// without the format).
fn limit_file(path: &Path, format: DiskFormat, p: &Pattern, size: u64) -> std::fs::File {
    let path = if p.write && format == DiskFormat::Qcow2 {
        let scratch = path.with_extension("limit");
        if !scratch.exists() {
            let f = std::fs::File::create(&scratch).expect("scratch file");
            let chunk = vec![0x5a; 4 << 20];
            let mut at = 0;
            while at < size {
                f.write_all_at(&chunk, at).expect("fill scratch");
                at += chunk.len() as u64;
            }
        }
        scratch
    } else {
        path.to_path_buf()
    };
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open image")
}

/// Device and limit, batch by batch, so that load from elsewhere on the
/// machine hits both alike. The limit works half a disk away from the
/// device (same pattern, other blocks), so neither finds the blocks the
/// other just moved in the CPU caches. Returns both times.
fn measure(
    path: &Path,
    format: DiskFormat,
    p: &Pattern,
    offsets: &[u64],
    size: u64,
) -> (Duration, Duration) {
    let memory = 64 << 20;
    let mut drv = BlkDriver::new(open_backend(path, format), memory, QUEUE_SIZE);
    let file = limit_file(path, format, p, size);
    let mut bufs = vec![0x33u8; p.block * DEPTH];
    let (mut device, mut limit) = (Duration::ZERO, Duration::ZERO);
    let elsewhere: Vec<u64> = offsets.iter().map(|o| (o + size / 2) % size).collect();
    for (batch, other) in offsets.chunks(DEPTH).zip(elsewhere.chunks(DEPTH)) {
        device += device_batch(&mut drv, p, batch);
        limit += limit_batch(&file, &mut bufs, p, other);
    }
    (device, limit)
}

fn mib_per_s(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / t.as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let work = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/blk-bench".into()));
    let size_mib: u64 = args.next().map_or(256, |s| s.parse().expect("size in MiB"));
    let size = size_mib << 20;
    // Optional: only patterns whose name contains this (for profiling).
    let only = args.next().unwrap_or_default();
    std::fs::create_dir_all(&work).expect("work directory");
    println!(
        "blk-bench: {} MiB images in {}, queue depth {DEPTH}, best of {ROUNDS}",
        size_mib,
        work.display()
    );
    println!(
        "{:<8} {:<20} {:>12} {:>12} {:>7}",
        "format", "pattern", "device MiB/s", "limit MiB/s", "ratio"
    );
    assert!(DATA_START + (DEPTH << 20) as u64 <= 64 << 20);
    for (format, name) in [(DiskFormat::Raw, "raw"), (DiskFormat::Qcow2, "qcow2")] {
        let path = work.join(format!("bench.{name}"));
        prepare(&path, format, size);
        for p in PATTERNS.iter().filter(|p| p.name.contains(only.as_str())) {
            let offsets = offsets(p, size);
            // The limit reads the file: for qcow2 that is the image file
            // itself at the same offsets, the same amount of work minus the
            // format.
            let (mut best_dev, mut best_lim) = (Duration::MAX, Duration::MAX);
            for _ in 0..ROUNDS {
                let (dev, lim) = measure(&path, format, p, &offsets, size);
                best_dev = best_dev.min(dev);
                best_lim = best_lim.min(lim);
            }
            let (dev, lim) = (mib_per_s(p.volume, best_dev), mib_per_s(p.volume, best_lim));
            println!(
                "{:<8} {:<20} {:>12.0} {:>12.0} {:>6.2}x",
                name,
                p.name,
                dev,
                lim,
                dev / lim
            );
        }
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(path.with_extension("limit"));
    }
}
