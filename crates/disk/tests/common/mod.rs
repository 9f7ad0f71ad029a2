//! Helpers shared by the disk integration tests: qemu-img as the
//! reference implementation, and reading a whole virtual disk.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use disk::{Access, BlockBackend, DiskFormat, ImageChain};

/// Runs qemu-img (or qemu-io) and panics with its output if it fails.
pub fn qemu(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (install qemu-utils): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

pub fn qemu_img(args: &[&str]) -> String {
    qemu("qemu-img", args)
}

/// qemu-io commands (`-c` each) on an image, opened with its format.
pub fn qemu_io(image: &Path, format: &str, commands: &[&str]) {
    let mut args = vec!["-f", format];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    let path = image.to_str().unwrap();
    args.push(path);
    qemu("qemu-io", &args);
}

/// `qemu-img check` reports no corruption (leaks are tolerated only if
/// `allow_leaks`).
pub fn assert_check_clean(image: &Path, allow_leaks: bool) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2", image.to_str().unwrap()])
        .output()
        .expect("run qemu-img check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 0: clean; 3: leaks only; 2: corruption; 1: could not check.
    let code = out.status.code();
    let ok = code == Some(0) || (allow_leaks && code == Some(3));
    assert!(
        ok,
        "qemu-img check {} exited {code:?}:\n{text}",
        image.display()
    );
}

/// `qemu-img compare` of an image against a raw reference of the same size.
pub fn assert_compare_equal(image: &Path, format: &str, reference: &Path) {
    qemu_img(&[
        "compare",
        "-f",
        format,
        "-F",
        "raw",
        image.to_str().unwrap(),
        reference.to_str().unwrap(),
    ]);
}

/// qemu's own reading of `image`: `qemu-img convert` of it to a raw
/// `flat.raw` in `dir`, whose path is returned.
pub fn flatten(dir: &tempfile::TempDir, image: &Path) -> PathBuf {
    let flat = path_in(dir, "flat.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        image.to_str().unwrap(),
        flat.to_str().unwrap(),
    ]);
    flat
}

/// Opens an image chain as a backend; any failure fails the test.
///
/// Under `cargo test` the tests are threads of one process: a qemu-img
/// forked by another test holds a copy of every descriptor, and so the
/// image locks, until it execs. An image found locked is therefore tried
/// again for a moment (nextest runs each test in a process of its own).
pub fn open(path: &Path, format: DiskFormat, access: Access) -> Box<dyn BlockBackend> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let chain = loop {
        match ImageChain::open(path, format, access) {
            Err(e) if e.is_locked() && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => break opened,
        }
    };
    chain
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        .into_backend()
        .unwrap_or_else(|e| panic!("backend {}: {e}", path.display()))
}

/// The whole virtual disk, read in odd-sized pieces so that requests
/// straddle cluster boundaries.
pub fn read_all(backend: &dyn BlockBackend) -> Vec<u8> {
    let size = backend.size() as usize;
    let mut data = vec![0u8; size];
    let mut offset = 0;
    let piece = 3 * 65536 + 1536;
    while offset < size {
        let n = piece.min(size - offset);
        backend
            .read_at(&mut data[offset..offset + n], offset as u64)
            .unwrap_or_else(|e| panic!("read at {offset}: {e}"));
        offset += n;
    }
    data
}

/// Deterministic bytes that differ from position to position and from
/// seed to seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut buf = vec![0u8; len];
    rng.fill(&mut buf);
    buf
}

/// A raw reference disk: data in some places, zeroes (holes) elsewhere.
pub fn write_reference(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; size];
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut offset = 0;
    while offset < size {
        let len = rng.usize(1..=200_000).min(size - offset);
        if rng.bool() {
            rng.fill(&mut data[offset..offset + len]);
        }
        offset += len;
    }
    write_sparse(path, &data);
    data
}

/// Writes `data` to a new file, leaving all-zero 4 KiB blocks as holes.
pub fn write_sparse(path: &Path, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path).unwrap();
    file.set_len(data.len() as u64).unwrap();
    for (i, block) in data.chunks(4096).enumerate() {
        if block.iter().any(|&b| b != 0) {
            file.write_all_at(block, (i * 4096) as u64).unwrap();
        }
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn path_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// First difference between two buffers, for readable failures.
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i} (got {:#04x}, want {:#04x})",
            got[i], want[i]
        );
    }
}
