//! virtio-scsi driven through its queues laid out in guest memory,
//! without a guest: every command the CD-ROM implements against a small
//! ISO made in the test with xorriso, reads beyond the end, the control
//! and event queues, missing targets and LUNs, and a hostile driver's
//! transfer lengths, directions and framings. Bad commands end in sense
//! data, bad framing in a response code, broken chains in "needs
//! reset"; nothing panics.

use std::sync::Arc;

use disk::BlockBackend;
use testkit::iso;
use testkit::tmp::TempDir;
use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
use virtio_bindings::virtio_scsi::{
    VIRTIO_SCSI_S_BAD_TARGET, VIRTIO_SCSI_S_FAILURE, VIRTIO_SCSI_S_FUNCTION_REJECTED,
    VIRTIO_SCSI_S_INCORRECT_LUN, VIRTIO_SCSI_S_OK, VIRTIO_SCSI_S_OVERRUN, VIRTIO_SCSI_T_AN_QUERY,
    VIRTIO_SCSI_T_TMF_ABORT_TASK, VIRTIO_SCSI_T_TMF_CLEAR_ACA, VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET,
    VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET, VIRTIO_SCSI_T_TMF_QUERY_TASK_SET,
};
use vmm::devices::virtio::VirtioDevice;
use vmm::devices::virtio::driver::{Descriptor, memory_image};
use vmm::devices::virtio::scsi::driver::{
    Completion, DATA_START, INDIRECT_TABLES, SERIAL, ScsiDriver, UNIT, UNTOUCHED, lun_field,
};
use vmm::devices::virtio::scsi::{CONTROL_QUEUE, EVENT_QUEUE, MAX_TRANSFER_BLOCKS, REQUEST_QUEUE};

const MEM: u64 = 48 << 20;
const OK: u8 = VIRTIO_SCSI_S_OK as u8;
const OVERRUN: u8 = VIRTIO_SCSI_S_OVERRUN as u8;
const BAD_TARGET: u8 = VIRTIO_SCSI_S_BAD_TARGET as u8;
const FAILURE: u8 = VIRTIO_SCSI_S_FAILURE as u8;
const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;
const BLOCK: usize = 2048;

/// ILLEGAL REQUEST sense codes.
const INVALID_OPCODE: (u8, u8, u8) = (5, 0x20, 0x00);
const LBA_OUT_OF_RANGE: (u8, u8, u8) = (5, 0x21, 0x00);
const INVALID_FIELD: (u8, u8, u8) = (5, 0x24, 0x00);

struct Cd {
    _dir: TempDir,
    bytes: Vec<u8>,
    backend: Arc<dyn BlockBackend>,
}

impl Cd {
    fn blocks(&self) -> u64 {
        (self.bytes.len() / BLOCK) as u64
    }

    fn block(&self, lba: u64, count: usize) -> &[u8] {
        let at = lba as usize * BLOCK;
        &self.bytes[at..at + count * BLOCK]
    }
}

/// A small ISO with a few files, made with xorriso.
fn cd() -> Cd {
    let dir = TempDir::new("scsi-iso");
    let path = dir.join("test.iso");
    let big: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    iso::with_files(
        &path,
        "SCSITEST",
        &[("hello.txt", b"hello from the cd\n"), ("big.bin", &big)],
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() % BLOCK, 0);
    let backend = disk::ImageChain::open(&path, disk::DiskFormat::Raw, disk::Access::ReadOnly)
        .and_then(disk::ImageChain::into_backend)
        .unwrap();
    Cd {
        _dir: dir,
        bytes,
        backend: Arc::from(backend),
    }
}

fn driver(cd: &Cd) -> ScsiDriver {
    ScsiDriver::new(cd.backend.clone(), MEM, 128)
}

fn be16(v: u16) -> [u8; 2] {
    v.to_be_bytes()
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn read6(lba: u32, blocks: u8) -> Vec<u8> {
    let l = be32(lba);
    vec![0x08, l[1] & 0x1f, l[2], l[3], blocks, 0]
}

fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![0x28, 0];
    c.extend(be32(lba));
    c.push(0);
    c.extend(be16(blocks));
    c.push(0);
    c
}

fn read12(lba: u32, blocks: u32) -> Vec<u8> {
    let mut c = vec![0xa8, 0];
    c.extend(be32(lba));
    c.extend(be32(blocks));
    c.extend([0, 0]);
    c
}

fn read16(lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![0x88, 0];
    c.extend(lba.to_be_bytes());
    c.extend(be32(blocks));
    c.extend([0, 0]);
    c
}

/// A 10-byte CDB with the allocation length in bytes 7..9.
fn alloc10(op: u8, b1: u8, b2: u8, alloc: u16) -> Vec<u8> {
    let a = be16(alloc);
    vec![op, b1, b2, 0, 0, 0, 0, a[0], a[1], 0]
}

