//! Everything we write is a valid image: after random writes, zeroing and
//! discards through our layer, `qemu-img check` finds no error and
//! `qemu-img compare` finds the image equal to a raw reference of what was
//! written.

mod common;

use std::io::IoSlice;
use std::path::Path;

use common::*;
use disk::{Access, BlockBackend, BlockStatus, DiskFormat};

/// Random operations on `backend`, mirrored on `model`; reads are checked
/// against the model as they go.
fn random_ops(backend: &dyn BlockBackend, model: &mut [u8], seed: u64, count: usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let size = model.len() as u64;
    for step in 0..count {
        let len = match rng.u8(0..4) {
            0 => rng.u64(1..=4096),
            1 => rng.u64(1..=256) * 512,
            2 => rng.u64(1..=600_000),
            _ => 4096,
        }
        .min(size);
        let offset = if rng.bool() {
            rng.u64(0..=size - len)
        } else {
            rng.u64(0..=(size - len) / 4096) * 4096
        };
        let (o, l) = (offset as usize, len as usize);
        match rng.u8(0..10) {
            0..=4 => {
                let data = pattern(seed * 1000 + step as u64, l);
                if rng.bool() {
                    backend.write_at(&data, offset).unwrap();
                } else {
                    // A scatter-gather list of uneven pieces.
                    let cut1 = rng.usize(0..=l);
                    let cut2 = rng.usize(cut1..=l);
                    let bufs = [
                        IoSlice::new(&data[..cut1]),
                        IoSlice::new(&data[cut1..cut2]),
                        IoSlice::new(&data[cut2..]),
                    ];
                    backend.write_vectored_at(&bufs, offset).unwrap();
                }
                model[o..o + l].copy_from_slice(&data);
            }
            5 => {
                backend.write_zeroes(offset, len).unwrap();
                model[o..o + l].fill(0);
            }
            6 => {
                backend.discard(offset, len).unwrap();
                model[o..o + l].fill(0);
            }
            7 => backend.flush().unwrap(),
            _ => {
                let mut got = vec![0u8; l];
                backend.read_at(&mut got, offset).unwrap();
                assert_same(
                    &got,
                    &model[o..o + l],
                    &format!("step {step} read {offset}+{len}"),
                );
            }
        }
    }
    backend.flush().unwrap();
}

/// Writes the model as the raw reference and checks `image` against it.
fn check_against_model(dir: &tempfile::TempDir, image: &Path, format: DiskFormat, model: &[u8]) {
    let reference = path_in(dir, "reference.raw");
    write_sparse(&reference, model);
    if format == DiskFormat::Qcow2 {
        assert_check_clean(image, false);
    }
    assert_compare_equal(image, format.name(), &reference);
    let backend = open(image, format, Access::ReadOnly);
    assert_same(&read_all(backend.as_ref()), model, "reopened");
}

#[test]
fn created_images_after_random_operations() {
    testkit::needs!("qemu-img");
    for format in [DiskFormat::Qcow2, DiskFormat::Raw] {
        let dir = tempdir();
        let image = path_in(&dir, &format!("new.{}", format.name()));
        let size = 24 << 20;
        let backend = disk::create_image(&image, format, size).unwrap();
        let mut model = vec![0u8; size as usize];
        random_ops(backend.as_ref(), &mut model, 10, 400);
        drop(backend);
        check_against_model(&dir, &image, format, &model);
    }
}

#[test]
fn qemu_made_images_of_every_kind_after_random_operations() {
    testkit::needs!("qemu-img");
    for cluster in ["512", "4096", "65536", "2097152"] {
        for compat in ["0.10", "1.1"] {
            let dir = tempdir();
            let source = path_in(&dir, "source.raw");
            let mut model = write_reference(&source, 12 << 20, 11);
            let image = path_in(&dir, "image.qcow2");
            let options = format!("cluster_size={cluster},compat={compat}");
            qemu_img(&[
                "convert",
                "-O",
                "qcow2",
                "-o",
                &options,
                source.to_str().unwrap(),
                image.to_str().unwrap(),
            ]);
            let backend = open(&image, DiskFormat::Qcow2, Access::ReadWrite);
            random_ops(backend.as_ref(), &mut model, 12, 200);
            drop(backend);
            check_against_model(&dir, &image, DiskFormat::Qcow2, &model);
        }
    }
}

