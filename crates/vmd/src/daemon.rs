//! The daemon's core: one thread owns the VM registry and handles every
//! event in order — client requests, messages and exits of VM processes,
//! signals. Nothing here blocks for long: VM processes do the slow work
//! and answer through events.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use conf::Loaded;
use conf::model::{GlobalSettings, Switch};
use proto::ErrorCode;
use proto::control::{Request, ResetMode, Response, StartRequest, Started, VmInfo, VmRef, state};
use proto::error::{Failed, Line};
use proto::names::validate_vm_name;
use proto::vmchannel::{
    EXIT_REBOOT, ExitReason, FromVm, IncomingState, LaunchDisk, LaunchFds, SandboxIdentity, ToVm,
    VmLaunch,
};

use crate::cloud_init;
use crate::config::{self, ConfigSource};
use crate::control::Client;
use crate::events::Event;
use crate::instances;
use crate::kernel_files;
use crate::network::{Network, VmNics};
use crate::open_as::OpenAs;
use crate::permissions::{self, VmAccess};
use crate::pty::Pty;
use crate::registry::{
    CloudInitFiles, DEFAULT_MEMORY, MAX_DISKS, MAX_NICS, MAX_VCPUS, Owner, Registry, Running,
    VmParams, VmRecord,
};
use crate::vmproc::{LaunchDescriptors, SpawnOptions, VmProcess};

mod transfer;

pub use transfer::Incoming;

/// Firmware used when a VM names no boot image (vmd(8), "Firmware").
pub const DEFAULT_BIOS_PATHS: [&str; 3] = [
    "/etc/firmware/vmm-bios",
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/seabios/bios.bin",
];

/// Restarts closer together than this count towards the rate limit.
const QUICK_RESTART: Duration = Duration::from_secs(6);
/// This many quick restarts in a row stop the VM (docs/lifecycle.md, "Launch").
const MAX_QUICK_RESTARTS: u32 = 3;

pub struct Daemon {
    registry: Registry,
    events: Sender<Event>,
    kvm: File,
    spawn: SpawnOptions,
    verbosity: u8,
    next_run: u64,
    socket_path: PathBuf,
    /// Processes of VMs already forgotten (`reset`), still to be reaped.
    orphans: Vec<VmProcess>,
    config: ConfigSource,
    settings: GlobalSettings,
    switches: Vec<Switch>,
    /// Bridges and taps.
    network: Network,
    /// When the next batch of a staggered start is due.
    next_batch: Option<Instant>,
    /// Who VM processes become.
    sandbox: SandboxIdentity,
}

impl Daemon {
    pub fn new(
        events: Sender<Event>,
        kvm: File,
        spawn: SpawnOptions,
        verbosity: u8,
        socket_path: PathBuf,
        config: ConfigSource,
        sandbox: SandboxIdentity,
    ) -> Daemon {
        Daemon {
            registry: Registry::new(),
            events,
            kvm,
            spawn,
            verbosity,
            next_run: 1,
            socket_path,
            orphans: Vec::new(),
            config,
            settings: GlobalSettings::with_online_cpus(conf::model::online_cpus()),
            switches: Vec::new(),
            network: Network::new(),
            next_batch: None,
            sandbox,
        }
    }

