//! Opening chains on the daemon side, adopting them from descriptors on
//! the VM side, and the locks that keep two users off one image.

mod common;

use std::fs::File;

use common::*;
use disk::{Access, DiskFormat, ImageChain, Problem};

/// raw base ← mid.qcow2 ← top.qcow2 in `dir`, with data in every layer.
fn three_layers(dir: &tempfile::TempDir) -> (std::path::PathBuf, Vec<u8>) {
    let base = path_in(dir, "base.raw");
    write_reference(&base, 4 << 20, 21);
    let mid = path_in(dir, "mid.qcow2");
    let top = path_in(dir, "top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        mid.to_str().unwrap(),
    ]);
    qemu_io(&mid, "qcow2", &["write -P 0x11 100000 300000"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    qemu_io(&top, "qcow2", &["write -P 0x22 250000 100000"]);
    let flat = flatten(dir, &top);
    (top, std::fs::read(flat).unwrap())
}

#[test]
fn descriptors_alone_rebuild_the_chain() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let (top, want) = three_layers(&dir);
    // Daemon side.
    let chain = ImageChain::open(&top, DiskFormat::Qcow2, Access::ReadWrite).unwrap();
    let images = chain.into_images();
    assert_eq!(images.len(), 3);
    let files: Vec<File> = images.into_iter().map(|i| i.file).collect();

    // Every name is gone: the VM side can only use the descriptors.
    for name in ["base.raw", "mid.qcow2", "top.qcow2", "flat.raw"] {
        std::fs::remove_file(path_in(&dir, name)).unwrap();
    }
    let chain = ImageChain::from_files(&top, DiskFormat::Qcow2, Access::ReadWrite, files).unwrap();
    let paths: Vec<_> = chain
        .images()
        .iter()
        .map(|i| i.path.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["top.qcow2", "mid.qcow2", "base.raw"]);
    let formats: Vec<_> = chain.images().iter().map(|i| i.format).collect();
    assert_eq!(
        formats,
        [DiskFormat::Qcow2, DiskFormat::Qcow2, DiskFormat::Raw]
    );
    let backend = chain.into_backend().unwrap();
    assert!(!backend.is_read_only());
    assert_same(&read_all(backend.as_ref()), &want, "adopted chain");
    backend.write_at(&[0x33; 4096], 8192).unwrap();
    backend.flush().unwrap();
}

#[test]
fn descriptors_that_do_not_match_the_chain_are_refused() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let (top, _) = three_layers(&dir);
    let files = || -> Vec<File> {
        ImageChain::open(&top, DiskFormat::Qcow2, Access::ReadOnly)
            .unwrap()
            .into_images()
            .into_iter()
            .map(|i| i.file)
            .collect()
    };
    let mut short = files();
    short.pop();
    let err = ImageChain::from_files(&top, DiskFormat::Qcow2, Access::ReadOnly, short).unwrap_err();
    assert!(matches!(err.problem(), Problem::ChainMismatch(_)), "{err}");
    assert!(err.to_string().contains("base.raw"), "{err}");

    let mut long = files();
    long.push(File::open(&top).unwrap());
    let err = ImageChain::from_files(&top, DiskFormat::Qcow2, Access::ReadOnly, long).unwrap_err();
    assert!(matches!(err.problem(), Problem::ChainMismatch(_)), "{err}");

    // Read-write use needs a descriptor open for writing.
    let err =
        ImageChain::from_files(&top, DiskFormat::Qcow2, Access::ReadWrite, files()).unwrap_err();
    assert!(err.to_string().contains("not open for writing"), "{err}");
}

#[test]
fn an_image_in_use_is_refused_until_released() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let (top, _) = three_layers(&dir);
    let running = ImageChain::open(&top, DiskFormat::Qcow2, Access::ReadWrite).unwrap();

    // A second VM, or a conversion reading the image.
    for access in [Access::ReadWrite, Access::ReadOnly] {
        let err = ImageChain::open(&top, DiskFormat::Qcow2, access).unwrap_err();
        assert!(err.is_locked(), "{err}");
        assert!(
            err.to_string().contains("top.qcow2: image is in use"),
            "{err}"
        );
    }
    // Backing files are shared: another reader may use the base, but
    // nobody may write it while an overlay depends on it.
    let mid = path_in(&dir, "mid.qcow2");
    ImageChain::open(&mid, DiskFormat::Qcow2, Access::ReadOnly).unwrap();
    let err = ImageChain::open(&mid, DiskFormat::Qcow2, Access::ReadWrite).unwrap_err();
    assert!(err.is_locked(), "{err}");

    // The lock lives as long as the descriptors do, wherever they went.
    let files: Vec<File> = running.into_images().into_iter().map(|i| i.file).collect();
    assert!(ImageChain::open(&top, DiskFormat::Qcow2, Access::ReadWrite).is_err());
    drop(files);
    ImageChain::open(&top, DiskFormat::Qcow2, Access::ReadWrite).unwrap();
}

