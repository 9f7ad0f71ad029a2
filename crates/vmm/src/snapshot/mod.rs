//! `vmctl send` / `vmctl receive`: a running VM's complete state as one
//! versioned, checksummed stream (docs/send-stream.md), written straight to
//! the descriptor vmctl passed and read straight from the one on the
//! receiving side, without a temporary file.
//!
//! * [`format`]: preamble, frames, checksums, trailer.
//! * [`header`]: the VM's description and the guest's CPUID, checked
//!   before anything is created ([`cpu_compat`]: against this host).
//! * [`save`] and [`restore`]: the order of the frames and what goes in
//!   them: vCPUs ([`crate::vcpu::persist`]), the in-kernel devices
//!   ([`in_kernel`]), every device's own record ([`devices`],
//!   [`crate::devices::persist`]), guest memory ([`memory`]).
//! * [`kvm_bytes`]: KVM's structures as their ABI bytes.

pub mod cpu_compat;
pub mod devices;
pub mod error;
pub mod format;
pub mod header;
pub mod in_kernel;
pub mod kvm_bytes;
pub mod memory;
pub mod restore;
pub mod save;

use std::os::fd::{FromRawFd, IntoRawFd};

use kvm_ioctls::{Kvm, VmFd};

pub use devices::SavedDevice;
pub use error::StreamError;
pub use header::Header;

use crate::memory::GuestRam;
use crate::vcpu::SharedVcpu;

/// The parts of a VM a stream is taken from or put into.
pub struct Machine<'a> {
    pub name: &'a str,
    pub kvm: &'a Kvm,
    pub vm_fd: &'a VmFd,
    pub ram: &'a GuestRam,
    pub vcpus: &'a [SharedVcpu],
    /// The CPUID each vCPU was given.
    pub cpuids: &'a [kvm_bindings::CpuId],
    pub devices: &'a [SavedDevice],
    /// Virtual size of each disk, in the description's order.
    pub disk_sizes: &'a [u64],
    /// Size of the CD-ROM's ISO image.
    pub cdrom_size: Option<u64>,
}

/// Reads a stream's preamble and header from `input` and checks them,
/// the CPU against the KVM behind `kvm` (an open `/dev/kvm`) included:
/// what vmd does before it registers a received VM. Returns the bytes
/// read (they go to the VM process with the rest of the stream) and the
/// header.
pub fn read_header(
    input: &mut impl std::io::Read,
    kvm: &std::fs::File,
) -> Result<(Vec<u8>, Header), StreamError> {
    let (raw, payload) = format::read_header_bytes(input)?;
    let header = Header::decode(&payload)?;
    let kvm = kvm
        .try_clone()
        .map_err(|e| StreamError::Restore(format!("/dev/kvm: {e}")))?;
    // SAFETY: a descriptor of /dev/kvm we own, handed to `Kvm`.
    let kvm = unsafe { Kvm::from_raw_fd(kvm.into_raw_fd()) };
    let host = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| StreamError::Restore(format!("KVM_GET_SUPPORTED_CPUID: {e}")))?;
    header.check_host(&host)?;
    Ok((raw, header))
}
