//! Reading a stream into a new VM: [`read_stream`] takes every frame in
//! the order [`super::save`] writes them, puts guest memory straight into
//! RAM and keeps the rest, and only once the trailer has checked out does
//! [`apply`] hand the states to KVM and the devices. Nothing of a stream
//! that turns out truncated or corrupt reaches a vCPU.

use std::io::Read;

use kvm_ioctls::VmFd;

use super::devices::DeviceRecord;
use super::error::StreamError;
use super::format::{FrameReader, Tag};
use super::header::Header;
use super::in_kernel::{self, InKernelState};
use super::memory::{self, MemoryLoader};
use super::{Machine, SavedDevice};
use crate::devices::persist::decode;
use crate::memory::GuestRam;
use crate::vcpu::persist::{self as vcpu_state, VcpuState};

/// Everything of a stream but its memory, which is already in place.
#[derive(Debug)]
pub struct Received {
    pub vcpus: Vec<VcpuState>,
    pub in_kernel: InKernelState,
    /// Device states, in the header's device order.
    pub devices: Vec<Vec<u8>>,
    pub pages: u64,
}

fn expect(tag: Tag, wanted: Tag) -> Result<(), StreamError> {
    if tag == wanted {
        Ok(())
    } else {
        Err(StreamError::corrupt(format!(
            "{tag:?} frame where a {wanted:?} frame belongs"
        )))
    }
}

fn payload<T: serde::de::DeserializeOwned>(tag: Tag, bytes: &[u8]) -> Result<T, StreamError> {
    decode(bytes).map_err(|e| StreamError::corrupt(format!("{tag:?} frame: {e}")))
}

