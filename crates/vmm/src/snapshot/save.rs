//! Writing a paused VM's stream: every state is taken first, while
//! nothing has been written yet (a device that cannot save fails the send
//! with the descriptor untouched), then the frames go out in their order
//! with guest memory last.

use std::io::Write;

use kvm_bindings::kvm_clock_data;
use proto::vmchannel::VmDescription;

use super::devices::DeviceRecord;
use super::error::StreamError;
use super::format::{FrameWriter, Tag};
use super::header::Header;
use super::{Machine, in_kernel, memory};
use crate::devices::persist::encode;
use crate::vcpu::persist::{self as vcpu_state, VcpuState};

/// What a send wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub bytes: u64,
    pub pages: u64,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes the stream of `machine`, which must be paused with its devices
/// quiesced; `clock` is kvmclock as of the pause.
pub fn write_stream(
    machine: &Machine<'_>,
    description: &VmDescription,
    clock: kvm_clock_data,
    out: impl Write,
) -> Result<Sent, StreamError> {
    let msrs = vcpu_state::msr_list(machine.kvm).map_err(StreamError::Save)?;
    let xsave_size = vcpu_state::xsave_size(machine.vm_fd);
    let vcpus = machine
        .vcpus
        .iter()
        .zip(machine.cpuids)
        .enumerate()
        .map(|(index, (vcpu, cpuid))| {
            vcpu_state::save(&lock(vcpu), index as u32, cpuid, &msrs, xsave_size)
        })
        .collect::<Result<Vec<VcpuState>, String>>()
        .map_err(StreamError::Save)?;
    let in_kernel = in_kernel::save(machine.vm_fd, clock).map_err(StreamError::Save)?;
    let devices = machine
        .devices
        .iter()
        .map(|d| {
            d.save().map(|state| DeviceRecord {
                name: d.name.clone(),
                state,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StreamError::Save(e.0))?;
    let header = Header {
        name: machine.name.to_string(),
        description: description.clone(),
        bios_area: (1 << 32) - machine.ram.layout.bios_area_start(),
        regions: machine
            .ram
            .layout
            .regions
            .iter()
            .map(|r| (r.guest_addr, r.size))
            .collect(),
        disk_sizes: machine.disk_sizes.to_vec(),
        cpuid: vcpus.first().map(|v| v.cpuid.clone()).unwrap_or_default(),
        devices: devices.iter().map(|d| d.name.clone()).collect(),
    };

    let mut w = FrameWriter::new(out)?;
    w.frame(Tag::Header, &[&header.encode()])?;
    for vcpu in &vcpus {
        w.frame(Tag::Vcpu, &[&encode(vcpu)])?;
    }
    w.frame(Tag::Kvm, &[&encode(&in_kernel)])?;
    for device in &devices {
        w.frame(Tag::Device, &[&encode(device)])?;
    }
    let pages = memory::write(&mut w, machine.ram)?;
    let bytes = w.finish()?;
    Ok(Sent { bytes, pages })
}
