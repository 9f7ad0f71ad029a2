//! Starting VMs (docs/lifecycle.md, "Registration" and "Launch"):
//! `vmctl start` of a known VM, of a new ad-hoc one or of an instance, and
//! the launch itself, which opens what the VM needs as the user who chose
//! it and spawns its process.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::ErrorCode;
use proto::control::{Response, StartRequest, VmRef, state};
use proto::error::{Failed, Line};
use proto::names::validate_vm_name;
use proto::vmchannel::{IncomingState, LaunchDisk, LaunchFds, VmLaunch};

use super::Daemon;
use crate::client::Client;
use crate::cloud_init;
use crate::config;
use crate::instances;
use crate::kernel_files::{self, DEFAULT_BIOS_PATHS};
use crate::network::VmNics;
use crate::open_as::OpenAs;
use crate::params::{
    CloudInitFiles, DEFAULT_MEMORY, MAX_DISKS, MAX_NICS, MAX_VCPUS, Owner, VmParams,
};
use crate::permissions;
use crate::pty::Pty;
use crate::registry::{Running, VmRecord};
use crate::vmproc::{LaunchDescriptors, VmProcess};

/// Restarts closer together than this count towards the rate limit.
pub(super) const QUICK_RESTART: Duration = Duration::from_secs(6);
/// This many quick restarts in a row stop the VM (docs/lifecycle.md, "Launch").
pub(super) const MAX_QUICK_RESTARTS: u32 = 3;

impl Daemon {
    /// `vmctl start`: starts a known VM, or registers a new one (an
    /// instance, or an ad-hoc VM) and starts it.
    pub(super) fn start(
        &mut self,
        client: &Arc<Client>,
        request: StartRequest,
        kernel: Option<OwnedFd>,
    ) -> Result<(), Failed> {
        // Refused before anything is registered or opened.
        let seed = cloud_init::from_request(&request)?;
        if let Some(template) = &request.instance_of {
            let id = self.create_instance(client, template, &request, kernel, seed)?;
            return self.launch(id, client.uid, Some(client.clone()));
        }
        let existing = request
            .target
            .as_ref()
            .and_then(|t| self.registry.find_mut(t));
        let id = match existing {
            Some(vm) => {
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
                vm.id
            }
            None => {
                let id = self.create(client, &request, kernel)?;
                if let Some(vm) = self.registry.get_mut(id) {
                    vm.cloud_init = seed;
                }
                id
            }
        };
        self.launch(id, client.uid, Some(client.clone()))
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
    ) -> Result<u32, Failed> {
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
        let id = self.register_adhoc(
            name,
            uid,
            (instance.params, instance.owner, instance.allow),
            kernel,
            request.boot_device,
        )?;
        if let Some(vm) = self.registry.get_mut(id) {
            vm.cdrom_chosen_by_user = request.cdrom.is_some() && uid != 0;
            vm.cloud_init_files = cloud_init_files;
            vm.cloud_init = cloud_init;
        }
        Ok(id)
    }

