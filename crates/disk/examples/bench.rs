//! Side-by-side benchmark of this crate against QEMU's tools on the same
//! files (run through bench/disk-bench.sh):
//!
//! * conversion of a 1 GiB half-sparse image, raw→qcow2 and qcow2→raw:
//!   our conversion (what `vmctl create -i` runs) against `qemu-img convert`;
//! * 4 KiB reads and writes on a 1 GiB fully allocated qcow2 image through
//!   our block layer against `qemu-img bench` with the same access pattern
//!   (QEMU's bench steps through the image by a fixed stride; we use the
//!   same stride, which with an odd number of blocks visits blocks in a
//!   scattered order), plus truly random offsets for our layer.
//!
//! Prints each time and the ratio QEMU time / our time (above 1: we are
//! faster). Usage: bench <work directory> [requests]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use disk::{Access, DiskFormat, ImageChain};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
/// qemu-img bench's step: an odd number of blocks, so that consecutive
/// requests land 256 MiB + 4 KiB apart and wrap through the whole image.
const STRIDE: u64 = (65536 + 1) * BLOCK;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("/tmp/disk-bench"));
    let requests: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    std::fs::create_dir_all(&dir).unwrap();

    let sparse_raw = dir.join("half-sparse.raw");
    write_half_sparse(&sparse_raw, GIB);
    let sparse_qcow2 = dir.join("half-sparse.qcow2");
    remove(&sparse_qcow2);
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        path(&sparse_raw),
        path(&sparse_qcow2),
    ]);

    println!("== conversion of a 1 GiB half-sparse image (best of 3) ==");
    compare_conversion(&dir, &sparse_raw, DiskFormat::Raw, DiskFormat::Qcow2);
    compare_conversion(&dir, &sparse_qcow2, DiskFormat::Qcow2, DiskFormat::Raw);

    println!("== {requests} requests of 4 KiB on a 1 GiB allocated qcow2 image (best of 3) ==");
    let full_raw = dir.join("full.raw");
    write_full(&full_raw, GIB);
    let master = dir.join("full.qcow2");
    remove(&master);
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        path(&full_raw),
        path(&master),
    ]);
    remove(&full_raw);
    let image = dir.join("bench.qcow2");
    for write in [false, true] {
        let kind = if write { "write" } else { "read" };
        let ours = best_of(3, || {
            std::fs::copy(&master, &image).unwrap();
            ours_requests(&image, write, requests, Pattern::Stride)
        });
        let qemu = best_of(3, || {
            std::fs::copy(&master, &image).unwrap();
            qemu_bench(&image, write, requests, 1)
        });
        report(&format!("{kind}s, stride, depth 1"), ours, qemu);
        let qemu_deep = best_of(3, || {
            std::fs::copy(&master, &image).unwrap();
            qemu_bench(&image, write, requests, 64)
        });
        report(
            &format!("{kind}s, stride, ours depth 1 vs QEMU depth 64"),
            ours,
            qemu_deep,
        );
        let random = best_of(3, || {
            std::fs::copy(&master, &image).unwrap();
            ours_requests(&image, write, requests, Pattern::Random)
        });
        println!(
            "  {kind}s, random offsets, ours: {:.3} s ({:.0} IOPS)",
            random.as_secs_f64(),
            requests as f64 / random.as_secs_f64()
        );
    }
    for file in [&sparse_raw, &sparse_qcow2, &master, &image] {
        remove(file);
    }
}

fn compare_conversion(dir: &Path, source: &Path, from: DiskFormat, to: DiskFormat) {
    let out = dir.join(format!("converted.{}", to.name()));
    let ours = best_of(3, || {
        remove(&out);
        let start = Instant::now();
        convert_ours(source, from, &out, to);
        start.elapsed()
    });
    let qemu = best_of(3, || {
        remove(&out);
        let start = Instant::now();
        qemu_img(&[
            "convert",
            "-f",
            from.name(),
            "-O",
            to.name(),
            path(source),
            path(&out),
        ]);
        start.elapsed()
    });
    report(
        &format!("convert {} -> {}", from.name(), to.name()),
        ours,
        qemu,
    );
    remove(&out);
}

