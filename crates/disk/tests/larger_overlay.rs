//! Overlays larger than their base (vmctl(8), create: `-b` with a larger
//! `-s`). Past the base's end an overlay reads as zeros, whatever the
//! base's file holds beyond that end, without an error; what is written
//! there is allocated in the overlay like any other cluster. qemu-img and
//! qemu-io read the same overlay the same way.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use disk::{Access, BlockBackend, BlockStatus, DiskFormat};

const CLUSTER: u64 = 65536;

/// `(start, length, depth, host offset)` of each range `qemu-img map`
/// reports with data.
fn qemu_map(image: &Path) -> Vec<(u64, u64, u64, Option<u64>)> {
    let text = qemu_img(&["map", "--output=json", image.to_str().unwrap()]);
    let field = |line: &str, name: &str| -> Option<u64> {
        let at = line.find(&format!("\"{name}\": "))? + name.len() + 4;
        let digits: String = line[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    text.lines()
        .filter(|line| line.contains("\"data\": true"))
        .map(|line| {
            (
                field(line, "start").unwrap(),
                field(line, "length").unwrap(),
                field(line, "depth").unwrap(),
                field(line, "offset"),
            )
        })
        .collect()
}

/// Where qemu-img says the data at `offset` of `image` lives: the layer
/// (0 = the image itself) and the offset in that layer's file.
fn qemu_host(image: &Path, offset: u64) -> Option<(u64, Option<u64>)> {
    qemu_map(image)
        .into_iter()
        .find(|&(start, len, _, _)| (start..start + len).contains(&offset))
        .map(|(start, _, depth, host)| (depth, host.map(|h| h + offset - start)))
}

/// Reads `len` bytes at `offset` through our backend.
fn read(backend: &dyn BlockBackend, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    backend
        .read_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("read {offset}+{len}: {e}"));
    buf
}

/// Checks the overlay `top` (qcow2, `model.len()` bytes) on a base of
/// `base_len` bytes whose contents begin `model`: reads through our
/// backend and through qemu agree with `model`, past the base's end as
/// well; then writes there (one straddling the base's end, one in the
/// middle of the tail, one ending the disk), and checks that both read
/// them back, that they were allocated in the overlay, that the overlay
/// checks clean and that the base files did not change.
fn check_overlay(dir: &tempfile::TempDir, top: &Path, base_len: u64, mut model: Vec<u8>) {
    let size = model.len() as u64;
    assert!(size >= 2 * base_len);
    let base_files: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != top)
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();

    let backend = open(top, DiskFormat::Qcow2, Access::ReadOnly);
    assert_eq!(backend.size(), size);
    assert_same(&read_all(backend.as_ref()), &model, "the whole overlay");
    // A request across the base's end, the cluster that holds the end,
    // and the tail alone in one request.
    let end = base_len as usize;
    assert_same(
        &read(backend.as_ref(), base_len - 700, 1400),
        &model[end - 700..end + 700],
        "across the base's end",
    );
    let cluster = base_len / CLUSTER * CLUSTER;
    assert_same(
        &read(backend.as_ref(), cluster, CLUSTER as usize),
        &model[cluster as usize..(cluster + CLUSTER) as usize],
        "the cluster holding the base's end",
    );
    assert!(
        read(backend.as_ref(), base_len, (size - base_len) as usize)
            .iter()
            .all(|&b| b == 0),
        "past the base's end"
    );
    // What conversion relies on to skip the tail unread.
    let tail = base_len.next_multiple_of(CLUSTER);
    assert_eq!(
        backend.block_status(tail, size - tail).unwrap(),
        (BlockStatus::Zero, size - tail)
    );
    drop(backend);

    // qemu's reading, flattened by qemu-img itself.
    let flat = flatten(dir, top);
    assert_same(&std::fs::read(&flat).unwrap(), &model, "qemu-img convert");
    assert_compare_equal(top, "qcow2", &flat);
    assert_check_clean(top, false);

    let writes = [
        (base_len - 300, 600, 0x5a),
        (base_len + 70_000, 5000, 0xa5),
        (size - 4096, 4096, 0x3c),
    ];
    let backend = open(top, DiskFormat::Qcow2, Access::ReadWrite);
    for (offset, len, byte) in writes {
        backend.write_at(&vec![byte; len], offset).unwrap();
        model[offset as usize..offset as usize + len].fill(byte);
    }
    backend.flush().unwrap();
    assert_same(&read_all(backend.as_ref()), &model, "after the writes");
    drop(backend);
    let backend = open(top, DiskFormat::Qcow2, Access::ReadOnly);
    assert_same(&read_all(backend.as_ref()), &model, "reopened");
    drop(backend);

    assert_check_clean(top, false);
    let reference = path_in(dir, "reference.raw");
    write_sparse(&reference, &model);
    assert_compare_equal(top, "qcow2", &reference);
    std::fs::remove_file(&reference).unwrap();
    std::fs::remove_file(&flat).unwrap();
    for (offset, len, byte) in writes {
        // The bytes around each write too: zeros past the base's end.
        let (from, to) = (
            offset.saturating_sub(512),
            (offset + len as u64 + 512).min(size),
        );
        let mut commands = vec![format!("read -P {byte} {offset} {len}")];
        for (start, stop) in [(from.max(base_len), offset), (offset + len as u64, to)] {
            if stop > start {
                commands.push(format!("read -P 0 {start} {}", stop - start));
            }
        }
        let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
        qemu_io(top, "qcow2", &commands);
        assert_eq!(
            qemu_host(top, offset).map(|(depth, _)| depth),
            Some(0),
            "the write at {offset} is allocated in the overlay"
        );
    }
    for (path, before) in base_files {
        assert!(
            std::fs::read(&path).unwrap() == before,
            "{} changed",
            path.display()
        );
    }
}