#[test]
fn compressed_image_rewritten() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let source = path_in(&dir, "source.raw");
    let mut model = write_reference(&source, 8 << 20, 13);
    let image = path_in(&dir, "image.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        source.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    let backend = open(&image, DiskFormat::Qcow2, Access::ReadWrite);
    random_ops(backend.as_ref(), &mut model, 14, 200);
    drop(backend);
    // Overwriting compressed clusters frees parts of shared host clusters;
    // qemu-img counts what remains of those as leaks, not errors.
    let reference = path_in(&dir, "reference.raw");
    write_sparse(&reference, &model);
    assert_check_clean(&image, true);
    assert_compare_equal(&image, "qcow2", &reference);
}

/// Writes into an overlay copy clusters up from the base; the base is
/// never written.
#[test]
fn overlay_writes_leave_the_base_untouched() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let source = path_in(&dir, "source.raw");
    let mut model = write_reference(&source, 16 << 20, 15);
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
    let base_before = std::fs::read(&base).unwrap();
    let top = path_in(&dir, "top.qcow2");
    disk::create_overlay(&top, "base.qcow2", 16 << 20).unwrap();

    let backend = open(&top, DiskFormat::Qcow2, Access::ReadWrite);
    random_ops(backend.as_ref(), &mut model, 16, 400);
    drop(backend);
    assert_eq!(
        std::fs::read(&base).unwrap(),
        base_before,
        "the base image changed"
    );
    check_against_model(&dir, &top, DiskFormat::Qcow2, &model);
    let info = qemu_img(&["info", top.to_str().unwrap()]);
    assert!(info.contains("backing file: base.qcow2"), "{info}");
    assert!(info.contains("backing file format: qcow2"), "{info}");
}

/// A v2 image (compat=0.10) has no zero clusters: a discard in an overlay
/// cannot simply deallocate, or the base's older data would show through
/// where the guest wrote (and then discarded) its own.
#[test]
fn v2_overlay_discards_never_let_the_base_show_through() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let base = path_in(&dir, "base.raw");
    let mut model = write_reference(&base, 8 << 20, 17);
    let top = path_in(&dir, "top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10,cluster_size=65536",
        "-b",
        "base.raw",
        "-F",
        "raw",
        top.to_str().unwrap(),
    ]);
    let backend = open(&top, DiskFormat::Qcow2, Access::ReadWrite);
    // Whole clusters written, then discarded: they must read as zeros.
    let data = pattern(99, 4 * 65536);
    backend.write_at(&data, 65536).unwrap();
    model[65536..5 * 65536].copy_from_slice(&data);
    backend.discard(65536, 4 * 65536).unwrap();
    model[65536..5 * 65536].fill(0);
    let mut back = vec![0xaa; 4 * 65536];
    backend.read_at(&mut back, 65536).unwrap();
    assert!(back.iter().all(|&b| b == 0), "the base shows through");
    random_ops(backend.as_ref(), &mut model, 18, 300);
    drop(backend);
    check_against_model(&dir, &top, DiskFormat::Qcow2, &model);
}

#[test]
fn requests_past_the_end_and_writes_to_read_only_images_fail() {
    let dir = tempdir();
    let image = path_in(&dir, "img.qcow2");
    let backend = disk::create_image(&image, DiskFormat::Qcow2, 1 << 20).unwrap();
    let mut buf = [0u8; 512];
    assert!(backend.read_at(&mut buf, (1 << 20) - 511).is_err());
    assert!(backend.write_at(&buf, 1 << 20).is_err());
    assert!(backend.write_zeroes(u64::MAX - 10, 20).is_err());
    drop(backend);
    let ro = open(&image, DiskFormat::Qcow2, Access::ReadOnly);
    assert!(ro.is_read_only());
    let err = ro.write_at(&buf, 0).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(ro.discard(0, 512).is_err());
    assert!(ro.write_zeroes(0, 512).is_err());
}

