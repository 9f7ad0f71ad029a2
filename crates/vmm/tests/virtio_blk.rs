//! virtio-blk driven through a virtqueue laid out in guest memory, without
//! a guest: every request type on raw and qcow2 images, the framing
//! freedom the spec gives drivers, and a hostile driver's tricks. Broken
//! chains must end in "needs reset" (the handler's error), bad requests in
//! an error status; nothing may panic, hang or touch memory outside the
//! guest's.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use disk::{Access, BlockBackend, DiskFormat, ImageChain};
use testkit::tmp::TempDir;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vmm::devices::virtio::blk::driver::{BlkDriver, DATA_START, STATUS_UNTOUCHED};
use vmm::devices::virtio::blk::{SEG_MAX, SIZE_MAX};
use vmm::devices::virtio::driver::Descriptor;

const DISK: u64 = 4 << 20;
const MEM: u64 = 16 << 20;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

struct Disk {
    _dir: TempDir,
    path: std::path::PathBuf,
    backend: Arc<dyn BlockBackend>,
}

fn disk(format: DiskFormat) -> Disk {
    let dir = TempDir::new("blk");
    let path = dir.join("disk.img");
    let backend = disk::create_image(&path, format, DISK).expect("create image");
    Disk {
        _dir: dir,
        path,
        backend: Arc::from(backend),
    }
}