fn good(c: &Completion) {
    assert_eq!(
        (c.response, c.status),
        (OK, GOOD),
        "expected GOOD, sense {:?}",
        c.sense_code()
    );
    assert_eq!(c.sense_len, 0);
}

fn check(c: &Completion, sense: (u8, u8, u8)) {
    assert_eq!((c.response, c.status), (OK, CHECK_CONDITION));
    assert_eq!(c.sense_len, 18, "fixed-format sense");
    assert_eq!(c.sense[0], 0x70, "current error, fixed format");
    assert_eq!(c.sense_code(), Some(sense));
}

/// The field pointer of ILLEGAL REQUEST sense: byte and bit.
fn field_pointer(c: &Completion) -> (u16, Option<u8>) {
    let sks = c.sense[15];
    assert_ne!(sks & 0x80, 0, "SKSV");
    assert_ne!(sks & 0x40, 0, "C/D: the CDB");
    let bit = (sks & 0x08 != 0).then_some(sks & 0x7);
    (u16::from_be_bytes([c.sense[16], c.sense[17]]), bit)
}

#[test]
fn test_unit_ready_and_request_sense() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    let c = drv.command(&[0; 6], 0);
    good(&c);
    assert_eq!(c.residual, 0);
    assert_eq!(c.used_len, 12, "response header, no sense");
    // Sense came with each CHECK CONDITION: none is pending.
    let c = drv.command(&[0x03, 0, 0, 0, 252, 0], 252);
    good(&c);
    assert_eq!(&c.data[..3], &[0x70, 0, 0]);
    assert_eq!((c.data[2], c.data[12], c.data[13]), (0, 0, 0), "NO SENSE");
    assert_eq!(c.residual, 252 - 18);
    assert_eq!(
        c.used_len,
        12 + 96 + 18,
        "the sense field is counted before data"
    );
    // Descriptor-format sense is not implemented.
    let c = drv.command(&[0x03, 1, 0, 0, 252, 0], 252);
    check(&c, INVALID_FIELD);
    assert_eq!(field_pointer(&c), (1, Some(0)));
    assert_eq!(c.residual, 252);
}

#[test]
fn inquiry_standard_data_and_vital_product_pages() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    let c = drv.command(&[0x12, 0, 0, 0, 96, 0], 96);
    good(&c);
    let d = &c.data;
    assert_eq!(d[0], 0x05, "CD/DVD device, connected");
    assert_eq!(d[1], 0x80, "removable");
    assert_eq!(usize::from(d[4]) + 5, 36);
    assert_eq!(c.residual, 96 - 36);
    assert_eq!(&d[8..16], b"VMD     ");
    // The allocation length cuts the data.
    let c = drv.command(&[0x12, 0, 0, 0, 5, 0], 5);
    good(&c);
    assert_eq!(c.data[4], 31, "lengths describe the whole data");
    assert_eq!(c.residual, 0);

    let page = |drv: &mut ScsiDriver, code: u8| {
        let c = drv.command(&[0x12, 1, code, 0, 255, 0], 255);
        good(&c);
        let len = usize::from(u16::from_be_bytes([c.data[2], c.data[3]]));
        assert_eq!(c.residual as usize, 255 - 4 - len);
        assert_eq!(c.data[1], code);
        c.data[4..4 + len].to_vec()
    };
    assert_eq!(page(&mut drv, 0x00), [0x00, 0x80, 0x83]);
    assert_eq!(page(&mut drv, 0x80), SERIAL.as_bytes());
    let id = page(&mut drv, 0x83);
    assert_eq!(&id[0..2], &[0x02, 0x01], "ASCII, T10 vendor ID");
    assert_eq!(usize::from(id[3]), id.len() - 4);
    assert!(id.ends_with(SERIAL.as_bytes()));

    let c = drv.command(&[0x12, 1, 0xb0, 0, 255, 0], 255);
    check(&c, INVALID_FIELD);
    assert_eq!(field_pointer(&c), (2, None));
    let c = drv.command(&[0x12, 0, 0x80, 0, 255, 0], 255);
    check(&c, INVALID_FIELD);
}

#[test]
fn read_capacity_10_and_16_give_the_last_block() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    let c = drv.command(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    good(&c);
    assert_eq!(&c.data[0..4], &be32(cd.blocks() as u32 - 1));
    assert_eq!(&c.data[4..8], &be32(2048));
    let mut rc16 = vec![0x9e, 0x10];
    rc16.resize(16, 0);
    rc16[13] = 32;
    let c = drv.command(&rc16, 32);
    good(&c);
    assert_eq!(&c.data[0..8], &(cd.blocks() - 1).to_be_bytes());
    assert_eq!(&c.data[8..12], &be32(2048));
    assert!(c.data[12..].iter().all(|&b| b == 0));
    // An LBA without PMI, another service action.
    let c = drv.command(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], 8);
    check(&c, INVALID_FIELD);
    rc16[1] = 0x11;
    let c = drv.command(&rc16, 32);
    check(&c, INVALID_FIELD);
    assert_eq!(field_pointer(&c), (1, Some(4)));
}

