//! The VM process: receives its launch description and descriptors from
//! vmd, builds and runs the VM, and obeys vmd's requests until the VM ends.
//!
//! The main thread is the control loop. A reader thread turns the channel
//! into events; vCPUs and devices report the VM's end through the same
//! queue, so every decision about the VM's life is taken in one place.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc;

use proto::frame::Channel;
use std::fs::File;

use proto::vmchannel::{
    EXIT_ERROR, EXIT_OFF, EXIT_REBOOT, ExitReason, FromVm, ToVm, VmDescription,
};

use crate::lifecycle::{Lifecycle, VmEvent};
use crate::sandbox::{self, ThreadKind};
use crate::snapshot::StreamError;
use crate::snapshot::save::Sent;
use crate::vm::{LaunchError, LaunchFiles, Vm};

enum Event {
    Vm(VmEvent),
    /// A message from vmd and the descriptors that came with it.
    Daemon(ToVm, Vec<OwnedFd>),
    DaemonGone,
}

/// Hooks the process gets from the program embedding it.
pub struct ProcessHooks {
    /// Changes log verbosity (`vmctl log`).
    pub set_verbosity: Box<dyn Fn(u8) + Send>,
    /// Sets the process title once the VM's name is known.
    pub set_title: Box<dyn Fn(&str) + Send>,
}

/// Runs a VM process on `channel`; returns its exit status.
pub fn run(channel: Channel, hooks: ProcessHooks) -> i32 {
    let received = match channel.recv::<ToVm>() {
        Ok(Some(r)) => r,
        Ok(None) => return EXIT_OFF,
        Err(e) => {
            tracing::error!("vm: bad launch message: {e}");
            return EXIT_ERROR;
        }
    };
    let ToVm::Launch(launch) = received.message else {
        tracing::error!("vm: expected a launch message");
        return EXIT_ERROR;
    };
    (hooks.set_title)(&launch.name);
    (hooks.set_verbosity)(launch.verbose);

    let (events_tx, events_rx) = mpsc::channel::<Event>();
    let (vm_tx, vm_rx) = mpsc::channel::<VmEvent>();
    let lifecycle = Arc::new(Lifecycle::new(vm_tx));

    let vm = LaunchFiles::take(&launch, received.fds)
        .and_then(|files| {
            // Every resource is open now: lock the process in before the
            // guest gets anywhere near it.
            confine(&launch)?;
            Ok(files)
        })
        .and_then(|files| {
            if launch.incoming.is_some() {
                Vm::restore(&launch, files, lifecycle.clone())
            } else {
                Vm::build(&launch, files, lifecycle.clone())
            }
        });
    let mut vm = match vm {
        Ok(vm) => vm,
        Err(e) => {
            tracing::error!("{}: failed to start vm: {}", launch.name, e.reason);
            let _ = channel.send(&FromVm::LaunchFailed {
                code: e.code,
                reason: e.reason,
            });
            return EXIT_ERROR;
        }
    };
    if let Err(e) = vm.start() {
        tracing::error!("{}: failed to start vcpus: {e}", launch.name);
        let _ = channel.send(&FromVm::LaunchFailed {
            code: proto::ErrorCode::from_io(&e),
            reason: e.to_string(),
        });
        return EXIT_ERROR;
    }
    if launch.incoming.is_some() {
        // A received VM was held paused while its state went in.
        vm.resume();
    }
    let memfd = vm.ram.memfd.as_raw_fd();
    if channel.send_with_fds(&FromVm::Running, &[memfd]).is_err() {
        return EXIT_OFF;
    }

    // Forward VM events and daemon messages into one queue.
    {
        let tx = events_tx.clone();
        let spawned = sandbox::spawn(ThreadKind::Control, "vm-events".into(), move || {
            while let Ok(event) = vm_rx.recv() {
                if tx.send(Event::Vm(event)).is_err() {
                    return;
                }
            }
        });
        if spawned.is_err() {
            return EXIT_ERROR;
        }
    }
    {
        let tx = events_tx;
        let reader = match channel.try_clone() {
            Ok(c) => c,
            Err(_) => return EXIT_ERROR,
        };
        let spawned = sandbox::spawn(ThreadKind::Control, "vmd-channel".into(), move || {
            loop {
                match reader.recv::<ToVm>() {
                    Ok(Some(received)) => {
                        if tx
                            .send(Event::Daemon(received.message, received.fds))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) | Err(_) => {
                        let _ = tx.send(Event::DaemonGone);
                        return;
                    }
                }
            }
        });
        if spawned.is_err() {
            return EXIT_ERROR;
        }
    }
    sandbox::confine_thread(ThreadKind::Control);
    sandbox_self_test(&channel);

    let reason = control_loop(&vm, &channel, &events_rx, &hooks);
    finish(&vm, &channel, reason)
}

/// Confines the process as vmd asked (docs/architecture.md, "Three kinds of process": the VM process runs as
/// the unprivileged user, with nothing it does not need).
fn confine(launch: &proto::vmchannel::VmLaunch) -> Result<(), LaunchError> {
    let Some(identity) = &launch.sandbox else {
        return Ok(());
    };
    let enforced = sandbox::confine_process(&sandbox::Identity {
        uid: identity.uid,
        gid: identity.gid,
        root: std::path::Path::new(&identity.root),
    })
    .map_err(|e| LaunchError {
        code: proto::ErrorCode::from_io(&e),
        reason: format!("cannot confine the vm process: {e}"),
    })?;
    if !enforced {
        tracing::debug!("{}: landlock is not available; chroot only", launch.name);
    }
    Ok(())
}

