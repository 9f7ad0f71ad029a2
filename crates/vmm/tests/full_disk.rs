//! A disk that fills up while the guest writes (issue 11): the guest gets
//! an I/O error status, the device keeps working, and the image stays
//! consistent for qemu-img.

use std::process::Command;
use std::sync::Arc;

use disk::{BlockBackend, DiskFormat};
use testkit::tmp::TempDir;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use vmm::devices::virtio::blk::driver::{BlkDriver, DATA_START};
use vmm::devices::virtio::driver::Descriptor;

/// A small tmpfs, unmounted on drop.
struct SmallFs {
    dir: TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let dir = TempDir::new("fullfs");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        SmallFs { dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn write(drv: &mut BlkDriver, sector: u64, data: &[u8]) -> u8 {
    drv.write_data(DATA_START, data);
    let slot = drv.next_slot();
    drv.submit(
        VIRTIO_BLK_T_OUT,
        sector,
        &[Descriptor::readable(DATA_START, data.len() as u32)],
    );
    drv.run().expect("the device keeps working");
    drv.read_status(slot)
}

fn fill_until_error(format: DiskFormat, name: &str) {
    let fs = SmallFs::mount("2m");
    let path = fs.dir.join(name);
    // Larger than the file system holds.
    let backend: Arc<dyn BlockBackend> =
        Arc::from(disk::create_image(&path, format, 16 << 20).expect("create image"));
    let mut drv = BlkDriver::new(backend.clone(), 64 << 20, 128);
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut statuses = Vec::new();
    for i in 0..128u64 {
        let status = write(&mut drv, i * 128, &chunk);
        statuses.push(status);
        if status != VIRTIO_BLK_S_OK as u8 {
            break;
        }
    }
    assert_eq!(
        *statuses.last().unwrap(),
        VIRTIO_BLK_S_IOERR as u8,
        "the guest sees an I/O error once the disk is full ({} writes went through)",
        statuses.len() - 1
    );
    assert!(statuses.len() > 1, "some writes succeeded first");
    // What was written before the error reads back.
    let at = DATA_START + (8 << 20);
    let slot = drv.next_slot();
    drv.submit(
        VIRTIO_BLK_T_IN,
        0,
        &[Descriptor::writable(at, chunk.len() as u32)],
    );
    drv.run().expect("reads still work");
    assert_eq!(drv.read_status(slot), VIRTIO_BLK_S_OK as u8);
    assert_eq!(drv.read_data(at, chunk.len()), chunk);
    drop(drv);
    drop(backend);
    if format == DiskFormat::Qcow2 {
        let out = Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&path)
            .output()
            .expect("qemu-img");
        // 0: clean, 3: leaked clusters only.
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "qemu-img check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_full_raw_disk_answers_io_error() {
    testkit::needs!(root);
    fill_until_error(DiskFormat::Raw, "disk.raw");
}

#[test]
fn a_full_qcow2_disk_answers_io_error_and_stays_consistent() {
    testkit::needs!(root);
    fill_until_error(DiskFormat::Qcow2, "disk.qcow2");
}