#[test]
fn reads_of_every_size_return_the_image() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    // The primary volume descriptor.
    let c = drv.command(&read10(16, 1), 2048);
    good(&c);
    assert_eq!(&c.data[..6], b"\x01CD001");
    assert_eq!(c.data, cd.block(16, 1));
    assert_eq!(c.used_len, 12 + 96 + 2048);
    let n = cd.blocks() as usize;
    let c = drv.command(&read6(0, 4), 4 * 2048);
    good(&c);
    assert_eq!(c.data, cd.block(0, 4));
    let c = drv.command(&read12(3, n as u32 - 3), (n - 3) as u32 * 2048);
    good(&c);
    assert_eq!(c.data, cd.block(3, n - 3));
    let c = drv.command(&read16(n as u64 - 1, 1), 2048);
    good(&c);
    assert_eq!(c.data, cd.block(n as u64 - 1, 1));
    // Zero blocks: nothing moves.
    let c = drv.command(&read10(5, 0), 2048);
    good(&c);
    assert_eq!(c.residual, 2048);
    assert!(c.data.iter().all(|&b| b == UNTOUCHED));
}

#[test]
fn reads_beyond_the_end_are_out_of_range() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    let end = cd.blocks();
    for cdb in [
        read10(end as u32, 1),
        read10(end as u32 - 1, 2),
        read12(u32::MAX, 1),
        read16(u64::MAX, 1),
        read16(u64::MAX - 1, 4),
        read16(1 << 40, 1),
    ] {
        let c = drv.command(&cdb, 4096);
        check(&c, LBA_OUT_OF_RANGE);
        assert!(c.data.iter().all(|&b| b == UNTOUCHED), "no data moved");
        assert_eq!(c.residual, 4096);
    }
    // READ(6) of 0 blocks means 256, beyond this small disc.
    assert!(end < 256);
    check(&drv.command(&read6(0, 0), 4096), LBA_OUT_OF_RANGE);
    // The end itself, for zero blocks, is fine.
    good(&drv.command(&read10(end as u32, 0), 0));
    // More than one transfer may hold is refused before the range.
    let c = drv.command(&read12(0, MAX_TRANSFER_BLOCKS + 1), 4096);
    check(&c, INVALID_FIELD);
    assert_eq!(field_pointer(&c), (6, None));
}

#[test]
fn a_last_block_the_image_only_partly_fills_reads_as_zeroes() {
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 255) as u8 + 1).collect();
    let mut drv = ScsiDriver::new(memory_image(&bytes), MEM, 128);
    let c = drv.command(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(&c.data[0..4], &be32(2), "three blocks, the last partial");
    let c = drv.command(&read10(1, 2), 4096);
    good(&c);
    assert_eq!(&c.data[..5000 - 2048], &bytes[2048..]);
    assert!(c.data[5000 - 2048..].iter().all(|&b| b == 0));
}

#[test]
fn reads_fill_scattered_buffers_and_indirect_tables() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    let bufs = [
        Descriptor::writable(DATA_START + 0x10000, 1000),
        Descriptor::writable(DATA_START + 0x30000, 3000),
        Descriptor::writable(DATA_START + 0x20000, 2144),
    ];
    for b in &bufs {
        drv.write_data(b.addr, &vec![UNTOUCHED; b.len as usize]);
    }
    let slot = drv.next_slot(REQUEST_QUEUE);
    let chain = drv.command_chain(UNIT, &read10(17, 3), &[], &bufs);
    let head = drv.queues[REQUEST_QUEUE].write_indirect_chain(INDIRECT_TABLES, &chain);
    drv.queues[REQUEST_QUEUE].make_available(head);
    let done = drv.run(REQUEST_QUEUE).unwrap();
    assert_eq!(done, vec![(u32::from(head), 12 + 96 + 3 * 2048)]);
    let c = drv.completion(slot, done[0].1, &bufs);
    good(&c);
    assert_eq!(c.data, cd.block(17, 3));
    // The reply itself split over two descriptors, as the spec allows.
    let slot = drv.next_slot(REQUEST_QUEUE);
    let header = drv.command_header(slot, UNIT, &read10(16, 1));
    let reply = drv.reply_area(slot);
    let chain = [
        header,
        Descriptor::writable(reply.addr, 5),
        Descriptor::writable(reply.addr + 5, reply.len - 5),
        Descriptor::writable(DATA_START, 2048),
    ];
    drv.queues[REQUEST_QUEUE].add_chain(&chain);
    let done = drv.run(REQUEST_QUEUE).unwrap();
    let c = drv.completion(slot, done[0].1, &chain[3..]);
    good(&c);
    assert_eq!(c.data, cd.block(16, 1));
}