/// A qcow2 base whose virtual size ends inside a cluster, and whose file
/// holds other bytes in that cluster past the end: the overlay (made by
/// our `create_overlay`, twice the base's size) shows none of them.
#[test]
fn qcow2_base_ending_inside_a_cluster() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let base_len: u64 = (3 << 20) + 4096 + 512;
    let source = path_in(&dir, "source.raw");
    let mut data = write_reference(&source, base_len as usize, 31);
    let last = base_len as usize - 512;
    data[last..].fill(0x77);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&source)
        .unwrap()
        .write_all_at(&data[last..], last as u64)
        .unwrap();
    let base = path_in(&dir, "base.qcow2");
    qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=65536",
        source.to_str().unwrap(),
        base.to_str().unwrap(),
    ]);
    std::fs::remove_file(&source).unwrap();

    // Fill the rest of the base's last cluster, past its virtual size.
    let (_, host) = qemu_host(&base, base_len - 1).expect("the base's last cluster holds data");
    let host_end = host.unwrap() + 1;
    let cluster_end = host_end + (base_len.next_multiple_of(CLUSTER) - base_len);
    let file = std::fs::OpenOptions::new().write(true).open(&base).unwrap();
    file.write_all_at(&vec![0xee; (cluster_end - host_end) as usize], host_end)
        .unwrap();
    drop(file);
    assert_check_clean(&base, false);
    let base_backend = open(&base, DiskFormat::Qcow2, Access::ReadOnly);
    assert_eq!(base_backend.size(), base_len);
    assert_same(&read_all(base_backend.as_ref()), &data, "the base");
    drop(base_backend);

    let top = path_in(&dir, "top.qcow2");
    disk::create_overlay(&top, "base.qcow2", 2 * base_len).unwrap();
    let mut model = data;
    model.resize(2 * base_len as usize, 0);
    check_overlay(&dir, &top, base_len, model);
}

/// A raw base whose length is not a multiple of the sector size, under
/// an overlay qemu-img made (vmctl only takes qcow2 bases, but qemu-img
/// makes overlays on raw ones, which vmd runs).
#[test]
fn raw_base_ending_inside_a_sector() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let base_len: u64 = (3 << 20) + 1000;
    let base = path_in(&dir, "base.raw");
    let mut data = write_reference(&base, base_len as usize, 32);
    let last = base_len as usize - 100;
    data[last..].fill(0x77);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&base)
        .unwrap()
        .write_all_at(&data[last..], last as u64)
        .unwrap();

    let top = path_in(&dir, "top.qcow2");
    let size = 8u64 << 20;
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        top.to_str().unwrap(),
        &size.to_string(),
    ]);
    let mut model = data;
    model.resize(size as usize, 0);
    check_overlay(&dir, &top, base_len, model);
}