    /// Handles events until told to shut down.
    pub fn run(mut self, events: Receiver<Event>) {
        loop {
            let event = match self.next_batch {
                Some(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    match events.recv_timeout(wait) {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Timeout) => {
                            self.next_batch = None;
                            self.start_waiting();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match events.recv() {
                    Ok(event) => event,
                    Err(_) => break,
                },
            };
            match event {
                Event::Request {
                    client,
                    request,
                    fds,
                    permit: _permit,
                } => self.request(&client, request, fds),
                Event::ClientGone(id) => self.client_gone(id),
                Event::Received {
                    client,
                    name,
                    result,
                } => self.received(&client, name, result),
                Event::FromVm { run, message, fds } => self.vm_message(run, message, fds),
                Event::VmChannelClosed { run, malformed } => {
                    tracing::debug!("vm process channel {run} closed");
                    if let Some(index) = self.registry.by_run(run) {
                        let vm = &mut self.registry.vms[index];
                        if let Some(running) = vm.run.as_mut() {
                            running.channel_closed = true;
                            // A VM process that speaks garbage is broken or
                            // taken over by its guest: it cannot be trusted
                            // with its VM any longer.
                            if let Some(why) = malformed {
                                tracing::error!(
                                    "{}: vm {} process sent a malformed message ({why}); killing it",
                                    vm.name,
                                    vm.id
                                );
                                running.process.kill();
                            }
                        }
                    }
                    self.reap();
                }
                Event::ChildExited => self.reap(),
                Event::Reload => {
                    tracing::info!("reload requested with SIGHUP");
                    if let Err(failed) = self.reload() {
                        tracing::warn!("reload failed: {failed}");
                    }
                }
                Event::Shutdown => break,
            }
        }
        self.shutdown();
    }

    // ----- configuration -----

    /// Applies a parsed configuration: global settings (replaced, or for
    /// `load` merged), new switches, and VMs not yet known, in file order.
    /// Enabled VMs then start in staggered batches.
    pub fn apply(&mut self, loaded: Loaded, merge: bool) {
        config::log_warnings(&loaded.warnings);
        let config = loaded.config;
        if merge {
            config.globals.apply_to(&mut self.settings);
        } else {
            self.settings = config.settings();
        }
        if matches!(
            config.globals.local_inet6,
            Some(conf::model::LocalInet6::Random)
        ) {
            tracing::debug!("local inet6 prefix chosen at random");
        }
        if config.globals.agentx.is_some() {
            tracing::warn!("agentx is not supported on this system; ignored");
        }
        self.apply_socket_owner();
        let known = self.switches.len();
        for switch in config.switches {
            if self.switches.iter().any(|s| s.name == switch.name) {
                continue;
            }
            tracing::debug!("switch {} ({}) configured", switch.name, switch.interface);
            self.switches.push(switch);
        }
        self.network.apply_switches(&self.switches[known..]);
        for vm in config.vms {
            if self.registry.vms.iter().any(|known| known.name == vm.name) {
                tracing::debug!("vm {} already exists, skipped", vm.name);
                continue;
            }
            let (params, owner, allow_instance) = match &vm.instance_of {
                None => (config::vm_params(&vm), config::owner(&vm), vm.instances),
                Some(parent) => match self.configured_instance(parent, &vm) {
                    Ok(instance) => (instance.params, instance.owner, instance.allow),
                    Err(reason) => {
                        tracing::warn!("vm \"{}\": {reason}", vm.name);
                        continue;
                    }
                },
            };
            let Some(id) = self.registry.assign_id(&vm.name, 0) else {
                tracing::warn!("too many vms");
                break;
            };
            let mut record = VmRecord::new(id, vm.name.clone(), params, owner, true);
            record.allow_instance = allow_instance;
            record.cloud_init_files = self.configured_cloud_init_files(&vm);
            if !vm.enabled {
                record.flags |= state::DISABLED;
            }
            self.registry.vms.push(record);
        }
        for vm in &mut self.registry.vms {
            if vm.configured && vm.flags & state::DISABLED == 0 && !vm.running() {
                vm.flags |= state::WAITING;
            }
        }
        self.start_waiting();
    }

    fn apply_socket_owner(&self) {
        let owner = &self.settings.socket_owner;
        if let Err(e) = nix::unistd::chown(
            self.socket_path.as_path(),
            Some(owner.uid.into()),
            Some(owner.gid.into()),
        ) {
            tracing::warn!("cannot chown {}: {e}", self.socket_path.display());
        }
    }

    /// Starts up to `parallel` waiting VMs now and schedules the rest
    /// `delay` seconds later (docs/lifecycle.md, "Registration").
    fn start_waiting(&mut self) {
        let parallel = self.settings.staggered_start.parallel.max(1) as usize;
        let waiting: Vec<u32> = self
            .registry
            .vms
            .iter()
            .filter(|vm| vm.flags & state::WAITING != 0 && !vm.running())
            .map(|vm| vm.id)
            .collect();
        for &id in waiting.iter().take(parallel) {
            if let Some(index) = self.registry.by_id(id) {
                self.registry.vms[index].flags &= !state::WAITING;
                let _ = self.launch(index, 0, None);
            }
        }
        if waiting.len() > parallel {
            let delay = Duration::from_secs(u64::from(self.settings.staggered_start.delay_secs));
            self.next_batch = Some(Instant::now() + delay);
        }
    }

    /// `vmctl reload` / SIGHUP: forget what is not running, read the file
    /// again, apply it. The parser's warnings are returned, or its errors
    /// as the failure's cause, for the user who asked.
    fn reload(&mut self) -> Result<Vec<String>, Failed> {
        // Parse first: a rejected file leaves the loaded configuration,
        // stopped VMs included, as it was.
        let loaded = self.config.load(1).map_err(rejected)?;
        let warnings = user_warnings(&loaded);
        let mut index = 0;
        while index < self.registry.vms.len() {
            if self.registry.vms[index].running() {
                index += 1;
            } else {
                self.forget(index);
            }
        }
        self.switches.clear();
        self.apply(loaded, false);
        Ok(warnings)
    }

    /// `vmctl load file`: parse it in addition to what is loaded. As for
    /// [`Daemon::reload`], warnings are returned and errors are the cause;
    /// a file that is not there fails (the daemon's own default file may
    /// be missing, a file named on purpose may not).
    fn load_file(&mut self, path: &str) -> Result<Vec<String>, Failed> {
        if let Err(e) = std::fs::metadata(path) {
            let cause = format!("{path}: {}", proto::error::error_text(&e));
            tracing::warn!("load: {cause}");
            return Err(Failed::because(ErrorCode(0), cause));
        }
        let first_switch_id = self.switches.iter().map(|s| s.id).max().unwrap_or(0) + 1;
        let options = conf::LoadOptions {
            origin: conf::Origin::Explicit,
            ..self.config.options(first_switch_id)
        };
        let loaded = conf::load(path, &options).map_err(rejected)?;
        let warnings = user_warnings(&loaded);
        self.apply(loaded, true);
        Ok(warnings)
    }

    // ----- requests -----

    fn request(&mut self, client: &Arc<Client>, request: Request, fds: Vec<OwnedFd>) {
        if !request.allowed_for_anyone() && client.uid != 0 {
            tracing::info!("denied request {} from uid {}", request.kind(), client.uid);
            client.send(&Response::Ctl(Err(ErrorCode::EPERM.into())));
            client.close();
            return;
        }
        self.clear_lingering(client, &request, !fds.is_empty());
        match request {
            Request::Start(start) => {
                let kernel = fds.into_iter().next();
                if let Err(failed) = self.start(client, start, kernel) {
                    client.send(&Response::Start(Err(failed)));
                }
            }
            Request::Terminate {
                target,
                force,
                wait,
            } => self.terminate(client, &target, force, wait),
            Request::Wait { target } => self.wait(client, &target),
            Request::Info => self.info(client, false),
            Request::InfoVerbose => self.info(client, true),
            Request::Pause { target } => self.pause(client, &target, true),
            Request::Unpause { target } => self.pause(client, &target, false),
            Request::Log { level } => {
                self.verbosity = level;
                crate::logging::set_verbosity(level);
                for vm in &self.registry.vms {
                    if let Some(run) = &vm.run {
                        run.process.send(&ToVm::Verbose(level));
                    }
                }
                client.send(&Response::Ctl(Ok(())));
            }
            Request::Reset { mode } => {
                self.reset(mode);
                client.send(&Response::Ctl(Ok(())));
            }
            Request::Load { path } => {
                let result = self.load_file(&path);
                answer_with_warnings(client, result);
            }
            Request::Reload => {
                let result = self.reload();
                answer_with_warnings(client, result);
            }
            Request::ConsoleAttach { target } => self.console_attach(client, &target),
            Request::ConsoleBreak => self.console_break(client),
            Request::Send { target } => self.send(client, &target, fds),
            Request::Receive { name } => self.receive(client, name, fds),
        }
    }

    /// A start or receive that makes a VM under the name of an ad-hoc VM
    /// lingering after an abnormal end replaces it: the old record goes
    /// first. A plain `start` of it (no options) starts it again as it
    /// was instead.
    fn clear_lingering(&mut self, client: &Arc<Client>, request: &Request, has_kernel: bool) {
        let name = match request {
            Request::Start(start)
                if start.has_creation_options()
                    || start.cdrom.is_some()
                    || start.instance_of.is_some()
                    || has_kernel =>
            {
                match &start.target {
                    Some(VmRef::Name(name)) => name,
                    _ => return,
                }
            }
            Request::Receive { name } => name,
            _ => return,
        };
        if let Some(index) = self.registry.find(&VmRef::Name(name.clone()))
            && self.registry.vms[index].lingering()
            && permissions::may_control(client.uid, &Self::access(&self.registry.vms[index]))
        {
            self.forget(index);
        }
    }

    fn access(vm: &VmRecord) -> VmAccess {
        VmAccess {
            running: vm.running(),
            current_user: vm.run.as_ref().map(|r| r.user),
            owner_uid: vm.owner.uid,
            owner_gid: vm.owner.gid,
        }
    }

    fn start(
        &mut self,
        client: &Arc<Client>,
        request: StartRequest,
        kernel: Option<OwnedFd>,
    ) -> Result<(), Failed> {
        // Refused before anything is registered or opened.
        let seed = cloud_init::from_request(&request)?;
        if let Some(template) = &request.instance_of {
            let index = self.create_instance(client, template, &request, kernel, seed)?;
            return self.launch(index, client.uid, Some(client.clone()));
        }
        let existing = request.target.as_ref().and_then(|t| self.registry.find(t));
        let index = match existing {
            Some(index) => {
                let vm = &mut self.registry.vms[index];
                if !permissions::may_control(client.uid, &Self::access(vm)) {
                    return Err(ErrorCode::EPERM.into());
                }
                if vm.running() || request.has_creation_options() || request.cdrom.is_some() {
                    return Err(ErrorCode::EALREADY.into());
                }
                if kernel.is_some() {
                    vm.next_kernel = kernel;
                }
                if request.boot_device.is_some() {
                    vm.next_boot_device = request.boot_device;
                }
                // Started anew, a VM reads its vm.conf files again.
                if !vm.cloud_init_files.is_empty() {
                    vm.cloud_init = None;
                }
                vm.flags &= !state::WAITING;
                index
            }
            None => {
                let index = self.create(client, &request, kernel)?;
                self.registry.vms[index].cloud_init = seed;
                index
            }
        };
        self.launch(index, client.uid, Some(client.clone()))
    }

    /// An instance defined in vm.conf (`vm "parent" instance "name"`),
    /// resolved as root.
    fn configured_instance(
        &self,
        parent: &str,
        vm: &conf::model::Vm,
    ) -> Result<instances::Instance, String> {
        let index = self
            .registry
            .find(&VmRef::Name(parent.to_string()))
            .ok_or_else(|| format!("invalid template {parent}"))?;
        let template = &self.registry.vms[index];
        let spec = instances::InstanceSpec {
            memory: vm.memory,
            vcpus: vm.vcpus,
            boot: vm.boot.clone(),
            kernel_given: false,
            cmdline: vm.cmdline.clone(),
            initrd: vm.initrd.clone(),
            cdrom: vm.cdrom.clone(),
            disks: vm.disks.clone(),
            interfaces: vm.interfaces.clone(),
            interface_count: vm.interface_count.map(|n| n as usize),
            boot_device: vm.boot_device,
            owner_gid: vm.owner.gid,
            owner_uid: vm.owner.uid,
            has_own_allow: vm.instances.is_some(),
        };
        instances::derive(
            &instances::Template {
                params: &template.params,
                owner: template.owner,
                allow: template.allow_instance.as_ref(),
            },
            &spec,
            0,
            &|_, _, _| Ok(()),
        )
        .map_err(|refusal| refusal.reason)
    }

    /// A configured VM's cloud-init files: its own, or for an instance
    /// that names none, its template's (vm.conf(5), "Instances").
    fn configured_cloud_init_files(&self, vm: &conf::model::Vm) -> CloudInitFiles {
        let own = CloudInitFiles {
            user_data: vm.user_data.clone(),
            ssh_key: vm.ssh_key.clone(),
        };
        match &vm.instance_of {
            Some(parent) if own.is_empty() => self
                .registry
                .find(&VmRef::Name(parent.clone()))
                .map(|index| self.registry.vms[index].cloud_init_files.clone())
                .unwrap_or_default(),
            _ => own,
        }
    }

    /// `vmctl start -t template name`: registers an instance for the
    /// requesting user (vm.conf(5), "Instances").
    fn create_instance(
        &mut self,
        client: &Arc<Client>,
        template: &str,
        request: &StartRequest,
        kernel: Option<OwnedFd>,
        seed: Option<cidata::Seed>,
    ) -> Result<usize, Failed> {
        let Some(parent) = self.registry.find(&VmRef::Name(template.to_string())) else {
            return Err(ErrorCode::PARENT_INVALID.into());
        };
        let name = match &request.target {
            Some(VmRef::Name(name)) => name.clone(),
            _ => return Err(ErrorCode::EINVAL.into()),
        };
        if self.registry.find(&VmRef::Name(name.clone())).is_some() {
            return Err(ErrorCode::EALREADY.into());
        }
        if validate_vm_name(&name).is_err() {
            return Err(ErrorCode::EINVAL.into());
        }
        let spec = instances::InstanceSpec {
            memory: request.memory,
            vcpus: request.vcpus,
            boot: None,
            kernel_given: kernel.is_some(),
            cmdline: request.cmdline.clone(),
            initrd: request.initrd.clone(),
            cdrom: request.cdrom.clone(),
            disks: request.disks.clone(),
            interfaces: request
                .nics
                .iter()
                .map(conf::model::Interface::from_nic_kind)
                .collect(),
            interface_count: (!request.nics.is_empty()).then_some(request.nics.len()),
            boot_device: None,
            owner_gid: None,
            owner_uid: None,
            has_own_allow: false,
        };
        let parent = &self.registry.vms[parent];
        // The user's own cloud-init data replace the template's: they
        // reach only the guest, so any user who may make the instance
        // may give them (vm.conf(5), "Instances").
        let (cloud_init_files, cloud_init) = match seed {
            Some(seed) => (CloudInitFiles::default(), Some(seed)),
            None => (parent.cloud_init_files.clone(), parent.cloud_init.clone()),
        };
        let uid = client.uid;
        let instance = instances::derive(
            &instances::Template {
                params: &parent.params,
                owner: parent.owner,
                allow: parent.allow_instance.as_ref(),
            },
            &spec,
            uid,
            // Tried as the user would open it, for a clear refusal now;
            // the launch opens again as the user and keeps what it opens.
            &|path, write, expect| {
                OpenAs::chooser(uid)
                    .open(Path::new(path), write, expect)
                    .map(drop)
            },
        )
        .map_err(|refusal| {
            tracing::info!("instance {name} of {template}: {}", refusal.reason);
            Failed::because(refusal.code, &refusal.reason)
        })?;
        let index = self.register_adhoc(
            name,
            uid,
            (instance.params, instance.owner, instance.allow),
            kernel,
            request.boot_device,
        )?;
        let vm = &mut self.registry.vms[index];
        vm.cdrom_chosen_by_user = request.cdrom.is_some() && uid != 0;
        vm.cloud_init_files = cloud_init_files;
        vm.cloud_init = cloud_init;
        Ok(index)
    }

    /// Adds a VM created by a start request (not from vm.conf) with its
    /// one-shot boot choices; returns its index.
    fn register_adhoc(
        &mut self,
        name: String,
        uid: u32,
        (params, owner, allow_instance): (
            VmParams,
            Owner,
            Option<conf::model::InstancePermissions>,
        ),
        kernel: Option<OwnedFd>,
        boot_device: Option<proto::control::BootDevice>,
    ) -> Result<usize, ErrorCode> {
        let Some(id) = self.registry.assign_id(&name, uid) else {
            tracing::warn!("too many vms");
            return Err(ErrorCode::ENOMEM);
        };
        let mut vm = VmRecord::new(id, name, params, owner, false);
        vm.allow_instance = allow_instance;
        vm.kernel = kernel;
        vm.next_boot_device = boot_device;
        self.registry.vms.push(vm);
        Ok(self.registry.vms.len() - 1)
    }

    /// Registers a new ad-hoc VM from a start request (docs/lifecycle.md, "Registration").
    fn create(
        &mut self,
        client: &Arc<Client>,
        request: &StartRequest,
        kernel: Option<OwnedFd>,
    ) -> Result<usize, Failed> {
        let has_devices = kernel.is_some() || !request.disks.is_empty() || request.cdrom.is_some();
        if !request.has_creation_options() && kernel.is_none() {
            // OpenBSD's "invalid configuration, no devices": vmctl's
            // message is about disks, the cause says what happened.
            return Err(Failed::because(ErrorCode::DISK_MISSING, "vm not found"));
        }
        if client.uid != 0 {
            return Err(ErrorCode::EPERM.into());
        }
        let name = match &request.target {
            Some(VmRef::Name(name)) => name.clone(),
            _ => return Err(ErrorCode::EINVAL.into()),
        };
        if validate_vm_name(&name).is_err() {
            tracing::info!("invalid VM name: {name}");
            return Err(ErrorCode::EINVAL.into());
        }
        let vcpus = request.vcpus.unwrap_or(1);
        if vcpus == 0
            || vcpus > MAX_VCPUS
            || request.disks.len() > MAX_DISKS
            || request.nics.len() > MAX_NICS
        {
            return Err(ErrorCode::EINVAL.into());
        }
        if !has_devices {
            return Err(Failed::because(
                ErrorCode::DISK_MISSING,
                "no boot image, disk or cd-rom",
            ));
        }
        let params = VmParams {
            memory: request.memory.unwrap_or(DEFAULT_MEMORY),
            vcpus,
            boot: None,
            cmdline: request.cmdline.clone(),
            initrd: request.initrd.clone(),
            disks: request.disks.clone(),
            cdrom: request.cdrom.clone(),
            nics: config::nics(
                &request
                    .nics
                    .iter()
                    .map(conf::model::Interface::from_nic_kind)
                    .collect::<Vec<_>>(),
            ),
            boot_device: None,
        };
        let owner = Owner {
            uid: client.uid,
            gid: None,
        };
        Ok(self.register_adhoc(
            name,
            client.uid,
            (params, owner, None),
            kernel,
            request.boot_device,
        )?)
    }

    /// Opens what the VM needs and spawns its process (docs/lifecycle.md, "Launch"). On
    /// failure an ad-hoc VM is forgotten again.
    fn launch(
        &mut self,
        index: usize,
        user: u32,
        starter: Option<Arc<Client>>,
    ) -> Result<(), Failed> {
        let result = self.try_launch(index, user, starter);
        if let Err(code) = &result {
            let vm = &mut self.registry.vms[index];
            tracing::warn!("failed to start vm {}: {code}", vm.name);
            vm.last_end = Some(proto::control::VmEnd::StartFailed(code.to_string()));
            if !vm.configured && !vm.running() {
                self.forget(index);
            }
        }
        result
    }

    fn try_launch(
        &mut self,
        index: usize,
        user: u32,
        starter: Option<Arc<Client>>,
    ) -> Result<(), Failed> {
        let run_id = self.next_run;
        let kvm = self.kvm.try_clone().map_err(|e| ErrorCode::from_io(&e))?;
        let disk_users = self.disk_users();
        let vm = &mut self.registry.vms[index];
        if vm.running() {
            return Err(ErrorCode::EALREADY.into());
        }
        let now = Instant::now();
        if let Some(last) = vm.last_start {
            if now.duration_since(last) < QUICK_RESTART {
                vm.quick_restarts += 1;
            } else {
                vm.quick_restarts = 0;
            }
        }
        if vm.quick_restarts >= MAX_QUICK_RESTARTS {
            vm.quick_restarts = 0;
            tracing::warn!("vm {} restarted too quickly", vm.id);
            return Err(Failed::because(ErrorCode::EPERM, "restarted too quickly"));
        }

        let boot_image_chosen = vm.next_kernel.is_some() || vm.kernel.is_some();
        let incoming = vm.incoming.take();
        let boot_image = match vm.next_kernel.take() {
            Some(fd) => Some(fd),
            // A received VM carries on where it was: it boots nothing.
            None if incoming.is_some() => None,
            None => match &vm.kernel {
                Some(kernel) => Some(rewound(kernel).map_err(|e| {
                    tracing::warn!("{}: cannot boot its kernel again: {e}", vm.name);
                    Failed::because(
                        ErrorCode::from_io(&e),
                        format!("cannot boot its kernel again: {e}"),
                    )
                })?),
                None => Some(open_boot_image(vm.params.boot.as_deref())?),
            },
        };
        let boot_device = vm.next_boot_device.take().or(vm.params.boot_device);
        // A VM from vm.conf boots files root chose; an ad-hoc VM's files
        // were chosen by the user who created it.
        let chosen_by = if vm.configured {
            OpenAs::Root
        } else {
            OpenAs::chooser(vm.owner.uid)
        };
        let initrd = vm
            .params
            .initrd
            .as_deref()
            .map(|path| kernel_files::open_initrd(path, chosen_by))
            .transpose()?;
        let kernel_given = vm.params.boot.is_some() || boot_image_chosen;
        let firmware = kernel_given
            .then(kernel_files::open_default_firmware)
            .flatten();

        if vm.pty.is_none() {
            vm.pty = Some(Pty::open().map_err(|e| ErrorCode::from_io(&e))?);
        }
        let pty = vm.pty.as_ref().expect("pty just ensured");
        if let Err(e) = pty.give_to(user, vm.owner.gid) {
            tracing::warn!("{}: cannot give {} to uid {user}: {e}", vm.name, pty.path);
        }
        let mut fds = LaunchDescriptors::new();
        let cdrom = match &vm.params.cdrom {
            Some(path) => {
                let opener = if vm.cdrom_chosen_by_user {
                    OpenAs::chooser(user)
                } else {
                    OpenAs::Root
                };
                Some(fds.push(open_cdrom(path, opener)?))
            }
            None => None,
        };
        // Disks are never inherited: an ad-hoc VM's were chosen by its
        // creator.
        let mut disks = open_disks(&vm.params.disks, chosen_by, &mut fds, &disk_users)?;
        // The cloud-init volume comes after the user's disks. vm.conf's
        // files are read at a start, and what was read is kept for the
        // reboots that follow (docs/cloud-init.md).
        if vm.cloud_init.is_none() && !vm.cloud_init_files.is_empty() {
            vm.cloud_init = Some(cloud_init::read_files(&vm.cloud_init_files)?);
        }
        if let Some(seed) = &vm.cloud_init {
            disks.push(cloud_init::launch_disk(
                &vm.name,
                seed,
                &vm.params.nics,
                &mut fds,
            )?);
        }
        let launch_fds = LaunchFds {
            kvm: fds.push(kvm.into()),
            pty_master: fds.push(pty.master.try_clone().map_err(|e| ErrorCode::from_io(&e))?),
            pty_slave: fds.push(pty.open_slave().map_err(|e| ErrorCode::from_io(&e))?.into()),
            boot_image: boot_image.map(|fd| fds.push(fd)),
            initrd: initrd.map(|fd| fds.push(fd)),
            firmware: firmware.map(|fd| fds.push(fd)),
        };
        let mut warnings = Vec::new();
        let created = self.network.create_nics(
            &VmNics {
                id: vm.id,
                name: &vm.name,
                nics: &vm.params.nics,
                net_boot: boot_device == Some(proto::control::BootDevice::Net),
                keep: &vm.keep_local,
            },
            &self.switches,
            &self.settings,
            &mut fds,
            &mut warnings,
        );
        // What the VM goes without is the starter's to know, whether or
        // not it starts.
        if let Some(starter) = &starter {
            for warning in &warnings {
                starter.send(&Response::Warning(Line::new(warning)));
            }
        }
        let (nics, taps) = created?;
        let local = nics.iter().map(|nic| nic.local).collect();
        let launch = VmLaunch {
            id: vm.id,
            name: vm.name.clone(),
            memory: vm.params.memory,
            vcpus: vm.params.vcpus,
            fds: launch_fds,
            cmdline: vm.params.cmdline.clone(),
            disks,
            cdrom,
            nics,
            boot_device,
            verbose: self.verbosity,
            console_history: std::mem::take(&mut vm.console_history),
            incoming: incoming.map(|i| IncomingState {
                stream: fds.push(i.stream),
                header: i.header_bytes,
            }),
            sandbox: Some(self.sandbox.clone()),
        };
        let process =
            VmProcess::spawn(&launch, &fds.raw(), run_id, self.spawn, self.events.clone())
                .map_err(|e| {
                    tracing::warn!("{}: cannot spawn vm process: {e}", vm.name);
                    Failed::because(
                        ErrorCode::from_io(&e),
                        format!("cannot spawn vm process: {e}"),
                    )
                })?;
        self.next_run += 1;
        vm.last_start = Some(now);
        vm.flags &= !(state::SHUTDOWN | state::PAUSED | state::WAITING);
        vm.run = Some(Running {
            process,
            memfd: None,
            user,
            starter,
            boot_device,
            console: None,
            console_pending: false,
            pause_waiters: Vec::new(),
            unpause_waiters: Vec::new(),
            exit_reason: None,
            launch_failure: None,
            launch_failure_reason: None,
            channel_closed: false,
            sender: None,
            sent: false,
            taps,
            local,
        });
        Ok(())
    }

    /// The disk images of running VMs and the VM using each, to name the
    /// VM that holds a disk another start finds locked.
    fn disk_users(&self) -> Vec<(String, String)> {
        self.registry
            .vms
            .iter()
            .filter(|vm| vm.running())
            .flat_map(|vm| {
                let disks = vm.params.disks.iter().map(|d| d.path.clone());
                disks.map(|path| (path, vm.name.clone()))
            })
            .collect()
    }

    fn terminate(&mut self, client: &Arc<Client>, target: &VmRef, force: bool, wait: bool) {
        let Some(index) = self.registry.find(target) else {
            client.send(&Response::Terminate {
                id: 0,
                result: Err(ErrorCode::ENOENT),
            });
            return;
        };
        let vm = &mut self.registry.vms[index];
        let id = vm.id;
        let refuse = |code| {
            client.send(&Response::Terminate {
                id,
                result: Err(code),
            });
        };
        if vm.state_bits() & state::SHUTDOWN != 0 && !force {
            return refuse(ErrorCode::EALREADY);
        }
        if !vm.running() {
            return refuse(ErrorCode::EINVAL);
        }
        if !permissions::may_control(client.uid, &Self::access(vm)) {
            return refuse(ErrorCode::EPERM);
        }
        if wait {
            vm.waiters.push(client.clone());
        } else {
            client.send(&Response::Terminate { id, result: Ok(()) });
        }
        vm.flags |= state::SHUTDOWN;
        let run = vm.run.as_mut().expect("running checked above");
        if force {
            tracing::info!("{}: forced to terminate vm {id}", vm.name);
            run.process.kill();
        } else {
            tracing::info!("{}: requested to shutdown vm {id}", vm.name);
            if !run.process.send(&ToVm::Shutdown { graceful: true }) {
                run.process.kill();
            }
        }
    }

    fn wait(&mut self, client: &Arc<Client>, target: &VmRef) {
        let Some(index) = self.registry.find(target) else {
            client.send(&Response::Terminate {
                id: 0,
                result: Err(ErrorCode::ENOENT),
            });
            return;
        };
        let vm = &mut self.registry.vms[index];
        let refusal = if !vm.running() {
            Some(ErrorCode::EINVAL)
        } else if !permissions::may_control(client.uid, &Self::access(vm)) {
            Some(ErrorCode::EPERM)
        } else {
            None
        };
        match refusal {
            Some(code) => {
                client.send(&Response::Terminate {
                    id: vm.id,
                    result: Err(code),
                });
            }
            None => vm.waiters.push(client.clone()),
        }
    }

    fn info(&self, client: &Arc<Client>, verbose: bool) {
        let vms = &self.registry.vms;
        let rows = vms
            .iter()
            .filter(|vm| vm.running())
            .chain(vms.iter().filter(|vm| !vm.running()));
        for vm in rows {
            let run = vm.run.as_ref();
            let info = VmInfo {
                id: vm.id,
                name: vm.name.clone(),
                max_mem: vm.params.memory,
                cur_mem: run
                    .and_then(|r| r.memfd.as_ref())
                    .map(vmm::memory::resident_bytes_of)
                    .unwrap_or(0),
                vcpus: vm.params.vcpus,
                pid: run.map(|r| r.process.pid),
                tty: run.and(vm.pty.as_ref()).map(|p| p.path.clone()),
                owner_uid: run.map_or(vm.owner.uid, |r| r.user),
                owner_gid: vm.owner.gid,
                state: vm.state_bits(),
            };
            if !client.send(&Response::InfoData(info)) {
                return;
            }
            if verbose && !client.send(&Response::InfoDetails(Box::new(details(vm)))) {
                return;
            }
        }
        client.send(&Response::InfoEnd);
    }

    fn pause(&mut self, client: &Arc<Client>, target: &VmRef, pause: bool) {
        let reply = |id: u32, result: Result<(), ErrorCode>| {
            client.send(&if pause {
                Response::Pause { id, result }
            } else {
                Response::Unpause { id, result }
            });
        };
        let Some(index) = self.registry.find(target) else {
            return reply(0, Err(ErrorCode::ENOENT));
        };
        let vm = &mut self.registry.vms[index];
        let id = vm.id;
        if !permissions::may_control(client.uid, &Self::access(vm)) {
            return reply(id, Err(ErrorCode::EPERM));
        }
        let paused = vm.flags & state::PAUSED != 0;
        let Some(run) = vm.run.as_mut() else {
            return reply(id, Err(ErrorCode::EINVAL));
        };
        if paused == pause {
            // Already in the asked-for state: succeed without a word.
            return reply(id, Ok(()));
        }
        let message = if pause { ToVm::Pause } else { ToVm::Unpause };
        if !run.process.send(&message) {
            return reply(id, Err(ErrorCode::EIO));
        }
        if pause {
            run.pause_waiters.push(client.clone());
        } else {
            run.unpause_waiters.push(client.clone());
        }
    }

    fn console_attach(&mut self, client: &Arc<Client>, target: &VmRef) {
        let Some(index) = self.registry.find(target) else {
            client.send(&Response::ConsoleRefused(ErrorCode::ENOENT));
            return;
        };
        let vm = &mut self.registry.vms[index];
        let access = Self::access(vm);
        let Some(run) = vm.run.as_mut() else {
            // A stopped VM's console shows the last run's output and how
            // it ended, to those who could read its tty while it ran.
            let allowed = client.uid == 0
                || client.uid == vm.owner.uid
                || vm
                    .owner
                    .gid
                    .is_some_and(|gid| permissions::user_in_group(client.uid, gid));
            let reply = if vm.last_end.is_none() && vm.console_history.is_empty() {
                Response::ConsoleRefused(ErrorCode::ENOENT)
            } else if !allowed {
                Response::ConsoleRefused(ErrorCode::EPERM)
            } else {
                Response::ConsoleHistory {
                    output: vm.console_history.clone(),
                    end: vm.last_end.clone(),
                }
            };
            client.send(&reply);
            return;
        };
        // The same users the pty's mode lets in: its user and group.
        let allowed = client.uid == 0
            || access.current_user == Some(client.uid)
            || access
                .owner_gid
                .is_some_and(|gid| permissions::user_in_group(client.uid, gid));
        if !allowed {
            client.send(&Response::ConsoleRefused(ErrorCode::EPERM));
            return;
        }
        if run.console.is_some() {
            client.send(&Response::ConsoleRefused(ErrorCode::EBUSY));
            return;
        }
        if !run.process.send(&ToVm::ConsoleAttach { client: client.id }) {
            client.send(&Response::ConsoleRefused(ErrorCode::EIO));
            return;
        }
        run.console = Some(client.clone());
        run.console_pending = true;
    }

    fn console_break(&mut self, client: &Arc<Client>) {
        for vm in &self.registry.vms {
            if let Some(run) = &vm.run
                && run.console.as_ref().is_some_and(|c| c.id == client.id)
            {
                run.process.send(&ToVm::ConsoleBreak);
            }
        }
    }

    fn reset(&mut self, mode: ResetMode) {
        if matches!(mode, ResetMode::Switches | ResetMode::All) {
            self.switches.clear();
        }
        if mode == ResetMode::All {
            self.settings.local_prefix =
                GlobalSettings::with_online_cpus(conf::model::online_cpus()).local_prefix;
        }
        if matches!(mode, ResetMode::Vms | ResetMode::All) {
            self.next_batch = None;
            for mut vm in std::mem::take(&mut self.registry.vms) {
                if let Some(mut run) = vm.run.take() {
                    tracing::info!("{}: terminating vm {} (reset)", vm.name, vm.id);
                    run.process.kill();
                    Self::notify_end(&vm, &mut run);
                    self.orphans.push(run.process);
                }
                if let Some(pty) = vm.pty.take() {
                    pty.release();
                }
            }
            self.registry.reset_ids();
        }
    }

    fn client_gone(&mut self, id: u64) {
        for vm in &mut self.registry.vms {
            vm.waiters.retain(|c| c.id != id);
            if let Some(run) = &mut vm.run {
                if run.console.as_ref().is_some_and(|c| c.id == id) {
                    run.console = None;
                }
                run.pause_waiters.retain(|c| c.id != id);
                run.unpause_waiters.retain(|c| c.id != id);
                if run.starter.as_ref().is_some_and(|c| c.id == id) {
                    run.starter = None;
                }
                if run.sender.as_ref().is_some_and(|c| c.id == id) {
                    run.sender = None;
                }
            }
        }
    }

    // ----- VM processes -----

    fn vm_message(&mut self, run_id: u64, message: FromVm, fds: Vec<OwnedFd>) {
        let Some(index) = self.registry.by_run(run_id) else {
            return;
        };
        if let FromVm::Sent(result) = message {
            return self.sent(index, result);
        }
        let vm = &mut self.registry.vms[index];
        let Some(run) = vm.run.as_mut() else {
            return;
        };
        match message {
            FromVm::Running => {
                run.memfd = fds.into_iter().next().map(File::from);
                let tty = vm.pty.as_ref().map(|p| p.path.clone()).unwrap_or_default();
                tracing::info!("started {} (vm {}) successfully, tty {tty}", vm.name, vm.id);
                if let Some(starter) = run.starter.take() {
                    starter.send(&Response::Start(Ok(Started {
                        id: vm.id,
                        pid: run.process.pid,
                        tty,
                    })));
                }
            }
            FromVm::LaunchFailed { code, reason } => {
                // The requester learns of it once the process has exited
                // and the VM is cleaned up, so that what it asks next sees
                // the outcome.
                tracing::warn!("{}: failed to start vm: {reason}", vm.name);
                run.launch_failure = Some(code);
                run.launch_failure_reason = Some(reason);
            }
            FromVm::Paused(result) => {
                if result.is_ok() {
                    vm.flags |= state::PAUSED;
                    tracing::info!("{}: paused vm {} successfully", vm.name, vm.id);
                }
                for client in run.pause_waiters.drain(..) {
                    client.send(&Response::Pause { id: vm.id, result });
                }
            }
            FromVm::Unpaused(result) => {
                if result.is_ok() {
                    vm.flags &= !state::PAUSED;
                    tracing::info!("{}: unpaused vm {} successfully.", vm.name, vm.id);
                }
                for client in run.unpause_waiters.drain(..) {
                    client.send(&Response::Unpause { id: vm.id, result });
                }
            }
            FromVm::ConsoleReplay { client, bytes } => {
                if let Some(console) = run.console.as_ref().filter(|c| c.id == client) {
                    run.console_pending = false;
                    let tty = vm.pty.as_ref().map(|p| p.path.clone()).unwrap_or_default();
                    console.send(&Response::ConsoleAttached { tty, replay: bytes });
                }
            }
            FromVm::GuestShuttingDown => vm.flags |= state::SHUTDOWN,
            FromVm::Exiting {
                reason,
                console_tail,
            } => {
                run.exit_reason = Some(reason);
                vm.console_history = console_tail;
            }
            FromVm::Sent(_) => {}
        }
    }

    /// Collects every VM process that has exited.
    fn reap(&mut self) {
        self.orphans.retain_mut(|p| p.try_wait().is_none());
        let mut index = 0;
        while index < self.registry.vms.len() {
            let exited = self.registry.vms[index]
                .run
                .as_mut()
                .filter(|r| r.channel_closed)
                .and_then(|r| r.process.try_wait());
            match exited {
                Some(status) => {
                    // ended() may remove the VM from the list.
                    if self.ended(index, status) {
                        index += 1;
                    }
                }
                None => index += 1,
            }
        }
    }

    /// Tells everyone waiting on this run that it is over.
    fn notify_end(vm: &VmRecord, run: &mut Running) {
        if let Some(starter) = run.starter.take() {
            // The VM process's words for its failure are the cause.
            let failed = match (run.launch_failure, &run.launch_failure_reason) {
                (Some(code), Some(reason)) => Failed::because(code, reason),
                (code, _) => code.unwrap_or(ErrorCode::EIO).into(),
            };
            starter.send(&Response::Start(Err(failed)));
        }
        if let Some(sender) = run.sender.take() {
            sender.send(&Response::SendDone(Err(ErrorCode::EIO)));
        }
        for client in run.pause_waiters.drain(..) {
            client.send(&Response::Pause {
                id: vm.id,
                result: Err(ErrorCode::EINVAL),
            });
        }
        for client in run.unpause_waiters.drain(..) {
            client.send(&Response::Unpause {
                id: vm.id,
                result: Err(ErrorCode::EINVAL),
            });
        }
        for client in &vm.waiters {
            client.send(&Response::Terminated { id: vm.id });
        }
    }

    /// A VM process exited. Returns false if the VM was removed.
    fn ended(&mut self, index: usize, status: ExitStatus) -> bool {
        let vm = &mut self.registry.vms[index];
        let run = vm.run.take().expect("ended() on a running VM");
        let requested_stop = vm.flags & state::SHUTDOWN != 0;
        let rebooted = status.code() == Some(EXIT_REBOOT) && !requested_stop;
        match (status.code(), status.signal()) {
            (_, Some(libc::SIGSYS)) => tracing::error!(
                "{}: vm {} process killed by signal {} (a system call its sandbox forbids)",
                vm.name,
                vm.id,
                libc::SIGSYS
            ),
            (_, Some(signal)) if !requested_stop => {
                tracing::warn!(
                    "{}: vm {} process killed by signal {signal}",
                    vm.name,
                    vm.id
                )
            }
            (Some(code), _) if code != 0 && code != EXIT_REBOOT => {
                let why = match &run.exit_reason {
                    Some(ExitReason::Error(text)) => text.clone(),
                    _ => format!("exit status {code}"),
                };
                tracing::warn!("{}: vm {} failed: {why}", vm.name, vm.id);
            }
            _ => {}
        }
        let end = (!rebooted).then(|| end_of(&run, status, requested_stop));
        self.wind_up(index, run, end)
    }

    /// A VM sent away: its process wrote the whole stream, vmctl has it,
    /// and the process let go of the disk images. The VM ends here and
    /// now, as if its process had exited, so that `vmctl send` returns
    /// without waiting for the process to tear down its guest memory and
    /// the receiver (this host's, even under the same name) finds the
    /// name and the disks free. The process is reaped as an orphan.
    pub(super) fn sent_away(&mut self, index: usize) {
        let vm = &mut self.registry.vms[index];
        let Some(mut run) = vm.run.take() else { return };
        run.sent = true;
        self.wind_up(index, run, Some(proto::control::VmEnd::Sent));
    }

    /// Everything that follows the end of a run: waiters told, taps
    /// removed, the console closed, how it ended recorded, the VM
    /// forgotten unless vm.conf defines it or it lingers (an ad-hoc VM
    /// that ended abnormally), or started again after a guest reset
    /// (`end` is `None`). Returns false if the VM was removed.
    fn wind_up(
        &mut self,
        index: usize,
        mut run: Running,
        end: Option<proto::control::VmEnd>,
    ) -> bool {
        use proto::control::VmEnd;
        let rebooted = end.is_none();
        let mut end = end;
        let vm = &mut self.registry.vms[index];
        // A start that failed was reported to its vmctl: nothing lingers.
        let start_reported = run.starter.is_some() || run.launch_failure.is_some();
        let sender = run.sender.take().map(|client| (client, run.sent));
        Self::notify_end(vm, &mut run);
        vm.waiters.clear();
        run.taps.remove();
        let console = run.console.take();
        let console_pending = run.console_pending;

        // The rest of the run (guest memory, descriptors) goes at the end
        // of this statement, before a reboot's new run is made.
        let Running {
            process,
            user,
            boot_device,
            ..
        } = { run };
        // A process still running (a VM sent away ends before its process
        // has) is reaped with the orphans; one already reaped goes now,
        // with its channel: the orphans are only looked at again when
        // another child exits.
        let mut process = process;
        if process.try_wait().is_none() {
            self.orphans.push(process);
        }
        if rebooted && boot_device.is_none() {
            let vm = &self.registry.vms[index];
            tracing::info!("{}: vm {} is rebooting", vm.name, vm.id);
            let too_quick = restart_too_quick(vm, Instant::now());
            match self.try_launch(index, user, None) {
                Ok(()) => {
                    // The same pty carries on; the console client stays. One
                    // still waiting for its replay gets it from the new run,
                    // which carries the old run's output.
                    if let Some(run) = self.registry.vms[index].run.as_mut() {
                        if let Some(client) = &console
                            && console_pending
                        {
                            run.process.send(&ToVm::ConsoleAttach { client: client.id });
                        }
                        run.console = console;
                        run.console_pending = console_pending;
                    }
                    return true;
                }
                Err(code) => {
                    let vm = &self.registry.vms[index];
                    tracing::warn!("failed to restart vm {}: {code}", vm.name);
                    end = Some(VmEnd::StartFailed(if too_quick {
                        format!(
                            "the guest reset itself {} times in a row, each within {} s of its start",
                            MAX_QUICK_RESTARTS,
                            QUICK_RESTART.as_secs()
                        )
                    } else {
                        format!("after a guest reset: {code}")
                    }));
                }
            }
        }
        let end = end.unwrap_or(VmEnd::Reset);
        if let Some(console) = console {
            console.send(&if end.abnormal() {
                Response::ConsoleEnded {
                    name: self.registry.vms[index].name.clone(),
                    end: end.clone(),
                }
            } else {
                Response::ConsoleClosed
            });
        }

        let vm = &mut self.registry.vms[index];
        if end.abnormal() {
            tracing::info!("{}: vm {} ended: {end}", vm.name, vm.id);
        }
        tracing::info!("{}: vm {} stopped", vm.name, vm.id);
        let linger = end.abnormal() && !start_reported;
        vm.last_end = Some(end);
        vm.flags &= !(state::SHUTDOWN | state::PAUSED);
        if let Some(pty) = vm.pty.take() {
            pty.release();
        }
        let kept = vm.configured || linger;
        if !kept {
            self.forget(index);
        }
        if let Some((client, sent)) = sender {
            let result = if sent { Ok(()) } else { Err(ErrorCode::EIO) };
            client.send(&Response::SendDone(result));
        }
        kept
    }

    fn forget(&mut self, index: usize) {
        let vm = self.registry.vms.remove(index);
        if let Some(pty) = vm.pty {
            pty.release();
        }
    }

    /// SIGTERM: every VM ends at once, then the daemon.
    fn shutdown(&mut self) {
        for vm in &mut self.registry.vms {
            if let Some(mut run) = vm.run.take() {
                run.process.kill();
                let _ = run.process.wait();
                Self::notify_end(vm, &mut run);
            }
            if let Some(pty) = vm.pty.take() {
                pty.release();
            }
        }
        for orphan in &mut self.orphans {
            let _ = orphan.wait();
        }
        let _ = std::fs::remove_file(&self.socket_path);
        tracing::info!("terminating");
    }
}

/// How a run whose process exited with `status` ended, other than by a
/// guest reset that restarts it.
fn end_of(run: &Running, status: ExitStatus, requested_stop: bool) -> proto::control::VmEnd {
    use proto::control::VmEnd;
    if let Some(code) = run.launch_failure {
        return VmEnd::StartFailed(
            run.launch_failure_reason
                .clone()
                .unwrap_or_else(|| code.to_string()),
        );
    }
    if requested_stop && !matches!(run.exit_reason, Some(ExitReason::Error(_))) {
        return VmEnd::Stopped;
    }
    match (status.code(), status.signal(), &run.exit_reason) {
        (_, Some(signal), _) => VmEnd::Signal(signal),
        (_, _, Some(ExitReason::Error(cause))) => VmEnd::Error(cause.clone()),
        (Some(0), _, _) => VmEnd::PowerOff,
        // A reset asked for while a stop was under way.
        (Some(EXIT_REBOOT), _, _) => VmEnd::Stopped,
        (Some(code), _, _) => VmEnd::ExitStatus(code),
        (None, None, _) => VmEnd::ExitStatus(-1),
    }
}

/// Whether starting `vm` again now trips the restart rate limit, counted
/// as [`Daemon::try_launch`] counts it.
fn restart_too_quick(vm: &VmRecord, now: Instant) -> bool {
    vm.last_start
        .is_some_and(|last| now.duration_since(last) < QUICK_RESTART)
        && vm.quick_restarts + 1 >= MAX_QUICK_RESTARTS
}

/// What `status -v` shows of `vm` beyond its table row.
fn details(vm: &VmRecord) -> proto::control::VmDetails {
    use proto::control::{NicDetails, VmDetails};
    let run = vm.run.as_ref();
    VmDetails {
        id: vm.id,
        disks: vm.params.disks.iter().map(disk_details).collect(),
        cdrom: vm.params.cdrom.clone(),
        nics: vm
            .params
            .nics
            .iter()
            .enumerate()
            .map(|(index, nic)| {
                let local = run.and_then(|r| r.local.get(index).copied().flatten());
                NicDetails {
                    tap: run.and_then(|r| r.taps.names().get(index).cloned()),
                    mac: nic.mac,
                    switch: nic.iface.switch.clone(),
                    local_host: local.map(|l| l.host),
                    lease: local.map(|l| l.guest),
                }
            })
            .collect(),
        boot_device: match run {
            Some(run) => run.boot_device,
            None => vm.next_boot_device.or(vm.params.boot_device),
        },
        uptime_secs: run.and(vm.last_start).map(|t| t.elapsed().as_secs()),
        cpu_time_ms: run
            .and_then(|r| r.process.cpu_time())
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        last_end: vm.last_end.clone(),
    }
}

/// A disk's image chain as `status -v` shows it; the disk alone, with
/// the reason, when the chain cannot be read.
fn disk_details(spec: &proto::control::DiskSpec) -> proto::control::DiskDetails {
    use proto::control::{DiskDetails, ImageDetails};
    match disk::describe_chain(std::path::Path::new(&spec.path), spec.format) {
        Ok(images) => DiskDetails {
            chain: images
                .into_iter()
                .map(|image| ImageDetails {
                    path: image.path.display().to_string(),
                    format: image.format,
                    virtual_size: Some(image.virtual_size),
                })
                .collect(),
            error: None,
        },
        Err(e) => DiskDetails {
            chain: vec![ImageDetails {
                path: spec.path.clone(),
                format: spec.format,
                virtual_size: None,
            }],
            error: Some(e.to_string()),
        },
    }
}

/// A configuration file the parser rejected: CTL_FAIL without an errno,
/// as on OpenBSD, with the parser's `file:line` errors as the cause.
fn rejected(rejected: conf::Rejected) -> Failed {
    let lines = rejected.error_lines();
    for line in &lines {
        tracing::warn!("{line}");
    }
    Failed::because_of_lines(ErrorCode(0), lines)
}

/// The parser's warnings the user sees (those vmd logs at warning level).
fn user_warnings(loaded: &Loaded) -> Vec<String> {
    loaded
        .warnings
        .iter()
        .filter(|warning| !warning.is_debug())
        .map(ToString::to_string)
        .collect()
}

/// Answers a load or reload: its warnings, then CTL_OK; or CTL_FAIL with
/// the cause.
fn answer_with_warnings(client: &Client, result: Result<Vec<String>, Failed>) {
    match result {
        Ok(warnings) => {
            for warning in &warnings {
                client.send(&Response::Warning(Line::new(warning)));
            }
            client.send(&Response::Ctl(Ok(())));
        }
        Err(failed) => {
            client.send(&Response::Ctl(Err(failed)));
        }
    }
}

/// Another descriptor of an ad-hoc VM's `-b` image, to boot it again.
/// vmctl opened the file with its user's rights and vmd cannot open it
/// again by name; the descriptors share one file offset, which the last
/// boot's read left at the end, so it goes back to the start (that boot's
/// process has ended: nothing else reads it now).
fn rewound(kernel: &OwnedFd) -> std::io::Result<OwnedFd> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::from(kernel.try_clone()?);
    file.seek(SeekFrom::Start(0))?;
    Ok(OwnedFd::from(file))
}

/// Opens the configured boot image, or the first default firmware that
/// exists. Both were chosen by root (vm.conf or vmd's defaults); a user's
/// kernel arrives already open from vmctl.
fn open_boot_image(configured: Option<&str>) -> Result<OwnedFd, Failed> {
    let open = |path: &str| OpenAs::Root.open(Path::new(path), false, disk::Expect::RegularFile);
    match configured {
        Some(path) => open(path).map(OwnedFd::from).map_err(|e| {
            tracing::warn!("can't open {path}: {e}");
            Failed::because(
                ErrorCode::BIOS_MISSING,
                format!("{path}: {}", proto::error::error_text(&e)),
            )
        }),
        None => DEFAULT_BIOS_PATHS
            .iter()
            .find_map(|path| open(path).ok())
            .map(OwnedFd::from)
            .ok_or_else(|| {
                tracing::warn!("can't open {}", DEFAULT_BIOS_PATHS[0]);
                Failed::because(
                    ErrorCode::BIOS_MISSING,
                    format!(
                        "none of {} opens (install seabios)",
                        DEFAULT_BIOS_PATHS.join(", ")
                    ),
                )
            }),
    }
}

/// Opens the ISO image read-only with the rights of whoever chose it
/// (see open_as.rs): a path that does not lead to a file it may open is
/// CDROM_MISSING, one that leads to something else than a regular file
/// CDROM_INVALID. The shared lock keeps writers (a VM using the image as
/// its disk) away while the CD is in use.
fn open_cdrom(path: &str, opener: OpenAs) -> Result<OwnedFd, Failed> {
    let failed = |e: std::io::Error| {
        tracing::warn!("can't open cdrom {path}: {e}");
        let (code, why) = match e.kind() {
            std::io::ErrorKind::InvalidInput => (ErrorCode::CDROM_INVALID, e.to_string()),
            std::io::ErrorKind::PermissionDenied => {
                (ErrorCode::EPERM, proto::error::error_text(&e))
            }
            std::io::ErrorKind::WouldBlock => (
                ErrorCode::CDROM_MISSING,
                "in use by a vm writing to it".to_string(),
            ),
            _ => (ErrorCode::CDROM_MISSING, proto::error::error_text(&e)),
        };
        Failed::because(code, format!("{path}: {why}"))
    };
    let file = opener
        .open(Path::new(path), false, disk::Expect::RegularFile)
        .map_err(failed)?;
    disk::lock::lock_image(&file, disk::lock::LockMode::Shared).map_err(failed)?;
    Ok(OwnedFd::from(file))
}

/// Opens each disk's image chain, the top image locked exclusively so no
/// second VM can have it (docs/lifecycle.md, "Launch"), and adds the descriptors
/// to the launch. Any failure is vmctl's "could not open disk image(s)",
/// with the image at fault and why; for a locked image, the VM of
/// `users` (image path, VM name) that has it, if it is one of ours.
fn open_disks(
    disks: &[proto::control::DiskSpec],
    opener: OpenAs,
    fds: &mut LaunchDescriptors,
    users: &[(String, String)],
) -> Result<Vec<LaunchDisk>, Failed> {
    let mut out = Vec::new();
    // Every image of each chain, backing files included, is opened with
    // the rights of whoever chose the disk (see open_as.rs).
    let open = |path: &Path, write: bool| opener.open(path, write, disk::Expect::Image);
    for spec in disks {
        let chain =
            disk::ImageChain::open_with(&spec.path, spec.format, disk::Access::ReadWrite, &open)
                .map_err(|e| {
                    tracing::warn!("can't open disk {}: {e}", spec.path);
                    let innermost = e.innermost().path();
                    let user = users
                        .iter()
                        .find(|(path, _)| std::path::Path::new(path) == innermost)
                        .filter(|_| e.is_locked());
                    let cause = match user {
                        Some((path, vm)) => format!("{path}: in use by vm {vm}"),
                        None => e.to_string(),
                    };
                    Failed::because(ErrorCode::DISK_MISSING, cause)
                })?;
        let indices = chain
            .into_images()
            .into_iter()
            .map(|image| fds.push(OwnedFd::from(image.file)))
            .collect();
        out.push(LaunchDisk {
            path: spec.path.clone(),
            format: spec.format,
            fds: indices,
            read_only: false,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn iso_images_open_only_as_regular_readable_files() {
        let dir = std::env::temp_dir().join(format!("vmd-cdrom-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_string();

        std::fs::write(path("cd.iso"), [0u8; 2048]).unwrap();
        std::fs::set_permissions(path("cd.iso"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(open_cdrom(&path("cd.iso"), OpenAs::Root).is_ok());
        assert!(
            open_cdrom(&path("cd.iso"), OpenAs::chooser(0)).is_ok(),
            "root reads all"
        );
        let nobody = OpenAs::User(65534);
        assert_eq!(
            open_cdrom(&path("cd.iso"), nobody).err(),
            Some(Failed::because(
                ErrorCode::EPERM,
                format!("{}: Permission denied", path("cd.iso"))
            )),
            "a user who chose an image must be able to open it"
        );
        std::fs::set_permissions(path("cd.iso"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open_cdrom(&path("cd.iso"), nobody).is_ok());

        assert_eq!(
            open_cdrom(&path("absent.iso"), OpenAs::Root).err(),
            Some(Failed::because(
                ErrorCode::CDROM_MISSING,
                format!("{}: No such file or directory", path("absent.iso"))
            ))
        );
        assert_eq!(
            open_cdrom(dir.to_str().unwrap(), OpenAs::Root).err(),
            Some(Failed::because(
                ErrorCode::CDROM_INVALID,
                format!("{}: a directory, not a regular file", dir.display())
            ))
        );
        // A FIFO is refused without opening it (which would block).
        nix::unistd::mkfifo(dir.join("fifo").as_path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(
            open_cdrom(&path("fifo"), OpenAs::Root)
                .err()
                .map(|f| f.code),
            Some(ErrorCode::CDROM_INVALID)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