#[test]
fn mode_sense_6_and_10() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    // MODE SENSE(10), capabilities page, no block descriptors.
    let c = drv.command(&alloc10(0x5a, 0x08, 0x2a, 128), 128);
    good(&c);
    let total = usize::from(u16::from_be_bytes([c.data[0], c.data[1]])) + 2;
    assert_eq!(c.residual as usize, 128 - total);
    assert_eq!(&c.data[6..8], &[0, 0], "no block descriptor");
    let page = &c.data[8..total];
    assert_eq!(page[0], 0x2a);
    assert_eq!(usize::from(page[1]) + 2, page.len());
    assert_eq!(page[6] & 0x09, 0x09, "lock and eject");
    // MODE SENSE(6), all pages, with a block descriptor.
    let c = drv.command(&[0x1a, 0, 0x3f, 0, 255, 0], 255);
    good(&c);
    let total = usize::from(c.data[0]) + 1;
    assert_eq!(c.data[3], 8);
    assert_eq!(&c.data[5..8], &be32(cd.blocks() as u32)[1..]);
    assert_eq!(&c.data[9..12], &[0, 0x08, 0], "2048-byte blocks");
    assert_eq!(c.data[12], 0x01, "read error recovery first");
    assert_eq!(c.data[12 + 12], 0x2a);
    assert_eq!(total, 12 + 12 + 32);
    // Changeable values: nothing is.
    let c = drv.command(&alloc10(0x5a, 0x08, 0x40 | 0x2a, 128), 128);
    good(&c);
    assert!(c.data[8 + 2..8 + 32].iter().all(|&b| b == 0));
    // Saved values, unknown pages and subpages.
    let c = drv.command(&[0x1a, 0, 0xea, 0, 255, 0], 255);
    check(&c, (5, 0x39, 0x00));
    let c = drv.command(&[0x1a, 0, 0x08, 0, 255, 0], 255);
    check(&c, INVALID_FIELD);
    assert_eq!(field_pointer(&c), (2, Some(5)));
    let mut subpage = alloc10(0x5a, 0, 0x2a, 128);
    subpage[3] = 1;
    let c = drv.command(&subpage, 128);
    check(&c, INVALID_FIELD);
    assert_eq!(field_pointer(&c), (3, None));
}

#[test]
fn read_toc_formats() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    let c = drv.command(&alloc10(0x43, 0, 0, 100), 100);
    good(&c);
    assert_eq!(&c.data[0..4], &[0, 18, 1, 1]);
    assert_eq!(&c.data[4..12], &[0, 0x14, 1, 0, 0, 0, 0, 0], "track 1 at 0");
    assert_eq!(&c.data[12..16], &[0, 0x14, 0xaa, 0]);
    assert_eq!(&c.data[16..20], &be32(cd.blocks() as u32), "lead-out");
    assert_eq!(c.residual, 100 - 20);
    // MSF: track 1 at 00:02:00.
    let c = drv.command(&alloc10(0x43, 0x02, 0, 12), 12);
    good(&c);
    assert_eq!(&c.data[8..12], &[0, 0, 2, 0]);
    // Session information.
    let c = drv.command(&alloc10(0x43, 0, 1, 12), 12);
    good(&c);
    assert_eq!(c.data, [0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0]);
    // Full TOC: four Q entries of 11 bytes.
    let c = drv.command(&alloc10(0x43, 0, 2, 200), 200);
    good(&c);
    assert_eq!(&c.data[0..4], &[0, 46, 1, 1]);
    assert_eq!(c.data[4 + 3], 0xa0);
    // PMA, a track after the last.
    check(&drv.command(&alloc10(0x43, 0, 3, 100), 100), INVALID_FIELD);
    let mut track2 = alloc10(0x43, 0, 0, 100);
    track2[6] = 2;
    check(&drv.command(&track2, 100), INVALID_FIELD);
}

#[test]
fn get_configuration_reports_a_cd_rom() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    let c = drv.command(&alloc10(0x46, 0, 0, 1024), 1024);
    good(&c);
    let len = u32::from_be_bytes(c.data[0..4].try_into().unwrap()) as usize + 4;
    assert_eq!(c.residual as usize, 1024 - len);
    assert_eq!(&c.data[6..8], &[0, 0x08], "current profile CD-ROM");
    // Feature codes ascend, each descriptor is whole.
    let mut at = 8;
    let mut codes = Vec::new();
    while at < len {
        codes.push(u16::from_be_bytes([c.data[at], c.data[at + 1]]));
        at += 4 + usize::from(c.data[at + 3]);
    }
    assert_eq!(at, len);
    assert!(codes.windows(2).all(|w| w[0] < w[1]), "{codes:x?}");
    assert!(codes.contains(&0x0010) && codes.contains(&0x001e));
    // One feature: random readable, 2048-byte blocks.
    let mut one = alloc10(0x46, 2, 0, 64);
    one[3] = 0x10;
    let c = drv.command(&one, 64);
    good(&c);
    assert_eq!(&c.data[8..12], &[0, 0x10, 0x01, 8]);
    assert_eq!(&c.data[12..16], &be32(2048));
    check(&drv.command(&alloc10(0x46, 3, 0, 64), 64), INVALID_FIELD);
}