#[test]
fn relative_backing_names_are_relative_to_the_image() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    std::fs::create_dir(path_in(&dir, "base")).unwrap();
    std::fs::create_dir(path_in(&dir, "vms")).unwrap();
    let base = path_in(&dir, "base/disk.raw");
    let want = write_reference(&base, 2 << 20, 22);
    let top = path_in(&dir, "vms/vm1.qcow2");
    disk::create_overlay(&top, "../base/disk.raw", 2 << 20).unwrap_or_else(|e| panic!("{e}"));
    // The overlay records format qcow2 for its base; patch it to raw the
    // way qemu-img would record a raw base.
    qemu_img(&[
        "rebase",
        "-u",
        "-b",
        "../base/disk.raw",
        "-F",
        "raw",
        top.to_str().unwrap(),
    ]);
    let backend = open(&top, DiskFormat::Qcow2, Access::ReadOnly);
    assert_same(&read_all(backend.as_ref()), &want, "relative base");
    let chain = ImageChain::open(&top, DiskFormat::Qcow2, Access::ReadOnly).unwrap();
    assert_eq!(
        chain.images()[1].path,
        path_in(&dir, "vms/../base/disk.raw")
    );
}

#[test]
fn raw_images_and_sizes() {
    let dir = tempdir();
    let raw = path_in(&dir, "disk.img");
    let want = write_reference(&raw, (3 << 20) + 512, 23);
    let backend = open(&raw, DiskFormat::Raw, Access::ReadWrite);
    assert_eq!(backend.format(), DiskFormat::Raw);
    assert_eq!(backend.size(), (3 << 20) + 512);
    assert_same(&read_all(backend.as_ref()), &want, "raw");
    // A raw image is taken as raw even with a qcow2 magic inside: the
    // format is what the caller says (a guest cannot turn its disk into a
    // qcow2 image that names host files).
    backend.write_at(b"QFI\xfb\0\0\0\x03", 0).unwrap();
    drop(backend);
    let chain = ImageChain::open(&raw, DiskFormat::Raw, Access::ReadOnly).unwrap();
    assert_eq!(chain.images().len(), 1);
}

#[test]
fn every_image_of_the_chain_goes_through_the_opener() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let (top, _) = three_layers(&dir);
    let asked = std::sync::Mutex::new(Vec::new());
    let opener = |path: &std::path::Path, write: bool| {
        asked
            .lock()
            .unwrap()
            .push((path.file_name().unwrap().to_owned(), write));
        if path.ends_with("base.raw") {
            // As a user without the right to read it would be told.
            return Err(std::io::Error::from_raw_os_error(libc::EACCES));
        }
        disk::open_checked(path, write, disk::Expect::Image)
    };
    let err =
        ImageChain::open_with(&top, DiskFormat::Qcow2, Access::ReadWrite, &opener).unwrap_err();
    assert_eq!(
        *asked.lock().unwrap(),
        [
            ("top.qcow2".into(), true),
            ("mid.qcow2".into(), false),
            ("base.raw".into(), false)
        ]
    );
    assert_eq!(err.innermost().path(), path_in(&dir, "base.raw"));
    assert_eq!(err.errno(), libc::EACCES);
}

#[test]
fn a_fifo_in_the_chain_is_refused_without_waiting_for_a_writer() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let fifo = path_in(&dir, "base.raw");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let top = path_in(&dir, "top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "base.raw",
        "-F",
        "raw",
        top.to_str().unwrap(),
        "1M",
    ]);
    let started = std::time::Instant::now();
    let err = ImageChain::open(&top, DiskFormat::Qcow2, Access::ReadWrite).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(err.innermost().path(), fifo);
    assert_eq!(
        err.innermost().to_string(),
        format!(
            "{}: a FIFO, not a regular file or a block device",
            fifo.display()
        )
    );
}