/// Reads the frames after the header (which `reader` resumed after) up to
/// the trailer and the end of the stream. Guest memory goes into `ram`.
pub fn read_stream<R: Read>(
    mut reader: FrameReader<R>,
    header: &Header,
    ram: &GuestRam,
) -> Result<Received, StreamError> {
    let mut vcpus = Vec::new();
    for index in 0..header.description.vcpus {
        let frame = reader.next_frame()?;
        expect(frame.tag, Tag::Vcpu)?;
        let vcpu: VcpuState = payload(frame.tag, &frame.payload)?;
        if vcpu.index != index {
            return Err(StreamError::corrupt(format!(
                "vCPU {} where vCPU {index} belongs",
                vcpu.index
            )));
        }
        vcpus.push(vcpu);
    }
    let frame = reader.next_frame()?;
    expect(frame.tag, Tag::Kvm)?;
    let in_kernel: InKernelState = payload(frame.tag, &frame.payload)?;
    let mut devices = Vec::new();
    for name in &header.devices {
        let frame = reader.next_frame()?;
        expect(frame.tag, Tag::Device)?;
        let record: DeviceRecord = payload(frame.tag, &frame.payload)?;
        if &record.name != name {
            return Err(StreamError::corrupt(format!(
                "state of {} where {name} belongs",
                record.name
            )));
        }
        devices.push(record.state);
    }
    let mut loader = MemoryLoader::new(ram);
    let (tag, head) = memory::read_frames(&mut reader, &mut loader)?;
    expect(tag, Tag::Trailer)?;
    reader.rest_of(tag, head)?;
    reader.expect_end()?;
    Ok(Received {
        vcpus,
        in_kernel,
        devices,
        pages: loader.pages,
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands a checked stream's states to a machine built from its header:
/// vCPUs (created with [`VcpuState::cpuid`]), the in-kernel devices, and
/// every device.
pub fn apply(machine: &Machine<'_>, received: &Received) -> Result<(), StreamError> {
    let restore = StreamError::Restore;
    let xsave_size = vcpu_state::xsave_size(machine.vm_fd);
    for (vcpu, state) in machine.vcpus.iter().zip(&received.vcpus) {
        vcpu_state::restore(&lock(vcpu), state, xsave_size)
            .map_err(|e| restore(format!("vcpu {}: {e}", state.index)))?;
    }
    apply_in_kernel(machine.vm_fd, &received.in_kernel)?;
    apply_devices(machine.devices, &received.devices)
}

fn apply_in_kernel(vm: &VmFd, state: &InKernelState) -> Result<(), StreamError> {
    in_kernel::restore(vm, state).map_err(StreamError::Restore)
}

fn apply_devices(devices: &[SavedDevice], states: &[Vec<u8>]) -> Result<(), StreamError> {
    if devices.len() != states.len() {
        return Err(StreamError::corrupt(
            "device count differs from the header's",
        ));
    }
    for (device, state) in devices.iter().zip(states) {
        device.restore(state)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kvm_bindings::kvm_cpuid_entry2;
    use proto::vmchannel::VmDescription;

    use super::*;
    use crate::devices::persist::encode;
    use crate::memory::{Layout, MIB};
    use crate::snapshot::format::{FrameWriter, read_header_bytes};
    use crate::snapshot::kvm_bytes::KvmBytes;

    fn header(ram: &GuestRam) -> Header {
        Header {
            name: "t".into(),
            description: VmDescription {
                memory: 8 * MIB,
                vcpus: 1,
                disks: vec![],
                cdrom: None,
                nics: vec![],
            },
            bios_area: (1 << 32) - ram.layout.bios_area_start(),
            regions: ram
                .layout
                .regions
                .iter()
                .map(|r| (r.guest_addr, r.size))
                .collect(),
            disk_sizes: vec![],
            cdrom_size: None,
            cpuid: vec![KvmBytes(kvm_cpuid_entry2::default())],
            devices: vec!["com1".into()],
        }
    }

    fn vcpu(index: u32) -> VcpuState {
        VcpuState {
            index,
            cpuid: vec![],
            regs: KvmBytes(Default::default()),
            sregs: KvmBytes(Default::default()),
            xsave: vec![],
            xcrs: KvmBytes(Default::default()),
            msrs: vec![(0x10, 1)],
            lapic: KvmBytes(Default::default()),
            events: KvmBytes(Default::default()),
            mp_state: KvmBytes(Default::default()),
            debugregs: KvmBytes(Default::default()),
            tsc_khz: 1,
        }
    }

    fn in_kernel() -> InKernelState {
        InKernelState {
            pic_master: KvmBytes(Default::default()),
            pic_slave: KvmBytes(Default::default()),
            ioapic: KvmBytes(Default::default()),
            pit: KvmBytes(Default::default()),
            clock: KvmBytes(Default::default()),
        }
    }

    fn run(addr: u64, page: u8) -> Vec<u8> {
        let mut r = addr.to_le_bytes().to_vec();
        r.extend_from_slice(&1u32.to_le_bytes());
        r.extend(std::iter::repeat_n(page, 4096));
        r
    }

    /// A stream of `frames` after the header; memory frames hold one page.
    fn stream(ram: &GuestRam, frames: &[(Tag, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = FrameWriter::new(&mut out).unwrap();
        w.frame(Tag::Header, &[&header(ram).encode()]).unwrap();
        for (tag, payload) in frames {
            w.frame(*tag, &[payload]).unwrap();
            if *tag == Tag::Memory {
                w.count_pages(1);
            }
        }
        w.finish().unwrap();
        out
    }

    fn read(ram: &GuestRam, bytes: &[u8]) -> Result<Received, StreamError> {
        let mut input = bytes;
        let (raw, payload) = read_header_bytes(&mut input)?;
        let header = Header::decode(&payload)?;
        let (reader, _) = FrameReader::resume(&raw, input)?;
        read_stream(reader, &header, ram)
    }

    fn device(name: &str) -> Vec<u8> {
        encode(&DeviceRecord {
            name: name.into(),
            state: vec![1, 2, 3],
        })
    }

    #[test]
    fn frames_in_order_read_back_and_anything_else_is_refused() {
        let ram = GuestRam::new(Layout::new(8 * MIB), "restore-test").unwrap();
        let good = [
            (Tag::Vcpu, encode(&vcpu(0))),
            (Tag::Kvm, encode(&in_kernel())),
            (Tag::Device, device("com1")),
            (Tag::Memory, run(0x1000, 0xa5)),
            (Tag::Memory, run(0x3000, 0x5a)),
        ];
        let received = read(&ram, &stream(&ram, &good)).unwrap();
        assert_eq!(received.pages, 2);
        assert_eq!(received.devices, vec![vec![1, 2, 3]]);
        assert_eq!(received.vcpus[0].msrs, vec![(0x10, 1)]);

        let corrupt = |frames: &[(Tag, Vec<u8>)], why: &str| match read(&ram, &stream(&ram, frames))
        {
            Err(StreamError::Corrupt(_)) => {}
            Err(other) => panic!("{why}: {other}"),
            Ok(_) => panic!("{why}: accepted"),
        };
        let mut swapped = good.to_vec();
        swapped.swap(1, 2);
        corrupt(&swapped, "device before the in-kernel state");
        let mut other_vcpu = good.to_vec();
        other_vcpu[0].1 = encode(&vcpu(1));
        corrupt(&other_vcpu, "vCPU 1 where vCPU 0 belongs");
        let mut other_device = good.to_vec();
        other_device[2].1 = device("rtc");
        corrupt(&other_device, "another device's state");
        let mut backwards = good.to_vec();
        backwards.swap(3, 4);
        corrupt(&backwards, "memory runs out of order");
        let mut twice = good.to_vec();
        twice[4].1 = run(0x1000, 0);
        corrupt(&twice, "a page written twice");
        let mut outside = good.to_vec();
        outside[4].1 = run(0x4000_0000, 0);
        corrupt(&outside, "memory outside the guest's");
        let mut unbacked = good.to_vec();
        unbacked[4].1 = run(0xf000_0000, 0);
        corrupt(&unbacked, "memory in the PCI hole");
        let mut short = good.to_vec();
        short.remove(2);
        corrupt(&short, "a device record missing");
    }
}