#[test]
fn event_status_follows_the_tray() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    let media = [0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0];
    let c = drv.command(&media, 8);
    good(&c);
    assert_eq!(
        c.data,
        [0, 6, 4, 0x50, 0, 0x02, 0, 0],
        "no change, media present"
    );
    // Asynchronous notification is not offered.
    let mut not_polled = media;
    not_polled[1] = 0;
    check(&drv.command(&not_polled, 8), INVALID_FIELD);
    // Eject: a media removal event once, then the tray is open and empty.
    good(&drv.command(&[0x1b, 0, 0, 0, 0x02, 0], 0));
    let c = drv.command(&media, 8);
    assert_eq!(&c.data[4..6], &[3, 0x01]);
    let c = drv.command(&media, 8);
    assert_eq!(&c.data[4..6], &[0, 0x01]);
    check(&drv.command(&[0; 6], 0), (2, 0x3a, 0x02));
    check(&drv.command(&read10(16, 1), 2048), (2, 0x3a, 0x02));
    check(
        &drv.command(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8),
        (2, 0x3a, 0x02),
    );
    let c = drv.command(&[0x03, 0, 0, 0, 18, 0], 18);
    good(&c);
    assert_eq!(
        (c.data[2], c.data[12], c.data[13]),
        (2, 0x3a, 0x02),
        "REQUEST SENSE tells"
    );
    let c = drv.command(&alloc10(0x46, 0, 0, 8), 8);
    assert_eq!(&c.data[6..8], &[0, 0], "no current profile");
    // Load: new media, readable again.
    good(&drv.command(&[0x1b, 0, 0, 0, 0x03, 0], 0));
    let c = drv.command(&media, 8);
    assert_eq!(&c.data[4..6], &[2, 0x02]);
    good(&drv.command(&[0; 6], 0));
    // Device busy class: never busy; no supported class asked for.
    let mut busy = media;
    busy[4] = 0x40;
    assert_eq!(drv.command(&busy, 8).data, [0, 6, 6, 0x50, 0, 0, 0, 0]);
    busy[4] = 0x02;
    assert_eq!(&drv.command(&busy, 8).data[..4], &[0, 2, 0x80, 0x50]);
}

#[test]
fn prevent_allow_medium_removal_guards_the_eject() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    good(&drv.command(&[0x1e, 0, 0, 0, 1, 0], 0));
    check(&drv.command(&[0x1b, 0, 0, 0, 0x02, 0], 0), (5, 0x53, 0x02));
    good(&drv.command(&[0; 6], 0));
    // Stopping the motor or a power condition is not an eject.
    good(&drv.command(&[0x1b, 0, 0, 0, 0x00, 0], 0));
    good(&drv.command(&[0x1b, 0, 0, 0, 0x32, 0], 0));
    check(&drv.command(&[0x1b, 0, 0, 0, 0x40, 0], 0), INVALID_FIELD);
    good(&drv.command(&[0x1e, 0, 0, 0, 0, 0], 0));
    good(&drv.command(&[0x1b, 0, 0, 0, 0x02, 0], 0));
    check(&drv.command(&[0; 6], 0), (2, 0x3a, 0x02));
}

#[test]
fn disc_and_track_information() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    let c = drv.command(&alloc10(0x51, 0, 0, 34), 34);
    good(&c);
    assert_eq!(&c.data[0..8], &[0, 32, 0x0e, 1, 1, 1, 1, 0]);
    check(&drv.command(&alloc10(0x51, 1, 0, 34), 34), INVALID_FIELD);
    let mut track = alloc10(0x52, 1, 0, 48);
    track[5] = 1;
    let c = drv.command(&track, 48);
    good(&c);
    assert_eq!(&c.data[0..4], &[0, 46, 1, 1]);
    assert_eq!(&c.data[24..28], &be32(cd.blocks() as u32));
    track[5] = 2;
    check(&drv.command(&track, 48), INVALID_FIELD);
    let mut by_lba = alloc10(0x52, 0, 0, 48);
    by_lba[2..6].copy_from_slice(&be32(cd.blocks() as u32));
    check(&drv.command(&by_lba, 48), LBA_OUT_OF_RANGE);
}

