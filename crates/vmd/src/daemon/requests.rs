//! The requests that act on a VM already there (vmctl(8)): stop and
//! wait, status, pause and unpause, the console, `reset`, and what a
//! client leaves behind when it goes.

use std::sync::Arc;

use conf::model::GlobalSettings;
use proto::ErrorCode;
use proto::control::{ResetMode, Response, VmInfo, VmRef, state};
use proto::vmchannel::ToVm;

use super::Daemon;
use crate::client::Client;
use crate::permissions;
use crate::registry::VmRecord;

impl Daemon {
    pub(super) fn terminate(
        &mut self,
        client: &Arc<Client>,
        target: &VmRef,
        force: bool,
        wait: bool,
    ) {
        let Some(vm) = self.registry.find_mut(target) else {
            client.send(&Response::Terminate {
                id: 0,
                result: Err(ErrorCode::ENOENT),
            });
            return;
        };
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

    pub(super) fn wait(&mut self, client: &Arc<Client>, target: &VmRef) {
        let Some(vm) = self.registry.find_mut(target) else {
            client.send(&Response::Terminate {
                id: 0,
                result: Err(ErrorCode::ENOENT),
            });
            return;
        };
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

    pub(super) fn info(&self, client: &Arc<Client>, verbose: bool) {
        let registry = &self.registry;
        let rows = registry
            .iter()
            .filter(|vm| vm.running())
            .chain(registry.iter().filter(|vm| !vm.running()));
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

    pub(super) fn pause(&mut self, client: &Arc<Client>, target: &VmRef, pause: bool) {
        let reply = |id: u32, result: Result<(), ErrorCode>| {
            client.send(&if pause {
                Response::Pause { id, result }
            } else {
                Response::Unpause { id, result }
            });
        };
        let Some(vm) = self.registry.find_mut(target) else {
            return reply(0, Err(ErrorCode::ENOENT));
        };
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

    pub(super) fn console_attach(&mut self, client: &Arc<Client>, target: &VmRef) {
        let Some(vm) = self.registry.find_mut(target) else {
            client.send(&Response::ConsoleRefused(ErrorCode::ENOENT));
            return;
        };
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
            let reply = if vm.last_end.is_none() && vm.console_history.output.is_empty() {
                Response::ConsoleRefused(ErrorCode::ENOENT)
            } else if !allowed {
                Response::ConsoleRefused(ErrorCode::EPERM)
            } else {
                Response::ConsoleHistory {
                    name: vm.name.clone(),
                    output: vm.console_history.output.clone(),
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
        // A run whose process has closed its channel (or closes it as we
        // write) is ending and cannot answer: the attach waits for its
        // wind-up, which hands it to the next run after a guest reset or
        // answers it with the output kept and how the VM ended.
        let sent =
            !run.channel_closed && run.process.send(&ToVm::ConsoleAttach { client: client.id });
        run.console = Some(client.clone());
        run.console_pending = true;
        if sent {
            tracing::debug!("{}: console attach by client {}", vm.name, client.id);
        } else {
            tracing::debug!(
                "{}: console attach by client {} waits for the end of the run",
                vm.name,
                client.id
            );
        }
    }

    pub(super) fn console_break(&mut self, client: &Arc<Client>) {
        for vm in self.registry.iter() {
            if let Some(run) = &vm.run
                && run.console.as_ref().is_some_and(|c| c.id == client.id)
            {
                run.process.send(&ToVm::ConsoleBreak);
            }
        }
    }

    pub(super) fn reset(&mut self, mode: ResetMode) {
        if matches!(mode, ResetMode::Switches | ResetMode::All) {
            self.switches.clear();
        }
        if mode == ResetMode::All {
            self.settings.local_prefix =
                GlobalSettings::with_online_cpus(conf::model::online_cpus()).local_prefix;
        }
        if matches!(mode, ResetMode::Vms | ResetMode::All) {
            self.next_batch = None;
            for mut vm in self.registry.reset() {
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
        }
    }

    pub(super) fn client_gone(&mut self, id: u64) {
        for vm in self.registry.iter_mut() {
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
