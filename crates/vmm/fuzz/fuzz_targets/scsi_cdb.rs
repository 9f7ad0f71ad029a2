//! A hostile SCSI initiator: sequences of commands with CDB bytes, LUN
//! fields, data buffer sizes and directions, and sense and CDB field sizes
//! chosen by the fuzzer, served by the real virtio-scsi handler over a
//! small image in memory. Commands may fail; nothing may panic, the
//! device must answer every request, and every answer must be consistent:
//! sense in fixed format and within the sense field, a residual within
//! the data buffer, no byte written past what it says it transferred.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::VirtioDevice;
use vmm::devices::virtio::driver::{Descriptor, memory_image};
use vmm::devices::virtio::scsi::REQUEST_QUEUE;
use vmm::devices::virtio::scsi::driver::{DATA_START, ScsiDriver, UNIT, UNTOUCHED};

const MEM: u64 = 4 << 20;
/// Nine and a half blocks: a partial last block.
const IMAGE: usize = 9 * 2048 + 1024;

#[derive(Arbitrary, Debug)]
struct Command {
    cdb: Vec<u8>,
    /// The LUN field; the CD-ROM's most of the time.
    lun: Option<[u8; 8]>,
    data_in: u16,
    data_out: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    sense_size: Option<u8>,
    cdb_size: Option<u8>,
    commands: Vec<Command>,
}

fuzz_target!(|input: Input| {
    let image: Vec<u8> = (0..IMAGE).map(|i| (i / 7) as u8).collect();
    let mut drv = ScsiDriver::new(memory_image(&image), MEM, 16);
    if let Some(size) = input.sense_size {
        drv.device.write_config(20, &u32::from(size).to_le_bytes());
    }
    if let Some(size) = input.cdb_size {
        drv.device.write_config(24, &u32::from(size).to_le_bytes());
    }
    let sense_size = drv.sense_size();
    for command in input.commands.iter().take(64) {
        let cdb = &command.cdb[..command.cdb.len().min(64)];
        let data_in_len = u32::from(command.data_in);
        let data_out_len = u32::from(command.data_out);
        let data_in: Vec<Descriptor> = if data_in_len > 0 {
            drv.write_data(DATA_START, &vec![UNTOUCHED; data_in_len as usize]);
            vec![Descriptor::writable(DATA_START, data_in_len)]
        } else {
            Vec::new()
        };
        let data_out: Vec<Descriptor> = if data_out_len > 0 {
            vec![Descriptor::readable(DATA_START + 0x10_0000, data_out_len)]
        } else {
            Vec::new()
        };
        let slot = drv.next_slot(REQUEST_QUEUE);
        let chain = drv.command_chain(command.lun.unwrap_or(UNIT), cdb, &data_out, &data_in);
        let writable: u64 = chain
            .iter()
            .filter(|d| d.flags != 0)
            .map(|d| u64::from(d.len))
            .sum();
        drv.queues[REQUEST_QUEUE].add_chain(&chain);
        let done = drv.run(REQUEST_QUEUE).expect("well-formed chains are answered");
        assert_eq!(done.len(), 1);
        let c = drv.completion(slot, done[0].1, &data_in);
        assert!(u64::from(c.used_len) <= writable, "used length beyond the chain");
        assert!(c.sense_len <= sense_size.min(18));
        if c.sense_len > 0 {
            assert_eq!(c.status, 2, "sense only with CHECK CONDITION");
            assert_eq!(c.sense[0], 0x70);
        }
        let data_len = data_in_len.max(data_out_len);
        assert!(c.residual <= data_len, "residual beyond the buffer");
        if data_in_len > 0 && c.response == 0 {
            let transferred = (data_in_len - c.residual) as usize;
            assert!(
                c.data[transferred..].iter().all(|&b| b == UNTOUCHED),
                "data past the residual"
            );
        }
    }
});