#[test]
fn mechanism_status_and_report_luns() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    let c = drv.command(&[0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], 8);
    good(&c);
    assert_eq!(c.data, [0; 8], "idle, tray closed, no slots");
    let mut luns = vec![0xa0, 0, 0, 0, 0, 0];
    luns.extend(be32(64));
    luns.extend([0, 0]);
    let c = drv.command(&luns, 64);
    good(&c);
    assert_eq!(
        &c.data[..16],
        &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(c.residual, 64 - 16);
    // The well-known LUNs: none.
    luns[2] = 1;
    let c = drv.command(&luns, 64);
    assert_eq!(&c.data[..8], &[0; 8]);
    luns[2] = 0x55;
    check(&drv.command(&luns, 64), INVALID_FIELD);
    luns[2] = 0;
    luns[6..10].copy_from_slice(&be32(8));
    check(&drv.command(&luns, 64), INVALID_FIELD);
    // The largest allocation length, into a buffer just big enough.
    luns[6..10].copy_from_slice(&be32(u32::MAX));
    let c = drv.command(&luns, 16);
    good(&c);
    assert_eq!(c.residual, 0);
}

#[test]
fn unsupported_commands_are_invalid_operation_codes() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    for op in [
        0x2a, // WRITE(10)
        0x0a, // WRITE(6)
        0x35, // SYNCHRONIZE CACHE
        0x15, // MODE SELECT(6)
        0xbe, // READ CD
        0x42, // READ SUB-CHANNEL
        0x7f, // variable length
        0xc0, // vendor specific
    ] {
        let mut cdb = vec![op];
        cdb.resize(16, 0);
        let c = drv.command(&cdb, 512);
        check(&c, INVALID_OPCODE);
        assert_eq!(field_pointer(&c), (0, None));
        assert_eq!(c.residual, 512);
    }
    // NACA in the control byte.
    check(&drv.command(&[0, 0, 0, 0, 0, 0x04], 0), INVALID_FIELD);
}

#[test]
fn targets_and_luns_that_do_not_exist() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    for lun in [
        lun_field(1, 0),
        lun_field(255, 0),
        lun_field(0, 1),
        lun_field(0, 0x3fff),
        [0, 0, 0, 0, 0, 0, 0, 0],
        [1, 0, 0x40, 0, 0, 0, 0, 1],
    ] {
        let c = drv.command_to(lun, &[0x12, 0, 0, 0, 36, 0], 36);
        assert_eq!(c.response, BAD_TARGET, "{lun:?}");
        assert_eq!(c.sense_len, 0);
        assert_eq!(c.residual, 36);
        assert!(c.data.iter().all(|&b| b == UNTOUCHED));
    }
    // LUN 0 in peripheral addressing is the unit too.
    good(&drv.command_to([1, 0, 0, 0, 0, 0, 0, 0], &[0; 6], 0));
}

#[test]
fn task_management_and_notification_on_the_control_queue() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    assert_eq!(drv.task_management(VIRTIO_SCSI_T_TMF_ABORT_TASK, UNIT), 0);
    assert_eq!(
        drv.task_management(VIRTIO_SCSI_T_TMF_QUERY_TASK_SET, UNIT),
        0
    );
    assert_eq!(
        drv.task_management(VIRTIO_SCSI_T_TMF_CLEAR_ACA, UNIT),
        VIRTIO_SCSI_S_FUNCTION_REJECTED as u8
    );
    assert_eq!(
        drv.task_management(99, UNIT),
        VIRTIO_SCSI_S_FUNCTION_REJECTED as u8
    );
    assert_eq!(
        drv.task_management(VIRTIO_SCSI_T_TMF_ABORT_TASK, lun_field(3, 0)),
        BAD_TARGET
    );
    assert_eq!(
        drv.task_management(VIRTIO_SCSI_T_TMF_ABORT_TASK, lun_field(0, 2)),
        VIRTIO_SCSI_S_INCORRECT_LUN as u8
    );
    assert_eq!(
        drv.task_management(VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET, lun_field(0, 2)),
        0,
        "a nexus reset addresses the target"
    );
    // A logical unit reset ends the removal prevention.
    good(&drv.command(&[0x1e, 0, 0, 0, 1, 0], 0));
    check(&drv.command(&[0x1b, 0, 0, 0, 0x02, 0], 0), (5, 0x53, 0x02));
    assert_eq!(
        drv.task_management(VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET, UNIT),
        0
    );
    good(&drv.command(&[0x1b, 0, 0, 0, 0x02, 0], 0));

    // Asynchronous notification: nothing is supported.
    let mut an = VIRTIO_SCSI_T_AN_QUERY.to_le_bytes().to_vec();
    an.extend_from_slice(&UNIT);
    an.extend_from_slice(&0x10u32.to_le_bytes());
    assert_eq!(drv.control(&an, 5), [0, 0, 0, 0, OK]);
    an[5] = 9;
    assert_eq!(drv.control(&an, 5)[4], BAD_TARGET);
    // Too short for its type, or of no type known.
    assert_eq!(drv.control(&an[..10], 5)[0], FAILURE);
    assert_eq!(drv.control(&7u32.to_le_bytes(), 1), [FAILURE]);
    assert_eq!(drv.control(&[0, 0], 1), [FAILURE]);
    // An AN request whose reply area is too small.
    assert_eq!(drv.control(&an, 2), [FAILURE, UNTOUCHED]);
}

