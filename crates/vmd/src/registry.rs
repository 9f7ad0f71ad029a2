//! The VMs vmd knows (docs/lifecycle.md, "Registry, ids and states"): their parameters, ids, owners and
//! state bits, in registration order, and their processes while they run.
//! What a VM is made of is params.rs's.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use proto::control::{BootDevice, VmEnd, VmRef, state};
use proto::vmchannel::ExitReason;

use crate::client::Client;
use crate::incoming::Incoming;
use crate::params::{CloudInitFiles, Owner, VmParams};
use crate::pty::Pty;
use crate::vmproc::VmProcess;

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
    pub console_history: proto::vmchannel::ConsoleHistory,
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
            console_history: Default::default(),
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

/// The list of VMs and the id allocator. A VM is known by its id, which
/// stays the same while it is registered; its place in the list changes
/// as VMs before it go, so the list itself stays in here.
#[derive(Default)]
pub struct Registry {
    /// In registration order, which `status` keeps.
    vms: Vec<VmRecord>,
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
    fn reset_ids(&mut self) {
        self.ids.clear();
        self.next_id = 1;
    }

    /// Adds `vm`, whose id came from [`Registry::assign_id`], at the end;
    /// returns its id. Names are unique among registered VMs, and so are
    /// ids: one name has one id per registering user.
    pub fn insert(&mut self, vm: VmRecord) -> u32 {
        debug_assert!(
            self.get(vm.id).is_none(),
            "vm id {} registered twice",
            vm.id
        );
        let id = vm.id;
        self.vms.push(vm);
        id
    }

    /// Removes the VM with `id`.
    pub fn remove(&mut self, id: u32) -> Option<VmRecord> {
        let index = self.vms.iter().position(|vm| vm.id == id)?;
        Some(self.vms.remove(index))
    }

    /// Removes every VM and forgets every id (`reset vms`); the VMs are
    /// returned for their processes to be ended.
    pub fn reset(&mut self) -> Vec<VmRecord> {
        self.reset_ids();
        std::mem::take(&mut self.vms)
    }

    pub fn get(&self, id: u32) -> Option<&VmRecord> {
        self.vms.iter().find(|vm| vm.id == id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut VmRecord> {
        self.vms.iter_mut().find(|vm| vm.id == id)
    }

    /// The VM a request names, by id or by name.
    pub fn find(&self, target: &VmRef) -> Option<&VmRecord> {
        self.vms.iter().find(|vm| target.matches(vm.id, &vm.name))
    }

    pub fn find_mut(&mut self, target: &VmRef) -> Option<&mut VmRecord> {
        self.vms
            .iter_mut()
            .find(|vm| target.matches(vm.id, &vm.name))
    }

    /// The id of the VM whose current process is `run`.
    pub fn by_run(&self, run: u64) -> Option<u32> {
        self.vms
            .iter()
            .find(|vm| vm.run.as_ref().is_some_and(|r| r.process.run == run))
            .map(|vm| vm.id)
    }

    /// The VMs in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &VmRecord> {
        self.vms.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut VmRecord> {
        self.vms.iter_mut()
    }

    /// The ids of the VMs, in registration order: to act on each while
    /// some may be removed.
    pub fn ids(&self) -> Vec<u32> {
        self.vms.iter().map(|vm| vm.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::DEFAULT_MEMORY;

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

    fn vm(registry: &mut Registry, name: &str) -> u32 {
        let id = registry.assign_id(name, 0).unwrap();
        let params = VmParams {
            memory: DEFAULT_MEMORY,
            vcpus: 1,
            boot: None,
            cmdline: None,
            initrd: None,
            disks: Vec::new(),
            cdrom: None,
            nics: Vec::new(),
            boot_device: None,
        };
        let owner = Owner { uid: 0, gid: None };
        registry.insert(VmRecord::new(id, name.to_string(), params, owner, true))
    }

    #[test]
    fn a_vm_stays_found_by_its_id_when_others_go() {
        let mut r = Registry::new();
        let a = vm(&mut r, "a");
        let b = vm(&mut r, "b");
        let c = vm(&mut r, "c");
        assert_eq!(r.remove(a).map(|vm| vm.name), Some("a".to_string()));
        assert_eq!(r.get(c).map(|vm| vm.name.as_str()), Some("c"));
        r.get_mut(b).unwrap().flags |= state::DISABLED;
        assert_eq!(
            r.find(&VmRef::Name("b".into())).map(|vm| vm.flags),
            Some(state::DISABLED)
        );
        assert_eq!(r.find(&VmRef::Id(c)).map(|vm| vm.id), Some(c));
        assert!(r.get(a).is_none() && r.remove(a).is_none());
        assert_eq!(r.ids(), vec![b, c], "registration order is kept");
        let names: Vec<String> = r.reset().into_iter().map(|vm| vm.name).collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(r.iter().count(), 0);
        assert_eq!(
            r.assign_id("c", 0),
            Some(1),
            "ids start again after a reset"
        );
    }
}
