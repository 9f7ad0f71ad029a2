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
    // Devices first: a device comes to rest as it saves, and the pass its
    // I/O thread finishes on the way may complete a request and raise its
    // interrupt (an MSI into a local APIC, a line into the in-kernel
    // chips). Taken after the vCPUs and those chips, that interrupt would
    // stay behind with the sender.
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use kvm_bindings::{CpuId, kvm_cpuid_entry2, kvm_msi, kvm_pit_config};
    use kvm_ioctls::{Kvm, VmFd};

    use super::*;
    use crate::devices::persist::{Persist, PersistError};
    use crate::memory::{GuestRam, Layout, MIB};
    use crate::snapshot::format::{FrameReader, read_header_bytes};
    use crate::snapshot::{Header, SavedDevice, restore};

    const VECTOR: usize = 0x41;

    /// A device whose I/O thread, asked to come to rest for the save,
    /// finishes the pass it is in: the request it completes raises an
    /// MSI for local APIC 0.
    struct CompletesAsItQuiesces {
        vm: Arc<VmFd>,
    }

    impl Persist for CompletesAsItQuiesces {
        fn save(&self) -> Result<Vec<u8>, PersistError> {
            let msi = kvm_msi {
                address_lo: 0xfee0_0000,
                data: VECTOR as u32,
                ..Default::default()
            };
            self.vm
                .signal_msi(msi)
                .map_err(|e| PersistError(format!("KVM_SIGNAL_MSI: {e}")))?;
            Ok(Vec::new())
        }

        fn restore(&mut self, _: &[u8]) -> Result<(), PersistError> {
            Ok(())
        }
    }

    #[test]
    fn an_interrupt_raised_while_a_device_quiesces_travels_with_the_vcpu() {
        testkit::needs!(kvm);
        let kvm = Kvm::new().expect("/dev/kvm");
        let vm = Arc::new(kvm.create_vm().expect("KVM_CREATE_VM"));
        vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
        vm.create_pit2(kvm_pit_config::default())
            .expect("KVM_CREATE_PIT2");
        let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
        // Spurious vector register: software enabled, or the APIC takes
        // no fixed interrupt.
        let mut lapic = vcpu.get_lapic().expect("KVM_GET_LAPIC");
        lapic.regs[0xf0..0xf4].copy_from_slice(&0x1ffu32.to_le_bytes().map(|b| b as _));
        vcpu.set_lapic(&lapic).expect("KVM_SET_LAPIC");
        let ram = GuestRam::new(Layout::new(8 * MIB), "save-test").unwrap();
        let device: Arc<Mutex<dyn Persist + Send>> =
            Arc::new(Mutex::new(CompletesAsItQuiesces { vm: vm.clone() }));
        let machine = Machine {
            name: "t",
            kvm: &kvm,
            vm_fd: &vm,
            ram: &ram,
            vcpus: &[Arc::new(Mutex::new(vcpu))],
            cpuids: &[CpuId::from_entries(&[kvm_cpuid_entry2::default()]).unwrap()],
            devices: &[SavedDevice::port("dev", device)],
            disk_sizes: &[],
            cdrom_size: None,
        };
        let description = VmDescription {
            memory: 8 * MIB,
            vcpus: 1,
            disks: vec![],
            cdrom: None,
            nics: vec![],
        };
        let clock = vm.get_clock().expect("KVM_GET_CLOCK");
        let mut stream = Vec::new();
        write_stream(&machine, &description, clock, &mut stream).expect("write");

        let mut input = stream.as_slice();
        let (raw, payload) = read_header_bytes(&mut input).unwrap();
        let header = Header::decode(&payload).unwrap();
        let (reader, _) = FrameReader::resume(&raw, input).unwrap();
        let into = GuestRam::new(Layout::new(8 * MIB), "save-test-in").unwrap();
        let received = restore::read_stream(reader, &header, &into).unwrap();
        // The interrupt request register of the local APIC as sent.
        let regs = &received.vcpus[0].lapic.0.regs;
        let at = 0x200 + VECTOR / 32 * 0x10 + VECTOR % 32 / 8;
        assert_ne!(
            regs[at] as u8 & 1 << (VECTOR % 8),
            0,
            "the device's last interrupt is in the local APIC the stream carries"
        );
    }
}
