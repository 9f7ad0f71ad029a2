//! The daemon's core: one thread owns the VM registry and handles every
//! event in order — client requests, messages and exits of VM processes,
//! signals. Nothing here blocks for long: VM processes do the slow work
//! and answer through events.
//!
//! This file holds the event loop, the configuration (vm.conf applied,
//! reloaded, loaded) and the dispatch of requests. The rest of
//! [`Daemon`] lives in its child modules: `start` (registering and
//! launching VMs), `requests` (stop, wait, status, pause, console, reset),
//! `processes` (what VM processes say, and the end of a run) and
//! `transfer` (send and receive). Below the daemon are the registry, the
//! network, the VM processes and the client connections, which know
//! nothing of it.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use conf::Loaded;
use conf::model::{GlobalSettings, Switch};
use proto::ErrorCode;
use proto::control::{Request, Response, VmRef, state};
use proto::error::{Failed, Line};
use proto::vmchannel::{SandboxIdentity, ToVm};

use crate::client::Client;
use crate::config::{self, ConfigSource};
use crate::events::Event;
use crate::instances;
use crate::network::Network;
use crate::params::CloudInitFiles;
use crate::permissions::{self, VmAccess};
use crate::registry::{Registry, VmRecord};
use crate::vmproc::{SpawnOptions, VmProcess};

mod processes;
mod requests;
mod start;
mod transfer;

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
                    if let Some(vm) = self
                        .registry
                        .by_run(run)
                        .and_then(|id| self.registry.get_mut(id))
                        && let Some(running) = vm.run.as_mut()
                    {
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
            if self.registry.iter().any(|known| known.name == vm.name) {
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
            self.registry.insert(record);
        }
        for vm in self.registry.iter_mut() {
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
            .iter()
            .filter(|vm| vm.flags & state::WAITING != 0 && !vm.running())
            .map(|vm| vm.id)
            .collect();
        for &id in waiting.iter().take(parallel) {
            if let Some(vm) = self.registry.get_mut(id) {
                vm.flags &= !state::WAITING;
                let _ = self.launch(id, 0, None);
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
        let stopped: Vec<u32> = self
            .registry
            .iter()
            .filter(|vm| !vm.running())
            .map(|vm| vm.id)
            .collect();
        for id in stopped {
            self.forget(id);
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
                for vm in self.registry.iter() {
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
        if let Some(vm) = self.registry.find(&VmRef::Name(name.clone()))
            && vm.lingering()
            && permissions::may_control(client.uid, &Self::access(vm))
        {
            let id = vm.id;
            self.forget(id);
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

    /// resolved as root.
    fn configured_instance(
        &self,
        parent: &str,
        vm: &conf::model::Vm,
    ) -> Result<instances::Instance, String> {
        let template = self
            .registry
            .find(&VmRef::Name(parent.to_string()))
            .ok_or_else(|| format!("invalid template {parent}"))?;
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
                .map(|template| template.cloud_init_files.clone())
                .unwrap_or_default(),
            _ => own,
        }
    }

    /// Removes the VM with `id` from the registry, giving its tty back.
    fn forget(&mut self, id: u32) {
        if let Some(vm) = self.registry.remove(id)
            && let Some(pty) = vm.pty
        {
            pty.release();
        }
    }

    /// SIGTERM: every VM ends at once, then the daemon.
    fn shutdown(&mut self) {
        for vm in self.registry.iter_mut() {
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