/// Empty buffers in a scatter-gather list, and empty requests, are fine
/// (found by the ops_model fuzz target).
#[test]
fn empty_buffers_and_requests() {
    let dir = tempdir();
    for format in [DiskFormat::Qcow2, DiskFormat::Raw] {
        let image = path_in(&dir, &format!("e.{}", format.name()));
        let backend = disk::create_image(&image, format, 1 << 20).unwrap();
        backend.write_at(&[], 4096).unwrap();
        backend
            .write_vectored_at(
                &[
                    IoSlice::new(&[]),
                    IoSlice::new(&[7; 512]),
                    IoSlice::new(&[]),
                ],
                512,
            )
            .unwrap();
        let mut empty = [0u8; 0];
        backend.read_at(&mut empty, 1 << 20).unwrap();
        let (mut a, mut b) = ([0u8; 0], [0u8; 512]);
        let mut bufs = [
            std::io::IoSliceMut::new(&mut a),
            std::io::IoSliceMut::new(&mut b),
        ];
        backend.read_vectored_at(&mut bufs, 512).unwrap();
        assert_eq!(b, [7; 512]);
        backend.write_zeroes(100, 0).unwrap();
        backend.discard(100, 0).unwrap();
    }
}

/// A v2 image (compat=0.10) of 8 MiB, every byte written with a pattern,
/// opened read-write; the pattern is returned as the model.
fn v2_image_full_of_data(dir: &tempfile::TempDir) -> (Box<dyn BlockBackend>, Vec<u8>) {
    let image = path_in(dir, "v2.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10,cluster_size=65536",
        image.to_str().unwrap(),
        "8M",
    ]);
    let backend = open(&image, DiskFormat::Qcow2, Access::ReadWrite);
    let model = pattern(21, 8 << 20);
    backend.write_at(&model, 0).unwrap();
    (backend, model)
}

/// v2 has no zero clusters, so zeroing writes zero data from a 1 MiB
/// buffer: a run longer than that buffer, not a multiple of it and not
/// starting at the beginning of the disk, zeroes its range and nothing
/// around it.
#[test]
fn v2_long_zeroing_inside_the_disk_zeroes_exactly_its_range() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let (backend, mut model) = v2_image_full_of_data(&dir);
    let (offset, len) = ((3 << 20) + 512, (2 << 20) + 4101);
    backend.write_zeroes(offset, len).unwrap();
    model[offset as usize..(offset + len) as usize].fill(0);
    assert_same(&read_all(backend.as_ref()), &model, "after the zeroing");
    drop(backend);
    assert_check_clean(&path_in(&dir, "v2.qcow2"), false);
}

/// The same from the first byte of the disk, ending inside a cluster.
#[test]
fn v2_long_zeroing_from_the_start_zeroes_exactly_its_range() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let (backend, mut model) = v2_image_full_of_data(&dir);
    let len = (1 << 20) + 700;
    backend.write_zeroes(0, len).unwrap();
    model[..len as usize].fill(0);
    assert_same(&read_all(backend.as_ref()), &model, "after the zeroing");
}

/// A discard in a v2 image without a backing file gives back the whole
/// clusters it covers (they read as zeroes unallocated) and zeroes the
/// partial clusters at its ends with data.
#[test]
fn v2_discards_without_backing_deallocate_whole_clusters() {
    testkit::needs!("qemu-img");
    const CLUSTER: u64 = 65536;
    let dir = tempdir();
    let (backend, mut model) = v2_image_full_of_data(&dir);
    let (offset, end) = (CLUSTER + 100, 5 * CLUSTER + 300);
    backend.discard(offset, end - offset).unwrap();
    model[offset as usize..end as usize].fill(0);
    assert_same(&read_all(backend.as_ref()), &model, "after the discard");
    for cluster in 1..=5 {
        let status = if cluster == 1 || cluster == 5 {
            BlockStatus::Data
        } else {
            BlockStatus::Zero
        };
        assert_eq!(
            backend.block_status(cluster * CLUSTER, CLUSTER).unwrap(),
            (status, CLUSTER),
            "cluster {cluster} (whole ones deallocated, partial ones data)"
        );
    }
    drop(backend);
    assert_check_clean(&path_in(&dir, "v2.qcow2"), false);
}