#[test]
fn event_buffers_wait_for_events_that_never_come() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    for i in 0..4 {
        let at = DATA_START + 16 * i;
        drv.write_data(at, &[UNTOUCHED; 16]);
        drv.queues[EVENT_QUEUE].add_chain(&[Descriptor::writable(at, 16)]);
    }
    assert_eq!(drv.process(EVENT_QUEUE), Ok(false));
    assert_eq!(drv.queues[EVENT_QUEUE].pop_used(), None);
    assert!(
        drv.read_data(DATA_START, 64)
            .iter()
            .all(|&b| b == UNTOUCHED)
    );
    // Requests still flow around them.
    good(&drv.command(&[0; 6], 0));
}

// ---- a hostile driver: lengths, directions, framings ----

#[test]
fn data_buffers_too_small_overrun_and_too_large_leave_a_residual() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    // Three blocks into 5000 bytes: what fits arrives, OVERRUN.
    let c = drv.command(&read10(16, 3), 5000);
    assert_eq!(c.response, OVERRUN);
    assert_eq!(c.residual, 0);
    assert_eq!(c.data, &cd.block(16, 3)[..5000]);
    // A read with no data buffer at all.
    let c = drv.command(&read10(16, 1), 0);
    assert_eq!(c.response, OVERRUN);
    // INQUIRY's 36 bytes into 10.
    let c = drv.command(&[0x12, 0, 0, 0, 255, 0], 10);
    assert_eq!(c.response, OVERRUN);
    assert_eq!(c.data[0], 0x05);
    // A huge allocation length into a big buffer: the data is what it is.
    let c = drv.command(&[0x12, 0, 0, 0xff, 0xff, 0], 0xffff);
    good(&c);
    assert_eq!(c.residual, 0xffff - 36);
    assert!(c.data[36..].iter().all(|&b| b == UNTOUCHED));
}

#[test]
fn data_out_is_never_taken_and_both_directions_fail() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    drv.write_data(DATA_START, &[0x55; 512]);
    let out = [Descriptor::readable(DATA_START, 512)];
    // TEST UNIT READY with data-out: fine, all of it is residual.
    let slot = drv.next_slot(REQUEST_QUEUE);
    let chain = drv.command_chain(UNIT, &[0; 6], &out, &[]);
    drv.queues[REQUEST_QUEUE].add_chain(&chain);
    let done = drv.run(REQUEST_QUEUE).unwrap();
    let c = drv.completion(slot, done[0].1, &[]);
    good(&c);
    assert_eq!(c.residual, 512);
    // A write to a CD: unknown operation code, nothing written anywhere.
    let slot = drv.next_slot(REQUEST_QUEUE);
    let chain = drv.command_chain(UNIT, &[0x2a, 0, 0, 0, 0, 16, 0, 0, 1, 0], &out, &[]);
    drv.queues[REQUEST_QUEUE].add_chain(&chain);
    let done = drv.run(REQUEST_QUEUE).unwrap();
    check(&drv.completion(slot, done[0].1, &[]), INVALID_OPCODE);
    // INQUIRY with data-out instead of data-in: nothing can arrive.
    let slot = drv.next_slot(REQUEST_QUEUE);
    let chain = drv.command_chain(UNIT, &[0x12, 0, 0, 0, 36, 0], &out, &[]);
    drv.queues[REQUEST_QUEUE].add_chain(&chain);
    let done = drv.run(REQUEST_QUEUE).unwrap();
    let c = drv.completion(slot, done[0].1, &[]);
    assert_eq!(c.response, OVERRUN);
    assert_eq!(c.residual, 512);
    // Both directions need F_INOUT, which is not offered.
    let inb = [Descriptor::writable(DATA_START + 0x1000, 512)];
    drv.write_data(inb[0].addr, &[UNTOUCHED; 512]);
    let slot = drv.next_slot(REQUEST_QUEUE);
    let chain = drv.command_chain(UNIT, &read10(16, 1), &out, &inb);
    drv.queues[REQUEST_QUEUE].add_chain(&chain);
    let done = drv.run(REQUEST_QUEUE).unwrap();
    let c = drv.completion(slot, done[0].1, &inb);
    assert_eq!(c.response, FAILURE);
    assert!(c.data.iter().all(|&b| b == UNTOUCHED));
    assert_eq!(drv.read_data(DATA_START, 512), vec![0x55; 512]);
}

