//! What VM processes say (started, paused, their console, their end),
//! and everything that follows the end of a run: the waiters told, a
//! guest reset started again, how it ended kept, the VM forgotten or
//! kept stopped (docs/lifecycle.md).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Instant;

use proto::ErrorCode;
use proto::control::{Response, Started, state};
use proto::error::Failed;
use proto::vmchannel::{EXIT_REBOOT, ExitReason, FromVm, ToVm};

use super::Daemon;
use super::start::{MAX_QUICK_RESTARTS, QUICK_RESTART, restart_too_quick};
use crate::registry::{Running, VmRecord};

impl Daemon {
    pub(super) fn vm_message(&mut self, run_id: u64, message: FromVm, fds: Vec<OwnedFd>) {
        let Some(id) = self.registry.by_run(run_id) else {
            return;
        };
        if let FromVm::Sent(result) = message {
            return self.sent(id, result);
        }
        let Some(vm) = self.registry.get_mut(id) else {
            return;
        };
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
    pub(super) fn reap(&mut self) {
        self.orphans.retain_mut(|p| p.try_wait().is_none());
        // By id: ended() may remove a VM from the registry.
        for id in self.registry.ids() {
            let exited = self
                .registry
                .get_mut(id)
                .and_then(|vm| vm.run.as_mut())
                .filter(|r| r.channel_closed)
                .and_then(|r| r.process.try_wait());
            if let Some(status) = exited {
                self.ended(id, status);
            }
        }
    }

    /// Tells everyone waiting on this run that it is over.
    pub(super) fn notify_end(vm: &VmRecord, run: &mut Running) {
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

    /// A VM process exited.
    fn ended(&mut self, id: u32, status: ExitStatus) {
        let Some(vm) = self.registry.get_mut(id) else {
            return;
        };
        let Some(run) = vm.run.take() else { return };
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
        self.wind_up(id, run, end);
    }

    /// A VM sent away: its process wrote the whole stream, vmctl has it,
    /// and the process let go of the disk images. The VM ends here and
    /// now, as if its process had exited, so that `vmctl send` returns
    /// without waiting for the process to tear down its guest memory and
    /// the receiver (this host's, even under the same name) finds the
    /// name and the disks free. The process is reaped as an orphan.
    pub(super) fn sent_away(&mut self, id: u32) {
        let Some(mut run) = self.registry.get_mut(id).and_then(|vm| vm.run.take()) else {
            return;
        };
        run.sent = true;
        self.wind_up(id, run, Some(proto::control::VmEnd::Sent));
    }

    /// Everything that follows the end of a run: waiters told, taps
    /// removed, the console closed, how it ended recorded, the VM
    /// forgotten unless vm.conf defines it or it lingers (an ad-hoc VM
    /// that ended abnormally), or started again after a guest reset
    /// (`end` is `None`).
    fn wind_up(&mut self, id: u32, mut run: Running, end: Option<proto::control::VmEnd>) {
        use proto::control::VmEnd;
        let rebooted = end.is_none();
        let mut end = end;
        let Some(vm) = self.registry.get_mut(id) else {
            return;
        };
        let name = vm.name.clone();
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
        if rebooted
            && boot_device.is_none()
            && let Some(vm) = self.registry.get(id)
        {
            tracing::info!("{name}: vm {id} is rebooting");
            let too_quick = restart_too_quick(vm, Instant::now());
            match self.try_launch(id, user, None) {
                Ok(()) => {
                    // The same pty carries on; the console client stays. One
                    // still waiting for its replay gets it from the new run,
                    // which carries the old run's output.
                    if let Some(run) = self.registry.get_mut(id).and_then(|vm| vm.run.as_mut()) {
                        if let Some(client) = &console
                            && console_pending
                        {
                            run.process.send(&ToVm::ConsoleAttach { client: client.id });
                        }
                        run.console = console;
                        run.console_pending = console_pending;
                    }
                    return;
                }
                Err(code) => {
                    tracing::warn!("failed to restart vm {name}: {code}");
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
            console.send(&if console_pending {
                // The client still waits for the answer to its attach,
                // which no run gave (a guest that reset at once, again
                // and again): it gets what a stopped VM's console shows.
                Response::ConsoleHistory {
                    name: name.clone(),
                    output: self
                        .registry
                        .get(id)
                        .map(|vm| vm.console_history.output.clone())
                        .unwrap_or_default(),
                    end: Some(end.clone()),
                }
            } else if end.abnormal() {
                Response::ConsoleEnded {
                    name: name.clone(),
                    end: end.clone(),
                }
            } else {
                Response::ConsoleClosed
            });
        }

        let Some(vm) = self.registry.get_mut(id) else {
            return;
        };
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
        if !(vm.configured || linger) {
            self.forget(id);
        }
        if let Some((client, sent)) = sender {
            let result = if sent { Ok(()) } else { Err(ErrorCode::EIO) };
            client.send(&Response::SendDone(result));
        }
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
