//! Images made by qemu-img read back through our layer exactly as their
//! raw reference: every cluster size, both compat levels, compressed
//! clusters, zero clusters, and backing chains.

mod common;

use common::*;
use disk::{Access, DiskFormat};

const SIZE: usize = 6 * 1024 * 1024 + 3 * 4096;

fn read_back_equal(image: &std::path::Path, want: &[u8], what: &str) {
    let backend = open(image, DiskFormat::Qcow2, Access::ReadOnly);
    assert_eq!(backend.size() as usize, want.len(), "{what}: size");
    assert_same(&read_all(backend.as_ref()), want, what);
}

#[test]
fn every_cluster_size_and_compat_level() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let reference = path_in(&dir, "ref.raw");
    let want = write_reference(&reference, SIZE, 1);
    for bits in 9..=21 {
        let cluster = 1u32 << bits;
        for compat in ["0.10", "1.1"] {
            let image = path_in(&dir, &format!("c{cluster}-{compat}.qcow2"));
            let options = format!("cluster_size={cluster},compat={compat}");
            qemu_img(&[
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                &options,
                reference.to_str().unwrap(),
                image.to_str().unwrap(),
            ]);
            read_back_equal(&image, &want, &options);
        }
    }
}

#[test]
fn compressed_clusters() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let reference = path_in(&dir, "ref.raw");
    // Compressible data: runs of repeated bytes between random ones.
    let mut want = write_reference(&reference, SIZE, 2);
    for (i, b) in want.iter_mut().enumerate() {
        if (i / 700) % 3 == 0 {
            *b = (i / 700) as u8;
        }
    }
    write_sparse(&reference, &want);
    for cluster in ["4096", "65536", "2097152"] {
        for compat in ["0.10", "1.1"] {
            let image = path_in(&dir, &format!("z{cluster}-{compat}.qcow2"));
            let options = format!("cluster_size={cluster},compat={compat}");
            qemu_img(&[
                "convert",
                "-c",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                &options,
                reference.to_str().unwrap(),
                image.to_str().unwrap(),
            ]);
            read_back_equal(&image, &want, &format!("compressed {options}"));
        }
    }
}

#[test]
fn zero_clusters_and_discarded_clusters() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let reference = path_in(&dir, "ref.raw");
    let mut want = write_reference(&reference, SIZE, 3);
    let image = path_in(&dir, "img.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "compat=1.1",
        reference.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    // Zero clusters (write -z keeps the allocation flag off) and a
    // discarded range.
    qemu_io(
        &image,
        "qcow2",
        &[
            "write -z 65536 196608",
            "write -z -u 1048576 131072",
            "discard 2097152 262144",
        ],
    );
    for (start, len) in [(65536, 196608), (1048576, 131072), (2097152, 262144)] {
        want[start..start + len].fill(0);
    }
    read_back_equal(&image, &want, "zero clusters");
}

/// raw base ← qcow2 ← … ← qcow2, each overlay changing some clusters.
/// The reference is qemu-img's own flattening of the chain.
#[test]
fn backing_chains_of_any_depth() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let base = path_in(&dir, "base.raw");
    write_reference(&base, SIZE, 4);
    let mut below = ("base.raw".to_string(), "raw");
    let depth = 6;
    for level in 1..=depth {
        let name = format!("layer{level}.qcow2");
        let image = path_in(&dir, &name);
        let cluster = ["512", "65536", "4096", "2097152", "1024", "65536"][level - 1];
        let compat = if level % 2 == 0 { "0.10" } else { "1.1" };
        // Relative backing names: resolved against the overlay's directory.
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("cluster_size={cluster},compat={compat}"),
            "-b",
            &below.0,
            "-F",
            below.1,
            image.to_str().unwrap(),
        ]);
        let off = level * 300_000;
        qemu_io(
            &image,
            "qcow2",
            &[
                &format!("write -P {level} {off} 70000"),
                &format!(
                    "write -P 0x{level}{level} {} 4096",
                    off * 2 % (SIZE - 4096) / 512 * 512
                ),
            ],
        );
        below = (name, "qcow2");
    }
    let top = path_in(&dir, &below.0);
    let flat = flatten(&dir, &top);
    let want = std::fs::read(&flat).unwrap();
    read_back_equal(&top, &want, "chain of 6 over raw");

    let chain = disk::ImageChain::open(&top, DiskFormat::Qcow2, Access::ReadOnly).unwrap();
    let formats: Vec<_> = chain.images().iter().map(|i| i.format).collect();
    assert_eq!(formats.len(), depth + 1);
    assert_eq!(formats[depth], DiskFormat::Raw);
    assert_eq!(chain.images()[depth].path, base);
}

/// A backing file recorded without a format is probed: qcow2 by magic.
#[test]
fn backing_format_probed_when_not_recorded() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let reference = path_in(&dir, "ref.raw");
    let want = write_reference(&reference, SIZE, 5);
    let base = path_in(&dir, "base.qcow2");
    qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        reference.to_str().unwrap(),
        base.to_str().unwrap(),
    ]);
    let top = path_in(&dir, "top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    // Drop the recorded format: turn its header extension into one of an
    // unknown type, which readers skip.
    let mut bytes = std::fs::read(&top).unwrap();
    let at = bytes[..65536]
        .windows(4)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .expect("backing format extension");
    bytes[at..at + 4].copy_from_slice(&[0x0b, 0xad, 0xf0, 0x0d]);
    std::fs::write(&top, &bytes).unwrap();
    let info = qemu_img(&["info", top.to_str().unwrap()]);
    assert!(!info.contains("backing file format"), "{info}");
    read_back_equal(&top, &want, "probed qcow2 backing");
}

/// An overlay bigger than its base reads zeroes past the base's end.
#[test]
fn overlay_larger_than_base() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let base = path_in(&dir, "base.raw");
    let mut want = write_reference(&base, SIZE, 6);
    let top = path_in(&dir, "top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "raw",
        top.to_str().unwrap(),
        "8M",
    ]);
    want.resize(8 << 20, 0);
    read_back_equal(&top, &want, "grown overlay");
}