fn driver(d: &Disk) -> BlkDriver {
    BlkDriver::new(d.backend.clone(), MEM, 128)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` at `sector`, returns the status.
fn write(drv: &mut BlkDriver, sector: u64, data: &[u8]) -> u8 {
    drv.write_data(DATA_START, data);
    let slot = drv.next_slot();
    drv.submit(
        VIRTIO_BLK_T_OUT,
        sector,
        &[Descriptor::readable(DATA_START, data.len() as u32)],
    );
    let done = drv.run().expect("device works");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1, 1, "a write puts only the status");
    drv.read_status(slot)
}

/// Reads `len` bytes at `sector`, returns status and data.
fn read(drv: &mut BlkDriver, sector: u64, len: usize) -> (u8, Vec<u8>) {
    let at = DATA_START + (8 << 20);
    drv.write_data(at, &vec![0x5a; len]);
    let slot = drv.next_slot();
    drv.submit(
        VIRTIO_BLK_T_IN,
        sector,
        &[Descriptor::writable(at, len as u32)],
    );
    let done = drv.run().expect("device works");
    assert_eq!(done.len(), 1);
    let status = drv.read_status(slot);
    if status == OK {
        assert_eq!(done[0].1 as usize, len + 1, "data and status written");
    }
    (status, drv.read_data(at, len))
}

/// One request of `kind` with `data`; returns the status.
fn simple(drv: &mut BlkDriver, kind: u32, sector: u64, data: &[Descriptor]) -> u8 {
    let slot = drv.next_slot();
    drv.submit(kind, sector, data);
    assert_eq!(drv.run().expect("device works").len(), 1);
    drv.read_status(slot)
}

fn ranges(drv: &BlkDriver, at: u64, list: &[(u64, u32, u32)]) -> Descriptor {
    let mut bytes = Vec::new();
    for &(sector, sectors, flags) in list {
        bytes.extend_from_slice(&sector.to_le_bytes());
        bytes.extend_from_slice(&sectors.to_le_bytes());
        bytes.extend_from_slice(&flags.to_le_bytes());
    }
    drv.write_data(at, &bytes);
    Descriptor::readable(at, bytes.len() as u32)
}

fn round_trip(format: DiskFormat) {
    let d = disk(format);
    let mut drv = driver(&d);
    let data = pattern(64 * 1024, 7);
    assert_eq!(write(&mut drv, 10, &data), OK);
    let (status, back) = read(&mut drv, 10, data.len());
    assert_eq!(status, OK);
    assert_eq!(back, data);
    // The bytes are really in the image.
    let mut on_disk = vec![0u8; data.len()];
    d.backend.read_at(&mut on_disk, 10 * 512).unwrap();
    assert_eq!(on_disk, data);
    assert!(drv.interrupt.queue.load(Ordering::SeqCst) >= 2);
}

#[test]
fn read_and_write_raw() {
    round_trip(DiskFormat::Raw);
}

#[test]
fn read_and_write_qcow2() {
    round_trip(DiskFormat::Qcow2);
}

#[test]
fn reads_into_scattered_buffers_and_through_an_indirect_table() {
    let d = disk(DiskFormat::Qcow2);
    let mut drv = driver(&d);
    let data = pattern(3 * 4096, 3);
    assert_eq!(write(&mut drv, 0, &data), OK);
    let bufs = [
        Descriptor::writable(DATA_START + 0x10000, 4096),
        Descriptor::writable(DATA_START + 0x30000, 4096),
        Descriptor::writable(DATA_START + 0x20000, 4096),
    ];
    let slot = drv.next_slot();
    drv.submit_indirect(VIRTIO_BLK_T_IN, 0, &bufs);
    let done = drv.run().unwrap();
    assert_eq!(done[0].1, 3 * 4096 + 1);
    assert_eq!(drv.read_status(slot), OK);
    for (i, b) in bufs.iter().enumerate() {
        assert_eq!(drv.read_data(b.addr, 4096), data[i * 4096..(i + 1) * 4096]);
    }
}

#[test]
fn the_driver_may_frame_a_request_any_way() {
    // Header split in two descriptors, data and status in one writable
    // descriptor: the spec lets drivers do this.
    let d = disk(DiskFormat::Raw);
    let mut drv = driver(&d);
    let data = pattern(1024, 9);
    assert_eq!(write(&mut drv, 4, &data), OK);
    let header = vmm::devices::virtio::blk::driver::header_bytes(VIRTIO_BLK_T_IN, 4);
    let h = DATA_START + 0x40000;
    drv.write_data(h, &header);
    let buf = DATA_START + 0x50000;
    let head = drv.queue.add_chain(&[
        Descriptor::readable(h, 5),
        Descriptor::readable(h + 5, 11),
        Descriptor::writable(buf, 1025),
    ]);
    let done = drv.run().unwrap();
    assert_eq!(done, vec![(u32::from(head), 1025)]);
    assert_eq!(drv.read_data(buf, 1024), data);
    assert_eq!(drv.read_data(buf + 1024, 1), vec![OK]);
}

#[test]
fn flush_get_id_and_unknown_requests() {
    let d = disk(DiskFormat::Raw);
    let mut drv = driver(&d);
    assert_eq!(simple(&mut drv, VIRTIO_BLK_T_FLUSH, 0, &[]), OK);

    let id_at = DATA_START;
    drv.write_data(id_at, &[0xee; 20]);
    let slot = drv.next_slot();
    drv.submit(VIRTIO_BLK_T_GET_ID, 0, &[Descriptor::writable(id_at, 20)]);
    let done = drv.run().unwrap();
    assert_eq!(done[0].1, 21);
    assert_eq!(drv.read_status(slot), OK);
    let id = drv.read_data(id_at, 20);
    assert_eq!(&id[..13], b"test-disk.img");
    assert!(id[13..].iter().all(|&b| b == 0));

    assert_eq!(simple(&mut drv, 2, 0, &[]), UNSUPP, "SCSI command");
    assert_eq!(simple(&mut drv, 0xdead, 0, &[]), UNSUPP);
}

#[test]
fn discard_and_write_zeroes_leave_zeroes() {
    for format in [DiskFormat::Raw, DiskFormat::Qcow2] {
        let d = disk(format);
        let mut drv = driver(&d);
        let data = pattern(256 * 1024, 1);
        assert_eq!(write(&mut drv, 0, &data), OK);
        let r = ranges(&drv, DATA_START + 0x100000, &[(0, 64, 0), (128, 8, 0)]);
        assert_eq!(simple(&mut drv, VIRTIO_BLK_T_DISCARD, 0, &[r]), OK);
        let r = ranges(&drv, DATA_START + 0x100000, &[(200, 16, 0), (300, 16, 1)]);
        assert_eq!(simple(&mut drv, VIRTIO_BLK_T_WRITE_ZEROES, 0, &[r]), OK);
        let (status, back) = read(&mut drv, 0, data.len());
        assert_eq!(status, OK);
        let zeroed = |sector: usize| {
            (0..64).contains(&sector)
                || (128..136).contains(&sector)
                || (200..216).contains(&sector)
                || (300..316).contains(&sector)
        };
        for sector in 0..data.len() / 512 {
            let got = &back[sector * 512..(sector + 1) * 512];
            if zeroed(sector) {
                assert!(got.iter().all(|&b| b == 0), "{format:?} sector {sector}");
            } else {
                assert_eq!(got, &data[sector * 512..(sector + 1) * 512]);
            }
        }
        // Unknown flags and ranges off the disk are refused.
        let r = ranges(&drv, DATA_START + 0x100000, &[(0, 8, 1)]);
        assert_eq!(simple(&mut drv, VIRTIO_BLK_T_DISCARD, 0, &[r]), UNSUPP);
        let r = ranges(&drv, DATA_START + 0x100000, &[(DISK / 512, 1, 0)]);
        assert_eq!(simple(&mut drv, VIRTIO_BLK_T_DISCARD, 0, &[r]), IOERR);
        let r = ranges(&drv, DATA_START + 0x100000, &[(u64::MAX, 1, 0)]);
        assert_eq!(simple(&mut drv, VIRTIO_BLK_T_WRITE_ZEROES, 0, &[r]), IOERR);
        let too_many: Vec<_> = (0..33).map(|i| (i * 8, 8, 0)).collect();
        let r = ranges(&drv, DATA_START + 0x100000, &too_many);
        assert_eq!(simple(&mut drv, VIRTIO_BLK_T_DISCARD, 0, &[r]), IOERR);
        let odd = Descriptor::readable(DATA_START + 0x100000, 15);
        assert_eq!(simple(&mut drv, VIRTIO_BLK_T_DISCARD, 0, &[odd]), IOERR);
    }
}

#[test]
fn requests_outside_the_disk_or_misshapen_get_an_error_status() {
    let d = disk(DiskFormat::Raw);
    let mut drv = driver(&d);
    let last = DISK / 512;
    assert_eq!(read(&mut drv, last - 1, 512).0, OK);
    assert_eq!(read(&mut drv, last - 1, 1024).0, IOERR, "crosses the end");
    assert_eq!(read(&mut drv, last, 512).0, IOERR);
    assert_eq!(read(&mut drv, u64::MAX, 512).0, IOERR, "sector overflow");
    assert_eq!(read(&mut drv, u64::MAX / 512, 512).0, IOERR);
    assert_eq!(read(&mut drv, 0, 100).0, IOERR, "not whole sectors");
    assert_eq!(write(&mut drv, last, &[1; 512]), IOERR);
    // No header at all, or a short one.
    let slot = drv.next_slot();
    let status = drv.status(slot);
    drv.queue.add_chain(&[status]);
    drv.run().unwrap();
    assert_eq!(drv.read_status(slot), IOERR);
    let slot = drv.next_slot();
    let mut header = drv.header(slot, VIRTIO_BLK_T_IN, 0);
    header.len = 8;
    let status = drv.status(slot);
    drv.queue.add_chain(&[header, status]);
    drv.run().unwrap();
    assert_eq!(drv.read_status(slot), IOERR);
    // A zero-length data buffer is a read of nothing.
    let empty = Descriptor::writable(DATA_START, 0);
    assert_eq!(simple(&mut drv, VIRTIO_BLK_T_IN, 0, &[empty]), OK);
}

#[test]
fn oversized_buffers_and_too_many_segments_are_refused() {
    let d = disk(DiskFormat::Raw);
    let mut drv = BlkDriver::new(d.backend.clone(), 64 << 20, 256);
    let big = Descriptor::writable(DATA_START, SIZE_MAX + 512);
    assert_eq!(simple(&mut drv, VIRTIO_BLK_T_IN, 0, &[big]), IOERR);
    let many: Vec<_> = (0..=SEG_MAX)
        .map(|i| Descriptor::writable(DATA_START + 512 * u64::from(i), 512))
        .collect();
    assert_eq!(simple(&mut drv, VIRTIO_BLK_T_IN, 0, &many), IOERR);
    let fits: Vec<_> = many[..SEG_MAX as usize].to_vec();
    assert_eq!(simple(&mut drv, VIRTIO_BLK_T_IN, 0, &fits), OK);
}

#[test]
fn the_limits_let_linux_send_a_1_mib_request_in_two() {
    use vmm::devices::virtio::VirtioDevice;
    use vmm::devices::virtio::blk::Blk;
    let d = disk(DiskFormat::Raw);
    let blk = Blk::new(d.backend.clone(), "/images/limits.img");
    // The largest queue, and seg_max in the configuration space (offset
    // 12) as QEMU offers them: a driver may use 256-entry queues, and a
    // request may carry 254 page-sized buffers.
    assert_eq!(blk.queue_sizes(), &[256]);
    let mut seg_max = [0u8; 4];
    blk.read_config(12, &mut seg_max);
    assert_eq!(u32::from_le_bytes(seg_max), 254);
    // Such a request, each buffer a separate 4 KiB page as Linux makes of
    // a user buffer, in a 256-entry queue: served in full.
    let mut drv = BlkDriver::new(d.backend.clone(), MEM, 256);
    let data = pattern(254 * 4096, 3);
    let pages: Vec<_> = (0..254u64)
        .map(|i| {
            // Every other page, so none are adjacent.
            let at = DATA_START + 2 * 4096 * i;
            let chunk = i as usize * 4096;
            drv.write_data(at, &data[chunk..chunk + 4096]);
            Descriptor::readable(at, 4096)
        })
        .collect();
    assert_eq!(simple(&mut drv, VIRTIO_BLK_T_OUT, 8, &pages), OK);
    let mut on_disk = vec![0u8; data.len()];
    d.backend.read_at(&mut on_disk, 8 * 512).unwrap();
    assert!(on_disk == data, "the 254-buffer write did not land");
}

#[test]
fn writes_to_a_read_only_disk_fail_and_change_nothing() {
    let Disk {
        _dir,
        path,
        backend,
    } = disk(DiskFormat::Qcow2);
    let data = pattern(4096, 5);
    backend.write_at(&data, 0).unwrap();
    backend.flush().unwrap();
    drop(backend);
    let ro: Arc<dyn BlockBackend> = Arc::from(
        ImageChain::open(&path, DiskFormat::Qcow2, Access::ReadOnly)
            .and_then(ImageChain::into_backend)
            .unwrap(),
    );
    let mut drv = BlkDriver::new(ro, MEM, 128);
    assert_eq!(write(&mut drv, 0, &[0xff; 4096]), IOERR);
    let r = ranges(&drv, DATA_START + 0x100000, &[(0, 8, 0)]);
    assert_eq!(
        simple(&mut drv, VIRTIO_BLK_T_DISCARD, 0, &[r]),
        UNSUPP,
        "discard is not offered on a read-only disk"
    );
    assert_eq!(simple(&mut drv, VIRTIO_BLK_T_FLUSH, 0, &[]), OK);
    let (status, back) = read(&mut drv, 0, 4096);
    assert_eq!(status, OK);
    assert_eq!(back, data);
}

#[test]
fn event_idx_suppresses_interrupts_until_asked() {
    let d = disk(DiskFormat::Raw);
    let mut drv = BlkDriver::new(d.backend.clone(), MEM, 128).with_event_idx();
    // The driver wants an interrupt only after the third completion.
    drv.queue.set_used_event(2);
    for _ in 0..2 {
        drv.submit(VIRTIO_BLK_T_FLUSH, 0, &[]);
        drv.run().unwrap();
    }
    assert_eq!(drv.interrupt.queue.load(Ordering::SeqCst), 0);
    drv.submit(VIRTIO_BLK_T_FLUSH, 0, &[]);
    drv.run().unwrap();
    assert_eq!(drv.interrupt.queue.load(Ordering::SeqCst), 1);
}

// ---- hostile drivers: the device needs a reset, nothing else happens ----

/// Runs the device and insists it gave up on the queue.
fn expect_broken(drv: &mut BlkDriver, what: &str) -> String {
    match drv.process() {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{what}: device accepted it"),
    }
}

#[test]
fn a_descriptor_loop_breaks_the_device_without_hanging() {
    let d = disk(DiskFormat::Raw);
    let mut drv = driver(&d);
    let header = drv.header(0, VIRTIO_BLK_T_IN, 0);
    let next = VRING_DESC_F_NEXT as u16;
    drv.queue.write_descriptor(
        0,
        Descriptor {
            flags: next,
            next: 1,
            ..header
        },
    );
    // Header, then two writable buffers pointing at each other.
    for (index, next_index) in [(1, 2), (2, 1)] {
        drv.queue.write_descriptor(
            index,
            Descriptor {
                addr: DATA_START,
                len: 512,
                flags: next | VRING_DESC_F_WRITE as u16,
                next: next_index,
            },
        );
    }
    drv.queue.make_available(0);
    let why = expect_broken(&mut drv, "loop");
    assert!(why.contains("broken"), "{why}");
}

#[test]
fn a_loop_inside_an_indirect_table_breaks_the_device() {
    let d = disk(DiskFormat::Raw);
    let mut drv = driver(&d);
    let header = drv.header(0, VIRTIO_BLK_T_IN, 0);
    let table = 0x3_0000;
    let looping = Descriptor {
        flags: VRING_DESC_F_NEXT as u16,
        next: 0,
        ..header
    };
    drv.write_data(table, &[0; 16]);
    let head = drv.queue.write_indirect_chain(table, &[looping]);
    // write_indirect_chain does not link a single entry: make it point at
    // itself.
    let mut raw = Vec::new();
    raw.extend_from_slice(&header.addr.to_le_bytes());
    raw.extend_from_slice(&header.len.to_le_bytes());
    raw.extend_from_slice(&(VRING_DESC_F_NEXT as u16).to_le_bytes());
    raw.extend_from_slice(&0u16.to_le_bytes());
    drv.write_data(table, &raw);
    drv.queue.make_available(head);
    expect_broken(&mut drv, "indirect loop");
}

#[test]
fn chains_longer_than_allowed_break_the_device() {
    let d = disk(DiskFormat::Raw);
    let mut drv = BlkDriver::new(d.backend.clone(), MEM, 256);
    // An indirect table of 1000 entries: bounded work, then refused.
    let slot = drv.next_slot();
    let mut chain = vec![drv.header(slot, VIRTIO_BLK_T_IN, 0)];
    chain.extend((0..998).map(|_| Descriptor::writable(DATA_START, 512)));
    chain.push(drv.status(slot));
    let head = drv.queue.write_indirect_chain(0x40_0000, &chain);
    drv.queue.make_available(head);
    let why = expect_broken(&mut drv, "long chain");
    assert!(why.contains("too long"), "{why}");
}

#[test]
fn a_next_index_outside_the_table_breaks_the_device() {
    let d = disk(DiskFormat::Raw);
    let mut drv = driver(&d);
    let header = drv.header(0, VIRTIO_BLK_T_FLUSH, 0);
    drv.queue.write_descriptor(
        0,
        Descriptor {
            flags: VRING_DESC_F_NEXT as u16,
            next: 500,
            ..header
        },
    );
    drv.queue.make_available(0);
    expect_broken(&mut drv, "next out of range");
}

#[test]
fn a_head_index_outside_the_table_breaks_the_device() {
    let d = disk(DiskFormat::Raw);
    let mut drv = driver(&d);
    drv.queue.make_available(4000);
    expect_broken(&mut drv, "head out of range");
}

#[test]
fn buffers_outside_guest_memory_break_the_device() {
    for (addr, len) in [
        (MEM, 512),
        (MEM - 256, 512),
        (u64::MAX - 100, 512),
        (1 << 40, 1),
    ] {
        let d = disk(DiskFormat::Raw);
        let mut drv = driver(&d);
        drv.submit(VIRTIO_BLK_T_IN, 0, &[Descriptor::writable(addr, len)]);
        let why = expect_broken(&mut drv, "outside memory");
        assert!(why.contains("outside guest memory"), "{why}");
    }
    // The status byte itself outside memory.
    let d = disk(DiskFormat::Raw);
    let mut drv = driver(&d);
    let header = drv.header(0, VIRTIO_BLK_T_FLUSH, 0);
    drv.queue
        .add_chain(&[header, Descriptor::writable(MEM + 4096, 1)]);
    expect_broken(&mut drv, "status outside memory");
    // An indirect table outside memory.
    let mut drv = driver(&d);
    let head = drv.queue.write_chain(&[Descriptor {
        addr: MEM + 0x1000,
        len: 64,
        flags: VRING_DESC_F_INDIRECT as u16,
        next: 0,
    }]);
    drv.queue.make_available(head);
    expect_broken(&mut drv, "indirect table outside memory");
}

#[test]
fn a_chain_without_a_status_byte_or_misordered_breaks_the_device() {
    let d = disk(DiskFormat::Raw);
    let mut drv = driver(&d);
    let header = drv.header(0, VIRTIO_BLK_T_FLUSH, 0);
    drv.queue.add_chain(&[header]);
    assert!(expect_broken(&mut drv, "no status").contains("status"));

    let mut drv = driver(&d);
    let header = drv.header(0, VIRTIO_BLK_T_FLUSH, 0);
    let status = Descriptor::writable(DATA_START, 0);
    drv.queue.add_chain(&[header, status]);
    expect_broken(&mut drv, "zero-length status");

    let mut drv = driver(&d);
    let header = drv.header(0, VIRTIO_BLK_T_OUT, 0);
    let status = drv.status(0);
    drv.queue
        .add_chain(&[status, header, Descriptor::readable(DATA_START, 512)]);
    assert!(expect_broken(&mut drv, "misordered").contains("readable descriptor after"));
}

#[test]
fn an_available_index_far_ahead_breaks_the_device() {
    let d = disk(DiskFormat::Raw);
    let mut drv = driver(&d);
    drv.queue.set_avail_idx(1000);
    expect_broken(&mut drv, "avail index");
}

#[test]
fn good_requests_before_a_broken_one_complete() {
    let d = disk(DiskFormat::Raw);
    let mut drv = driver(&d);
    let slot = drv.next_slot();
    drv.submit(VIRTIO_BLK_T_FLUSH, 0, &[]);
    drv.queue.make_available(3000);
    expect_broken(&mut drv, "second chain");
    assert_eq!(drv.read_status(slot), OK);
    assert_eq!(
        drv.queue.pop_used().map(|(id, _)| id),
        Some(u32::from(slot))
    );
    assert_eq!(drv.interrupt.queue.load(Ordering::SeqCst), 1);
    assert_ne!(drv.read_status(slot), STATUS_UNTOUCHED);
}
