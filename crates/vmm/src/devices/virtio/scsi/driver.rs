//! A virtio-scsi driver without a guest: guest memory of its own, the
//! three queues in it, and requests laid out as a guest kernel lays them
//! out, served by the device's real handler. The device tests and the
//! fuzz target drive the SCSI host through this.
//!
//! Memory map: queue `i` at `QUEUES + i * 0x1_0000` (room for 1024
//! entries), command headers at [`HEADERS`] (64 bytes per descriptor
//! slot), reply areas at [`REPLIES`] (128 bytes per slot, filled with
//! [`UNTOUCHED`] before each request), indirect tables at
//! [`INDIRECT_TABLES`], data from [`DATA_START`] on.

use std::sync::Arc;

use disk::BlockBackend;
use virtio_bindings::virtio_scsi::VIRTIO_SCSI_T_TMF;
use virtio_queue::Queue;

use super::request::RESPONSE_HEADER_LEN;
use super::{CONTROL_QUEUE, REQUEST_QUEUE, Scsi};
use crate::devices::virtio::device::{DeviceBroken, QueueHandler, VirtioDevice};
use crate::devices::virtio::driver::{
    CountingInterrupt, Descriptor, DriverQueue, guest_memory, read_guest, write_guest,
};
use crate::memory::GuestMemoryMmap;

pub const QUEUES: u64 = 0x1_0000;
pub const HEADERS: u64 = 0x4_0000;
pub const REPLIES: u64 = 0x6_0000;
pub const INDIRECT_TABLES: u64 = 0x8_0000;
pub const DATA_START: u64 = 0x10_0000;
const HEADER_SLOT: u64 = 64;
const REPLY_SLOT: u64 = 128;
/// A byte the device never writes in a reply, to see what it wrote.
pub const UNTOUCHED: u8 = 0xaa;
/// The serial number the unit reports.
pub const SERIAL: &str = "TEST-CD-0001";

/// The LUN field addressing `lun` of `target` (flat addressing).
pub const fn lun_field(target: u8, lun: u16) -> [u8; 8] {
    [1, target, 0x40 | (lun >> 8) as u8, lun as u8, 0, 0, 0, 0]
}

/// The CD-ROM: target 0, LUN 0.
pub const UNIT: [u8; 8] = lun_field(0, 0);

/// What the device answered one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The used ring's length for the chain.
    pub used_len: u32,
    pub sense_len: u32,
    pub residual: u32,
    pub status: u8,
    pub response: u8,
    /// The first `sense_len` bytes of the sense field.
    pub sense: Vec<u8>,
    /// The data-in buffer, whole.
    pub data: Vec<u8>,
}

impl Completion {
    /// Sense key, ASC and ASCQ of fixed-format sense.
    pub fn sense_code(&self) -> Option<(u8, u8, u8)> {
        (self.sense.len() >= 14).then(|| (self.sense[2] & 0x0f, self.sense[12], self.sense[13]))
    }
}

pub struct ScsiDriver {
    pub mem: GuestMemoryMmap,
    pub device: Scsi,
    pub queues: Vec<DriverQueue>,
    pub device_queues: Vec<Queue>,
    pub handler: Box<dyn QueueHandler>,
    pub interrupt: CountingInterrupt,
}

impl ScsiDriver {
    /// A driver for a SCSI host whose CD holds `backend`, with
    /// `mem_size` bytes of guest memory and queues of `queue_size`.
    pub fn new(backend: Arc<dyn BlockBackend>, mem_size: u64, queue_size: u16) -> ScsiDriver {
        let mem = guest_memory(mem_size);
        let mut device = Scsi::new(backend, SERIAL);
        let handler = device.activate(device.features());
        let queues: Vec<DriverQueue> = (0..3)
            .map(|i| DriverQueue::new(&mem, QUEUES + 0x1_0000 * i, queue_size))
            .collect();
        let device_queues = queues.iter().map(|q| q.device_queue(false)).collect();
        ScsiDriver {
            mem,
            device,
            queues,
            device_queues,
            handler,
            interrupt: CountingInterrupt::default(),
        }
    }

