//! The VMs vmd knows (docs/lifecycle.md, "Registry, ids and states"): their parameters, ids, owners and
//! state bits, in registration order.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use proto::control::{BootDevice, DiskSpec, VmEnd, VmRef, state};
use proto::vmchannel::ExitReason;

use crate::control::Client;
use crate::daemon::Incoming;
use crate::pty::Pty;
use crate::vmproc::VmProcess;

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

/// A VM's process while it runs.
pub struct Running {
    pub process: VmProcess,
    /// Guest memory, for CURMEM; arrives with the VM's `Running` message.
    pub memfd: Option<File>,
    /// The user who started it (the "current user").
    pub user: u32,
    /// The client waiting for the start result, until the VM runs.
    pub starter: Option<Arc<Client>>,
    /// Boot device override of this boot, if any.
    pub boot_device: Option<BootDevice>,
    /// The attached console client.
    pub console: Option<Arc<Client>>,
    /// The console client still waits for its replay.
    pub console_pending: bool,
    pub pause_waiters: Vec<Arc<Client>>,
    pub unpause_waiters: Vec<Arc<Client>>,
    /// What the VM process said before exiting.
    pub exit_reason: Option<ExitReason>,
    /// Why it failed to launch, if it did.
    pub launch_failure: Option<proto::ErrorCode>,
    /// The VM process's words for that failure.
    pub launch_failure_reason: Option<String>,
    /// Every message of the run has been read. The process's exit is
    /// acted on only then: the exit can be noticed before the last
    /// messages (a launch failure's reason) are.
    pub channel_closed: bool,
    /// The `vmctl send` client, while a send is under way.
    pub sender: Option<Arc<Client>>,
    /// The VM was sent away: its process wrote the whole stream and
    /// vmctl confirmed it.
    pub sent: bool,
    /// Its taps, removed when this run is dropped.
    pub taps: crate::network::VmTaps,
    /// Per NIC, the addresses of a local interface in this run: a send
    /// passes them on, for the receiver to keep.
    pub local: Vec<Option<proto::vmchannel::LocalAddrs>>,
}

pub struct VmRecord {
    pub id: u32,
    pub name: String,
    pub params: VmParams,
    pub owner: Owner,
    /// Defined in vm.conf: stays listed (stopped) when it ends.
    pub configured: bool,
    /// [`state`] bits other than RUNNING, which follows `run`.
    pub flags: u32,
    pub run: Option<Running>,
    /// Kept across guest reboots.
    pub pty: Option<Pty>,
    /// `vmctl start -b` for an existing VM: used for the next boot only.
    pub next_kernel: Option<OwnedFd>,
    /// The `-b` image of a VM created by `vmctl start`: its boot image,
    /// booted again (with its command line and initrd) whenever the guest
    /// reboots, as a configured `boot` would be.
    pub kernel: Option<OwnedFd>,
    /// `-B` for the next boot only.
    pub next_boot_device: Option<BootDevice>,
    pub last_start: Option<Instant>,
    pub quick_restarts: u32,
    /// Console output kept across reboots for replay, and after the VM
    /// stops for `vmctl console` to show, until it starts again.
    pub console_history: Vec<u8>,
    /// How its last run ended (`status -v`); `None` until one has.
    pub last_end: Option<VmEnd>,
    /// `stop -w` and `wait` clients.
    pub waiters: Vec<Arc<Client>>,
    /// Its `allow instance`: who may make instances of it, and what they
    /// may change. `None`: only root.
    pub allow_instance: Option<conf::model::InstancePermissions>,
    /// A received VM's stream, for its first launch.
    pub incoming: Option<Incoming>,
    /// Per NIC, the addresses a received VM's local interface had where
    /// it came from; it keeps them where this host has them free.
    pub keep_local: Vec<Option<proto::vmchannel::LocalAddrs>>,
    /// An instance whose ISO image a user chose: whoever starts it must
    /// be able to read the image (docs/lifecycle.md, "Launch").
    pub cdrom_chosen_by_user: bool,
    /// Its cloud-init files from vm.conf (or its template's).
    pub cloud_init_files: CloudInitFiles,
    /// What its cloud-init volume holds (docs/cloud-init.md): given with
    /// the request that created it, or read from `cloud_init_files` at
    /// its start. Kept while it reboots, so the guest sees the same
    /// volume; a configured VM's files are read again when it is started
    /// anew.
    pub cloud_init: Option<cidata::Seed>,
}

impl VmRecord {
    pub fn new(id: u32, name: String, params: VmParams, owner: Owner, configured: bool) -> Self {
        VmRecord {
            id,
            name,
            params,
            owner,
            configured,
            flags: 0,
            run: None,
            pty: None,
            next_kernel: None,
            kernel: None,
            next_boot_device: None,
            last_start: None,
            quick_restarts: 0,
            console_history: Vec::new(),
            last_end: None,
            waiters: Vec::new(),
            allow_instance: None,
            incoming: None,
            keep_local: Vec::new(),
            cdrom_chosen_by_user: false,
            cloud_init_files: CloudInitFiles::default(),
            cloud_init: None,
        }
    }

    pub fn running(&self) -> bool {
        self.run.is_some()
    }

    /// An ad-hoc VM that ended abnormally stays listed, stopped, with how
    /// it ended and its last output, until a VM of its name is started
    /// or received, `reload` or `reset vms` (vmctl(8), STATUS); a
    /// requested stop or a power-off removes an ad-hoc VM at once.
    pub fn lingering(&self) -> bool {
        !self.configured && !self.running()
    }

    pub fn state_bits(&self) -> u32 {
        let mut bits = self.flags;
        if self.running() {
            bits |= state::RUNNING;
        } else {
            bits &= !(state::PAUSED | state::SHUTDOWN);
        }
        bits
    }
}

/// The list of VMs and the id allocator.
#[derive(Default)]
pub struct Registry {
    pub vms: Vec<VmRecord>,
    /// Ids are stable per (name, uid at registration) until reset.
    ids: HashMap<(String, u32), u32>,
    next_id: u32,
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            next_id: 1,
            ..Default::default()
        }
    }

    /// The id for `name` registered by `uid`: the same pair gets the same
    /// id again. `None` when the id space is exhausted.
    pub fn assign_id(&mut self, name: &str, uid: u32) -> Option<u32> {
        if let Some(&id) = self.ids.get(&(name.to_string(), uid)) {
            return Some(id);
        }
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1)?;
        self.ids.insert((name.to_string(), uid), id);
        Some(id)
    }

    /// Forgets every id (`reset vms`): numbering restarts at 1.
    pub fn reset_ids(&mut self) {
        self.ids.clear();
        self.next_id = 1;
    }

    pub fn find(&self, target: &VmRef) -> Option<usize> {
        self.vms
            .iter()
            .position(|vm| target.matches(vm.id, &vm.name))
    }

    pub fn by_id(&self, id: u32) -> Option<usize> {
        self.vms.iter().position(|vm| vm.id == id)
    }

    pub fn by_run(&self, run: u64) -> Option<usize> {
        self.vms
            .iter()
            .position(|vm| vm.run.as_ref().is_some_and(|r| r.process.run == run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_name_and_uid() {
        let mut r = Registry::new();
        assert_eq!(r.assign_id("a", 0), Some(1));
        assert_eq!(r.assign_id("b", 0), Some(2));
        assert_eq!(r.assign_id("a", 0), Some(1));
        assert_eq!(r.assign_id("a", 1000), Some(3));
        r.reset_ids();
        assert_eq!(r.assign_id("b", 0), Some(1));
    }
}
