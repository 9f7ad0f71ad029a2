//! The stream's header: what the VM is made of and what the guest has
//! seen of the CPU. vmd reads and checks it before it creates anything for
//! a received VM; the VM process builds the machine from it.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};
use proto::vmchannel::VmDescription;
use serde::{Deserialize, Serialize};

use super::cpu_compat;
use super::error::StreamError;
use super::kvm_bytes::KvmBytes;
use crate::devices::persist::{decode, encode};
use crate::memory::{Layout, MIB};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// The sending VM's name, for messages only: the receiving one is
    /// named by `vmctl receive`.
    pub name: String,
    /// What vmd needs to register the VM again.
    pub description: VmDescription,
    /// Bytes of the firmware area below 4 GiB (it sizes the memory map).
    pub bios_area: u64,
    /// Backed guest-physical regions: address and size, which the
    /// receiving side's layout must reproduce.
    pub regions: Vec<(u64, u64)>,
    /// Virtual size of each disk, in description order.
    pub disk_sizes: Vec<u64>,
    /// Size of the CD-ROM's ISO image, when there is one.
    pub cdrom_size: Option<u64>,
    /// vCPU 0's CPUID: the features the guest may be using.
    pub cpuid: Vec<KvmBytes<kvm_cpuid_entry2>>,
    /// The name of each device record, in stream order.
    pub devices: Vec<String>,
}

/// Most vCPUs a stream may describe (KVM's own limit is higher; vmd's is
/// lower).
const MAX_VCPUS: u32 = 255;

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a header and checks that it describes a VM this code can
    /// build. The CPU check against the host is separate
    /// ([`Header::check_host`]).
    pub fn decode(payload: &[u8]) -> Result<Header, StreamError> {
        let header: Header = decode(payload).map_err(|e| StreamError::corrupt(e.0))?;
        header.check()?;
        Ok(header)
    }

    /// The memory map the VM had.
    pub fn layout(&self) -> Layout {
        Layout::with_bios_size(self.description.memory, self.bios_area)
    }

    fn check(&self) -> Result<(), StreamError> {
        let d = &self.description;
        let bad = |what: &str| Err(StreamError::corrupt(format!("header: {what}")));
        if d.memory < MIB || !d.memory.is_multiple_of(MIB) {
            return bad("memory size");
        }
        if d.vcpus == 0 || d.vcpus > MAX_VCPUS {
            return bad("number of vCPUs");
        }
        if self.disk_sizes.len() != d.disks.len() {
            return bad("disk sizes");
        }
        if self.cdrom_size.is_some() != d.cdrom.is_some() {
            return bad("cd-rom size");
        }
        let layout = self.layout();
        let regions: Vec<(u64, u64)> = layout
            .regions
            .iter()
            .map(|r| (r.guest_addr, r.size))
            .collect();
        if regions != self.regions || layout.bios_area_start() + self.bios_area != 1 << 32 {
            return bad("memory map");
        }
        if self.cpuid.is_empty() || self.cpuid.len() > kvm_bindings::KVM_MAX_CPUID_ENTRIES {
            return bad("CPUID");
        }
        if self.devices.is_empty() {
            return bad("no devices");
        }
        Ok(())
    }

    /// Refuses a host whose KVM cannot give the guest every CPU feature it
    /// has seen (docs/send-stream.md, "CPU compatibility").
    pub fn check_host(&self, host: &CpuId) -> Result<(), StreamError> {
        let guest: Vec<kvm_cpuid_entry2> = self.cpuid.iter().map(|e| e.0).collect();
        cpu_compat::check(&guest, host.as_slice()).map_err(StreamError::Incompatible)
    }
}