/// Debug builds only: `VMD_SANDBOX_SELF_TEST` makes the confined process
/// act as one its guest took over would, so tests can see that vmd holds:
/// `syscall` tries a system call the sandbox forbids, `garbage` sends vmd
/// bytes that are not a message.
fn sandbox_self_test(channel: &Channel) {
    #[cfg(debug_assertions)]
    if sandbox::is_confined() {
        match std::env::var("VMD_SANDBOX_SELF_TEST").as_deref() {
            Ok("syscall") => {
                tracing::info!("sandbox self-test: calling kill(2)");
                // SAFETY: kill with signal 0 only probes; the sandbox refuses it.
                unsafe { libc::kill(1, 0) };
            }
            Ok("garbage") => {
                tracing::info!("sandbox self-test: sending vmd garbage");
                use std::os::fd::AsFd;
                let _ = proto::frame::send_bytes(channel.as_fd(), &[0xff; 16], &[]);
            }
            _ => {}
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = channel;
}

fn control_loop(
    vm: &Vm,
    channel: &Channel,
    events: &mpsc::Receiver<Event>,
    hooks: &ProcessHooks,
) -> ExitReason {
    while let Ok(event) = events.recv() {
        match event {
            Event::Vm(VmEvent::Exit(reason)) => return reason,
            Event::Vm(VmEvent::GuestShuttingDown) => {
                let _ = channel.send(&FromVm::GuestShuttingDown);
            }
            Event::DaemonGone => {
                // vmd is gone: nobody can reach this VM any more.
                vm.lifecycle.request_exit(ExitReason::PowerOff);
            }
            Event::Daemon(message, fds) => match message {
                ToVm::Launch(_) => tracing::warn!("{}: ignoring a second launch", vm.name),
                ToVm::Pause => {
                    vm.pause();
                    let _ = channel.send(&FromVm::Paused(Ok(())));
                }
                ToVm::Unpause => {
                    vm.resume();
                    let _ = channel.send(&FromVm::Unpaused(Ok(())));
                }
                ToVm::Shutdown { graceful: true } => vm.request_shutdown(),
                ToVm::Shutdown { graceful: false } => {
                    vm.lifecycle.request_exit(ExitReason::PowerOff)
                }
                ToVm::ConsoleAttach { client } => {
                    let bytes = vm.console.attach(&vm.pty_slave);
                    let _ = channel.send(&FromVm::ConsoleReplay { client, bytes });
                }
                ToVm::ConsoleBreak => {
                    vm.serial
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .send_break();
                }
                ToVm::Verbose(level) => (hooks.set_verbosity)(level),
                ToVm::Send(description) => {
                    let result = match fds.into_iter().next() {
                        Some(fd) => send(vm, &description, File::from(fd)),
                        None => Err(StreamError::Save("no descriptor to send to".into())),
                    };
                    let _ = channel.send(&FromVm::Sent(
                        result.as_ref().map(|_| ()).map_err(StreamError::code),
                    ));
                    if result.is_ok() {
                        // The VM lives on elsewhere; this one never runs
                        // again.
                        return ExitReason::PowerOff;
                    }
                }
            },
        }
    }
    ExitReason::PowerOff
}

/// `vmctl send`: pauses the VM, writes its state to `out` and closes it.
/// On failure a VM that was running runs on.
fn send(vm: &Vm, description: &VmDescription, out: File) -> Result<Sent, StreamError> {
    let was_paused = vm.lifecycle.is_paused();
    vm.pause();
    let started = std::time::Instant::now();
    let result = vm.send(description, &out);
    match &result {
        Ok(sent) => tracing::info!(
            "{}: sent {} bytes ({} pages of memory) in {:?}",
            vm.name,
            sent.bytes,
            sent.pages,
            started.elapsed()
        ),
        Err(e) => {
            tracing::warn!("{}: send failed: {e}", vm.name);
            if !was_paused {
                vm.resume();
            }
        }
    }
    result
}

fn finish(vm: &Vm, channel: &Channel, reason: ExitReason) -> i32 {
    let code = match &reason {
        ExitReason::PowerOff => EXIT_OFF,
        ExitReason::Reboot => EXIT_REBOOT,
        ExitReason::Error(_) => EXIT_ERROR,
    };
    // The relay's last write to the pty comes first: the tail says what
    // of the output the pty did not take, for the next run to write.
    vm.console.close();
    let _ = channel.send(&FromVm::Exiting {
        reason,
        console_tail: vm.console.tail(),
    });
    code
}

/// The descriptor number a VM process finds its channel at.
pub const CHANNEL_FD: i32 = 3;

/// Takes the channel vmd left at [`CHANNEL_FD`].
///
/// # Safety
/// Must be called once, in a process started by vmd with the channel at
/// that descriptor.
pub unsafe fn inherited_channel() -> Channel {
    use std::os::fd::FromRawFd;
    // SAFETY: guaranteed by the caller.
    let fd = unsafe { OwnedFd::from_raw_fd(CHANNEL_FD) };
    Channel::new(fd)
}