/// What `vmctl create -i` does: open the source chain read-only, create
/// the destination, copy skipping zeroes.
fn convert_ours(source: &Path, from: DiskFormat, out: &Path, to: DiskFormat) {
    let source = ImageChain::open(source, from, Access::ReadOnly)
        .unwrap()
        .into_backend()
        .unwrap();
    let size = source.size().next_multiple_of(MIB);
    drop(disk::create_image(out, to, size).unwrap());
    let dest = ImageChain::open(out, to, Access::ReadWrite)
        .unwrap()
        .into_backend()
        .unwrap();
    disk::convert(source.as_ref(), dest.as_ref(), &mut |_, _| {}).unwrap();
}

#[derive(Clone, Copy)]
enum Pattern {
    Stride,
    Random,
}

fn ours_requests(image: &Path, write: bool, requests: u64, pattern: Pattern) -> Duration {
    let access = if write {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let backend = ImageChain::open(image, DiskFormat::Qcow2, access)
        .unwrap()
        .into_backend()
        .unwrap();
    let size = backend.size();
    let mut buf = vec![0xa5u8; BLOCK as usize];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut offset = 0;
    let start = Instant::now();
    for _ in 0..requests {
        let at = match pattern {
            Pattern::Stride => offset,
            Pattern::Random => rng.u64(0..size / BLOCK) * BLOCK,
        };
        if write {
            backend.write_at(&buf, at).unwrap();
        } else {
            backend.read_at(&mut buf, at).unwrap();
        }
        offset = (offset + STRIDE) % size;
    }
    backend.flush().unwrap();
    let elapsed = start.elapsed();
    std::hint::black_box(&buf);
    elapsed
}

/// `qemu-img bench` on the page cache (cache=writeback), same stride.
fn qemu_bench(image: &Path, write: bool, requests: u64, depth: u32) -> Duration {
    let count = requests.to_string();
    let step = STRIDE.to_string();
    let depth = depth.to_string();
    let mut args = vec![
        "bench",
        "-f",
        "qcow2",
        "-t",
        "writeback",
        "-c",
        &count,
        "-d",
        &depth,
        "-s",
        "4096",
        "-S",
        &step,
    ];
    if write {
        args.push("-w");
    }
    args.push(path(image));
    // QEMU's own measure of the run, which leaves out its start-up and
    // image opening (our time leaves out opening too).
    let out = Command::new("qemu-img")
        .args(&args)
        .output()
        .expect("qemu-img (qemu-utils)");
    assert!(out.status.success(), "qemu-img {args:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let seconds: f64 = text
        .split("Run completed in ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected qemu-img bench output: {text}"));
    Duration::from_secs_f64(seconds)
}

fn report(what: &str, ours: Duration, qemu: Duration) {
    println!(
        "  {what}: ours {:.3} s, qemu-img {:.3} s, ratio qemu/ours {:.2}",
        ours.as_secs_f64(),
        qemu.as_secs_f64(),
        qemu.as_secs_f64() / ours.as_secs_f64()
    );
}

fn best_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

/// 1 MiB of data, 1 MiB of hole, alternately.
fn write_half_sparse(file: &Path, size: u64) {
    use std::os::unix::fs::FileExt;
    remove(file);
    let f = std::fs::File::create(file).unwrap();
    f.set_len(size).unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let mut data = vec![0u8; MIB as usize];
    for mib in (0..size / MIB).step_by(2) {
        rng.fill(&mut data);
        f.write_all_at(&data, mib * MIB).unwrap();
    }
}

fn write_full(file: &Path, size: u64) {
    use std::os::unix::fs::FileExt;
    remove(file);
    let f = std::fs::File::create(file).unwrap();
    let mut rng = fastrand::Rng::with_seed(2);
    let mut data = vec![0u8; 8 * MIB as usize];
    for chunk in 0..size / (8 * MIB) {
        rng.fill(&mut data);
        f.write_all_at(&data, chunk * 8 * MIB).unwrap();
    }
}

fn qemu_img(args: &[&str]) {
    let status = Command::new("qemu-img")
        .args(args)
        .status()
        .expect("qemu-img (qemu-utils)");
    assert!(status.success(), "qemu-img {args:?}");
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn remove(p: &Path) {
    let _ = std::fs::remove_file(p);
}
