//! What a VM is made of and who owns it, as vm.conf, a start request, an
//! instance's template or a received stream define it; and the limits
//! every VM keeps to. Plain data, below everything that uses it.

use proto::control::{BootDevice, DiskSpec};

/// Default memory of a new VM (docs/lifecycle.md, "Registration").
pub const DEFAULT_MEMORY: u64 = 512 * 1024 * 1024;
/// Most vCPUs per VM.
pub const MAX_VCPUS: u32 = 64;
pub const MAX_DISKS: usize = 4;
pub const MAX_NICS: usize = 4;

/// Who owns a VM (vm.conf `owner`, or whoever created it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: Option<u32>,
}

/// One network interface of a VM and its guest MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicParams {
    pub iface: conf::model::Interface,
    pub mac: [u8; 6],
}

/// What a VM is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmParams {
    pub memory: u64,
    pub vcpus: u32,
    /// Configured boot image (vm.conf `boot`); `None` boots the default
    /// firmware.
    pub boot: Option<String>,
    pub cmdline: Option<String>,
    pub initrd: Option<String>,
    pub disks: Vec<DiskSpec>,
    pub cdrom: Option<String>,
    pub nics: Vec<NicParams>,
    /// Configured `boot device`.
    pub boot_device: Option<BootDevice>,
}

/// vm.conf's `user-data` and `ssh-key` (docs/cloud-init.md): files root
/// chose, read when the VM starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudInitFiles {
    pub user_data: Option<String>,
    pub ssh_key: Option<String>,
}

impl CloudInitFiles {
    pub fn is_empty(&self) -> bool {
        self.user_data.is_none() && self.ssh_key.is_none()
    }
}