#[test]
fn the_driver_chooses_the_sense_and_cdb_sizes() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    drv.device.write_config(20, &8u32.to_le_bytes());
    drv.device.write_config(24, &64u32.to_le_bytes());
    // Sense cut to the 8 bytes the driver has room for.
    let c = drv.command(&read10(u32::MAX, 1), 2048);
    assert_eq!((c.response, c.status), (OK, CHECK_CONDITION));
    assert_eq!(c.sense_len, 8);
    assert_eq!(&c.sense[..3], &[0x70, 0, 5]);
    // Data lands after the smaller sense field, the longer CDB field
    // is skipped.
    let c = drv.command(&read10(16, 1), 2048);
    good(&c);
    assert_eq!(c.data, cd.block(16, 1));
    assert_eq!(c.used_len, 12 + 8 + 2048);
    // A CDB field too short for a 10-byte command.
    drv.device.write_config(24, &6u32.to_le_bytes());
    let c = drv.command(&read10(16, 1), 2048);
    check_short(&c);
    good(&drv.command(&[0; 6], 0));
    // Back to the defaults after a reset.
    drv.device.reset();
    assert_eq!((drv.sense_size(), drv.cdb_size()), (96, 32));
}

/// INVALID FIELD IN CDB, sense cut to 8 bytes: key only.
fn check_short(c: &Completion) {
    assert_eq!((c.response, c.status), (OK, CHECK_CONDITION));
    assert_eq!(c.sense[2], 5);
}

#[test]
fn short_headers_fail_and_chains_without_room_for_a_reply_break_the_device() {
    testkit::needs!("xorriso");
    let cd = cd();
    let mut drv = driver(&cd);
    // A header shorter than LUN, tag, attributes and the CDB field.
    let slot = drv.next_slot(REQUEST_QUEUE);
    let mut header = drv.command_header(slot, UNIT, &[0; 6]);
    header.len = 30;
    let reply = drv.reply_area(slot);
    drv.queues[REQUEST_QUEUE].add_chain(&[header, reply]);
    let done = drv.run(REQUEST_QUEUE).unwrap();
    let c = drv.completion(slot, done[0].1, &[]);
    assert_eq!(c.response, FAILURE);
    // No header at all.
    let slot = drv.next_slot(REQUEST_QUEUE);
    let reply = drv.reply_area(slot);
    drv.queues[REQUEST_QUEUE].add_chain(&[reply]);
    let done = drv.run(REQUEST_QUEUE).unwrap();
    assert_eq!(drv.completion(slot, done[0].1, &[]).response, FAILURE);
    // A reply area shorter than the response header.
    let slot = drv.next_slot(REQUEST_QUEUE);
    let header = drv.command_header(slot, UNIT, &[0; 6]);
    drv.queues[REQUEST_QUEUE].add_chain(&[header, Descriptor::writable(DATA_START, 11)]);
    let why = drv.process(REQUEST_QUEUE).unwrap_err().to_string();
    assert!(why.contains("no room"), "{why}");
    // A control request with nowhere to answer.
    let mut drv = driver(&cd);
    drv.write_data(DATA_START, &[0; 24]);
    drv.queues[CONTROL_QUEUE].add_chain(&[Descriptor::readable(DATA_START, 24)]);
    assert!(drv.process(CONTROL_QUEUE).is_err());
}

#[test]
fn broken_descriptor_chains_break_the_device_without_hanging() {
    testkit::needs!("xorriso");
    let cd = cd();
    // A loop.
    let mut drv = driver(&cd);
    let header = drv.command_header(0, UNIT, &[0; 6]);
    let next = VRING_DESC_F_NEXT as u16;
    drv.queues[REQUEST_QUEUE].write_descriptor(
        0,
        Descriptor {
            flags: next,
            next: 1,
            ..header
        },
    );
    drv.queues[REQUEST_QUEUE].write_descriptor(
        1,
        Descriptor {
            flags: next,
            next: 0,
            ..header
        },
    );
    drv.queues[REQUEST_QUEUE].make_available(0);
    assert!(drv.process(REQUEST_QUEUE).is_err());
    // Data buffers outside guest memory.
    let mut drv = driver(&cd);
    let chain = drv.command_chain(
        UNIT,
        &read10(16, 1),
        &[],
        &[Descriptor::writable(MEM - 1024, 2048)],
    );
    drv.queues[REQUEST_QUEUE].add_chain(&chain);
    let why = drv.process(REQUEST_QUEUE).unwrap_err().to_string();
    assert!(why.contains("outside guest memory"), "{why}");
    // More descriptors than a request may have.
    let mut drv = ScsiDriver::new(cd.backend.clone(), MEM, 256);
    let many: Vec<_> = (0..200)
        .map(|i| Descriptor::writable(DATA_START + 512 * i, 512))
        .collect();
    let chain = drv.command_chain(UNIT, &read10(16, 50), &[], &many);
    let head = drv.queues[REQUEST_QUEUE].write_indirect_chain(INDIRECT_TABLES, &chain);
    drv.queues[REQUEST_QUEUE].make_available(head);
    let why = drv.process(REQUEST_QUEUE).unwrap_err().to_string();
    assert!(why.contains("too long"), "{why}");
}