    fn config_u32(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.device.read_config(offset, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn sense_size(&self) -> u32 {
        self.config_u32(20)
    }

    pub fn cdb_size(&self) -> u32 {
        self.config_u32(24)
    }

    /// The descriptor slot the next request chain starts at.
    pub fn next_slot(&self, queue: usize) -> u16 {
        self.queues[queue].next_free()
    }

    /// Writes the command header for `slot` (LUN, tag, attributes, and
    /// the CDB padded to `cdb_size`) and returns its descriptor.
    pub fn command_header(&self, slot: u16, lun: [u8; 8], cdb: &[u8]) -> Descriptor {
        let mut header = lun.to_vec();
        header.extend_from_slice(&u64::from(slot).to_le_bytes());
        header.extend_from_slice(&[0, 0, 0]);
        let mut field = cdb.to_vec();
        field.resize(self.cdb_size() as usize, 0);
        header.extend(field);
        let at = HEADERS + HEADER_SLOT * u64::from(slot);
        self.write_data(at, &header);
        Descriptor::readable(at, header.len() as u32)
    }

    /// The reply area for `slot`: response header and sense field,
    /// filled with [`UNTOUCHED`].
    pub fn reply_area(&self, slot: u16) -> Descriptor {
        let len = RESPONSE_HEADER_LEN as u32 + self.sense_size();
        let at = REPLIES + REPLY_SLOT * u64::from(slot);
        self.write_data(at, &vec![UNTOUCHED; len as usize]);
        Descriptor::writable(at, len)
    }

    /// The chain of a command to `lun`: header, data-out if any, reply
    /// area, data-in buffers if any.
    pub fn command_chain(
        &self,
        lun: [u8; 8],
        cdb: &[u8],
        data_out: &[Descriptor],
        data_in: &[Descriptor],
    ) -> Vec<Descriptor> {
        let slot = self.next_slot(REQUEST_QUEUE);
        let mut chain = vec![self.command_header(slot, lun, cdb)];
        chain.extend_from_slice(data_out);
        chain.push(self.reply_area(slot));
        chain.extend_from_slice(data_in);
        chain
    }

    /// Sends `cdb` to `lun` with a data-in buffer of `data_in` bytes (none
    /// if 0) and returns the completion.
    pub fn command_to(&mut self, lun: [u8; 8], cdb: &[u8], data_in: u32) -> Completion {
        let buffers: Vec<Descriptor> = if data_in > 0 {
            self.write_data(DATA_START, &vec![UNTOUCHED; data_in as usize]);
            vec![Descriptor::writable(DATA_START, data_in)]
        } else {
            Vec::new()
        };
        let slot = self.next_slot(REQUEST_QUEUE);
        let chain = self.command_chain(lun, cdb, &[], &buffers);
        self.queues[REQUEST_QUEUE].add_chain(&chain);
        let done = self.run(REQUEST_QUEUE).expect("device works");
        assert_eq!(done.len(), 1, "one completion");
        assert_eq!(done[0].0, u32::from(slot));
        self.completion(slot, done[0].1, &buffers)
    }

    /// Sends `cdb` to the CD-ROM.
    pub fn command(&mut self, cdb: &[u8], data_in: u32) -> Completion {
        self.command_to(UNIT, cdb, data_in)
    }

    /// Reads back what the device wrote for the command in `slot`.
    pub fn completion(&self, slot: u16, used_len: u32, data_in: &[Descriptor]) -> Completion {
        let at = REPLIES + REPLY_SLOT * u64::from(slot);
        let header = self.read_data(at, RESPONSE_HEADER_LEN as usize);
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap());
        let sense_len = word(0);
        let shown = sense_len.min(self.sense_size()) as usize;
        let mut data = Vec::new();
        for d in data_in {
            data.extend(self.read_data(d.addr, d.len as usize));
        }
        Completion {
            used_len,
            sense_len,
            residual: word(4),
            status: header[10],
            response: header[11],
            sense: self.read_data(at + RESPONSE_HEADER_LEN, shown),
            data,
        }
    }

    /// A task management function on `lun`; returns the response byte.
    pub fn task_management(&mut self, subtype: u32, lun: [u8; 8]) -> u8 {
        let mut request = VIRTIO_SCSI_T_TMF.to_le_bytes().to_vec();
        request.extend_from_slice(&subtype.to_le_bytes());
        request.extend_from_slice(&lun);
        request.extend_from_slice(&7u64.to_le_bytes());
        let reply = self.control(&request, 1);
        reply[0]
    }

    /// A control request of `request` bytes with a `reply_len`-byte reply
    /// area; returns the reply area after the device answered.
    pub fn control(&mut self, request: &[u8], reply_len: u32) -> Vec<u8> {
        let slot = self.next_slot(CONTROL_QUEUE);
        let at = HEADERS + HEADER_SLOT * u64::from(slot);
        let reply_at = REPLIES + REPLY_SLOT * u64::from(slot);
        self.write_data(at, request);
        self.write_data(reply_at, &vec![UNTOUCHED; reply_len as usize]);
        self.queues[CONTROL_QUEUE].add_chain(&[
            Descriptor::readable(at, request.len() as u32),
            Descriptor::writable(reply_at, reply_len),
        ]);
        let done = self.run(CONTROL_QUEUE).expect("device works");
        assert_eq!(done.len(), 1, "one completion");
        self.read_data(reply_at, reply_len as usize)
    }

    /// Lets the device serve what is available on `queue`.
    pub fn process(&mut self, queue: usize) -> Result<bool, DeviceBroken> {
        self.handler.process_queue(
            queue,
            &mut self.device_queues[queue],
            &self.mem,
            &self.interrupt,
            usize::MAX,
        )
    }

    /// Serves `queue` and returns its completions (head, length).
    pub fn run(&mut self, queue: usize) -> Result<Vec<(u32, u32)>, DeviceBroken> {
        self.process(queue)?;
        Ok(self.queues[queue].take_used())
    }

    pub fn write_data(&self, addr: u64, data: &[u8]) {
        write_guest(&self.mem, addr, data);
    }

    pub fn read_data(&self, addr: u64, len: usize) -> Vec<u8> {
        read_guest(&self.mem, addr, len)
    }
}
