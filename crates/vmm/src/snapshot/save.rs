//! Writing a paused VM's stream: every state is taken first, while
//! nothing has been written yet (a device that cannot save fails the send
//! with the descriptor untouched), then the frames go out in their order
//! with guest memory last.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

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
        cdrom_size: machine.cdrom_size,
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

/// After the trailer: ends the stream for its reader and waits for the
/// reader's receipt ([`proto::control::SEND_RECEIVED`]), so the VM leaves
/// this host only once vmctl has the whole stream written out; a vmctl
/// that failed or died gives none, and the VM stays. A descriptor that is
/// no socket (a file: tests, tools) has no reader to answer, and the
/// stream is in place already.
pub fn await_receipt(out: &File) -> Result<(), StreamError> {
    // SAFETY: shutdown(2) on a descriptor `out` owns.
    if unsafe { libc::shutdown(out.as_raw_fd(), libc::SHUT_WR) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSOCK) {
            return Ok(());
        }
        return Err(StreamError::Io(e));
    }
    let mut byte = [0u8; 1];
    loop {
        return match (&*out).read(&mut byte) {
            Ok(1) if byte[0] == proto::control::SEND_RECEIVED => Ok(()),
            Ok(_) => Err(StreamError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "vmctl did not confirm the stream",
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => Err(StreamError::Io(e)),
        };
    }
}
