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