    /// Adds a VM created by a start request (not from vm.conf) with its
    /// one-shot boot choices; returns its id.
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
    ) -> Result<u32, ErrorCode> {
        let Some(id) = self.registry.assign_id(&name, uid) else {
            tracing::warn!("too many vms");
            return Err(ErrorCode::ENOMEM);
        };
        let mut vm = VmRecord::new(id, name, params, owner, false);
        vm.allow_instance = allow_instance;
        vm.kernel = kernel;
        vm.next_boot_device = boot_device;
        Ok(self.registry.insert(vm))
    }

    /// Registers a new ad-hoc VM from a start request (docs/lifecycle.md, "Registration").
    fn create(
        &mut self,
        client: &Arc<Client>,
        request: &StartRequest,
        kernel: Option<OwnedFd>,
    ) -> Result<u32, Failed> {
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
    pub(super) fn launch(
        &mut self,
        id: u32,
        user: u32,
        starter: Option<Arc<Client>>,
    ) -> Result<(), Failed> {
        let result = self.try_launch(id, user, starter);
        if let Err(code) = &result
            && let Some(vm) = self.registry.get_mut(id)
        {
            tracing::warn!("failed to start vm {}: {code}", vm.name);
            vm.last_end = Some(proto::control::VmEnd::StartFailed(code.to_string()));
            if !vm.configured && !vm.running() {
                self.forget(id);
            }
        }
        result
    }

    /// Launches the VM with `id`. Everything that can fail (the boot
    /// image, initrd and firmware, the tty, the CD, the disks, the
    /// cloud-init volume, the NICs, the process) is had before anything
    /// meant for this one start is given up: the next kernel and boot
    /// device, a received VM's stream, the console history the new run
    /// replays, and the count of quick restarts all stay as they were
    /// when the launch fails, for the start that follows.
    pub(super) fn try_launch(
        &mut self,
        id: u32,
        user: u32,
        starter: Option<Arc<Client>>,
    ) -> Result<(), Failed> {
        let run_id = self.next_run;
        let kvm = self.kvm.try_clone().map_err(|e| ErrorCode::from_io(&e))?;
        let disk_users = self.disk_users();
        let Some(vm) = self.registry.get_mut(id) else {
            return Err(ErrorCode::ENOENT.into());
        };
        if vm.running() {
            return Err(ErrorCode::EALREADY.into());
        }
        let now = Instant::now();
        let quick_restarts = match vm.last_start {
            Some(last) if now.duration_since(last) < QUICK_RESTART => vm.quick_restarts + 1,
            Some(_) => 0,
            None => vm.quick_restarts,
        };
        if quick_restarts >= MAX_QUICK_RESTARTS {
            vm.quick_restarts = 0;
            tracing::warn!("vm {} restarted too quickly", vm.id);
            return Err(Failed::because(ErrorCode::EPERM, "restarted too quickly"));
        }

        let duplicate = |fd: &OwnedFd, what: &str| {
            fd.try_clone().map_err(|e| {
                tracing::warn!("{}: cannot use its {what}: {e}", vm.name);
                Failed::because(ErrorCode::from_io(&e), format!("{what}: {e}"))
            })
        };
        let boot_image_chosen = vm.next_kernel.is_some() || vm.kernel.is_some();
        let boot_image = match (&vm.next_kernel, &vm.incoming) {
            (Some(next), _) => Some(duplicate(next, "boot image")?),
            // A received VM carries on where it was: it boots nothing.
            (None, Some(_)) => None,
            (None, None) => match &vm.kernel {
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
        let incoming = match &vm.incoming {
            Some(incoming) => Some((
                duplicate(&incoming.stream, "received stream")?,
                incoming.header_bytes.clone(),
            )),
            None => None,
        };
        let boot_device = vm.next_boot_device.or(vm.params.boot_device);
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
            // A copy (of at most the console's history size): the VM keeps
            // its own until the process has it.
            console_history: vm.console_history.clone(),
            incoming: incoming.map(|(stream, header)| IncomingState {
                stream: fds.push(stream),
                header,
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
        // The process has them now: this start used them up.
        vm.next_kernel = None;
        vm.next_boot_device = None;
        vm.incoming = None;
        vm.console_history = Default::default();
        vm.quick_restarts = quick_restarts;
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
            .iter()
            .filter(|vm| vm.running())
            .flat_map(|vm| {
                let disks = vm.params.disks.iter().map(|d| d.path.clone());
                disks.map(|path| (path, vm.name.clone()))
            })
            .collect()
    }
}

/// Whether starting `vm` again now trips the restart rate limit, counted
/// as [`Daemon::try_launch`] counts it.
pub(super) fn restart_too_quick(vm: &VmRecord, now: Instant) -> bool {
    vm.last_start
        .is_some_and(|last| now.duration_since(last) < QUICK_RESTART)
        && vm.quick_restarts + 1 >= MAX_QUICK_RESTARTS
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
        None => kernel_files::open_default_firmware().ok_or_else(|| {
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
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    use proto::control::{BootDevice, DiskFormat, DiskSpec};
    use proto::vmchannel::SandboxIdentity;

    use crate::config::ConfigSource;
    use crate::incoming::Incoming;
    use crate::vmproc::SpawnOptions;

    /// A daemon that knows no VM and has loaded no file; its launches
    /// here all fail before a process would be spawned.
    fn daemon() -> Daemon {
        let (events, _) = std::sync::mpsc::channel();
        Daemon::new(
            events,
            File::open("/dev/null").unwrap(),
            SpawnOptions { foreground: true },
            0,
            PathBuf::from("/nonexistent/vmd.sock"),
            ConfigSource {
                path: "/nonexistent/vm.conf".into(),
                origin: conf::Origin::Default,
                defines: Vec::new(),
            },
            SandboxIdentity {
                uid: 65534,
                gid: 65534,
                root: "/var/empty".into(),
            },
        )
    }

    /// A configured VM (kept when its start fails) whose one disk is
    /// not there, so that every launch of it fails at its disks, after
    /// the boot image, the tty and the CD and before the NICs and the
    /// process.
    fn vm_without_its_disk(daemon: &mut Daemon, name: &str, dir: &Path) -> u32 {
        let id = daemon.registry.assign_id(name, 0).unwrap();
        let params = VmParams {
            memory: DEFAULT_MEMORY,
            vcpus: 1,
            boot: None,
            cmdline: None,
            initrd: None,
            disks: vec![DiskSpec {
                path: dir.join("gone.img").display().to_string(),
                format: DiskFormat::Raw,
            }],
            cdrom: None,
            nics: Vec::new(),
            boot_device: None,
        };
        let owner = Owner { uid: 0, gid: None };
        daemon
            .registry
            .insert(VmRecord::new(id, name.to_string(), params, owner, true))
    }

    #[test]
    fn a_failed_launch_keeps_what_the_next_start_needs() {
        let dir = std::env::temp_dir().join(format!("vmd-relaunch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kernel"), b"a kernel").unwrap();
        let kernel_inode = std::fs::metadata(dir.join("kernel")).unwrap().ino();
        let mut daemon = daemon();

        // `vmctl start -b kernel -B cdrom vm` of a VM that ran a moment
        // ago, once already restarted quickly, with its output kept.
        let booted = vm_without_its_disk(&mut daemon, "booted", &dir);
        let vm = daemon.registry.get_mut(booted).unwrap();
        vm.next_kernel = Some(File::open(dir.join("kernel")).unwrap().into());
        vm.next_boot_device = Some(BootDevice::Cdrom);
        vm.console_history.output = b"the last run's output".to_vec();
        vm.last_start = Some(Instant::now());
        vm.quick_restarts = 1;
        // A received VM, its stream waiting for its first launch.
        let received = vm_without_its_disk(&mut daemon, "received", &dir);
        let (stream, _writer) = nix::unistd::pipe().unwrap();
        daemon.registry.get_mut(received).unwrap().incoming = Some(Incoming {
            header_bytes: b"header".to_vec(),
            stream,
        });

        // Failing again and again changes none of it: the failures are
        // the disk's, not a restart limit's.
        for attempt in 1..=3 {
            for id in [booted, received] {
                let failed = daemon.try_launch(id, 0, None).unwrap_err();
                assert_eq!(
                    failed.code,
                    ErrorCode::DISK_MISSING,
                    "attempt {attempt} of vm {id}: {failed}"
                );
            }
            let vm = daemon.registry.get(booted).unwrap();
            let next_kernel = vm.next_kernel.as_ref().map(|fd| {
                File::from(fd.try_clone().unwrap())
                    .metadata()
                    .unwrap()
                    .ino()
            });
            assert_eq!(next_kernel, Some(kernel_inode), "attempt {attempt}");
            assert_eq!(vm.next_boot_device, Some(BootDevice::Cdrom));
            assert_eq!(vm.console_history.output, b"the last run's output");
            assert_eq!(vm.quick_restarts, 1, "attempt {attempt}");
            assert!(!vm.running());
            let vm = daemon.registry.get(received).unwrap();
            assert_eq!(
                vm.incoming.as_ref().map(|i| i.header_bytes.as_slice()),
                Some(&b"header"[..]),
                "attempt {attempt}"
            );
        }
        assert_eq!(daemon.next_run, 1, "no run was made");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn iso_images_open_only_as_regular_readable_files() {
        testkit::needs!(root);
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
