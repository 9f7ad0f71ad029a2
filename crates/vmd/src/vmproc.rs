//! Spawning a VM process: vmd re-executes itself with a private argument,
//! hands it a socketpair at descriptor 3, and sends the launch description
//! with every host resource as descriptors.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::time::Duration;

use proto::frame::Channel;
use proto::vmchannel::{FromVm, ToVm, VmLaunch};

use crate::events::Event;

/// The argument that makes vmd run as a VM process.
pub const VM_PROCESS_ARG: &str = "__vm-process";

/// How VM processes log.
#[derive(Debug, Clone, Copy)]
pub struct SpawnOptions {
    pub foreground: bool,
}

/// A running VM process.
pub struct VmProcess {
    pub pid: u32,
    /// Identifies this process's events (a VM gets a new one per boot).
    pub run: u64,
    child: Child,
    channel: Channel,
}

impl VmProcess {
    /// Starts a VM process and sends it `launch` with `fds`.
    pub fn spawn(
        launch: &VmLaunch,
        fds: &[RawFd],
        run: u64,
        options: SpawnOptions,
        events: Sender<Event>,
    ) -> io::Result<VmProcess> {
        let (ours, theirs) = Channel::pair()?;
        let theirs_fd = theirs.as_raw_fd();
        let mut command = Command::new("/proc/self/exe");
        command
            .arg0(format!("vmd: {}", launch.name))
            .arg(VM_PROCESS_ARG)
            .arg(if options.foreground {
                "stderr"
            } else {
                "syslog"
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if options.foreground {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        let prepare = move || {
            // SAFETY: setsid has no preconditions.
            if unsafe { libc::setsid() } < 0 {
                return Err(io::Error::last_os_error());
            }
            // A VM never outlives its daemon.
            // SAFETY: PR_SET_PDEATHSIG takes a signal number.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
                return Err(io::Error::last_os_error());
            }
            if theirs_fd == proto_channel_fd() {
                // SAFETY: F_GETFD on a descriptor of this process.
                let flags = unsafe { libc::fcntl(theirs_fd, libc::F_GETFD) };
                // SAFETY: F_SETFD on the same descriptor, an integer.
                unsafe { libc::fcntl(theirs_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) };
            } else {
                // SAFETY: dup2 of a descriptor this process holds onto the
                // channel's number, which nothing else uses in the child.
                if unsafe { libc::dup2(theirs_fd, proto_channel_fd()) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            close_on_exec_above(proto_channel_fd());
            Ok(())
        };
        // SAFETY: between fork and exec `prepare` makes only system calls,
        // all async-signal-safe, and allocates nothing.
        unsafe { command.pre_exec(prepare) };
        let child = command.spawn()?;
        drop(theirs);
        let process = VmProcess {
            pid: child.id(),
            run,
            child,
            channel: ours,
        };
        process
            .channel
            .send_with_fds(&ToVm::Launch(Box::new(launch.clone())), fds)?;
        let reader = process.channel.try_clone()?;
        std::thread::Builder::new()
            .name("vm-channel".into())
            .spawn(move || read_vm(reader, run, events))?;
        Ok(process)
    }

    pub fn send(&self, message: &ToVm) -> bool {
        self.channel.send(message).is_ok()
    }

    /// Sends `message` with descriptors the process takes over.
    pub fn send_with_fds(&self, message: &ToVm, fds: &[RawFd]) -> bool {
        self.channel.send_with_fds(message, fds).is_ok()
    }

    /// Ends the process at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// The exit status, if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to end.
    pub fn wait(&mut self) -> Option<ExitStatus> {
        self.child.wait().ok()
    }

    /// The CPU time the process has used so far, its vCPU threads
    /// included (user and system time); `None` once it is gone.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        cpu_time_of(&stat)
    }
}

/// utime + stime of a `/proc/<pid>/stat` line. The fields are counted
/// after the command name, which is in parentheses and may itself hold
/// spaces and parentheses (a VM process is named `vmd: <vm name>`).
fn cpu_time_of(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // state is field 3 of proc(5); utime and stime are 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    let total = utime + stime;
    Some(
        Duration::from_secs(total / ticks)
            + Duration::from_nanos(total % ticks * 1_000_000_000 / ticks),
    )
}

/// Marks every descriptor above `last` close-on-exec, so that the VM
/// process starts with its standard streams and its channel only: a
/// descriptor vmd inherited without close-on-exec (from a service
/// manager, a shell) must not reach a guest's process. Marking rather
/// than closing keeps the pipe through which the standard library
/// reports a failed exec. Runs between fork and exec: system calls only.
fn close_on_exec_above(last: RawFd) {
    let first = last as libc::c_uint + 1;
    // SAFETY: close_range only changes descriptor flags of this process.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked == 0 {
        return;
    }
    // Kernels before 5.11: one descriptor at a time, up to the limit.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as RawFd
    } else {
        1024
    };
    for fd in first as RawFd..limit {
        // SAFETY: F_SETFD on a descriptor that may not exist only fails.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

fn proto_channel_fd() -> RawFd {
    vmm::process::CHANNEL_FD
}

fn read_vm(channel: Channel, run: u64, events: Sender<Event>) {
    let malformed = loop {
        match channel.recv::<FromVm>() {
            Ok(Some(received)) => {
                let event = Event::FromVm {
                    run,
                    message: received.message,
                    fds: received.fds,
                };
                if events.send(event).is_err() {
                    return;
                }
            }
            // What frame::recv calls a packet that is not a message.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => break Some(e.to_string()),
            // The end of the channel, or of the process behind it.
            Ok(None) | Err(_) => break None,
        }
    };
    let _ = events.send(Event::VmChannelClosed { run, malformed });
}

/// The descriptors of a launch, in the order [`VmLaunch::fds`] names them.
pub struct LaunchDescriptors {
    pub owned: Vec<OwnedFd>,
}

impl LaunchDescriptors {
    pub fn new() -> Self {
        LaunchDescriptors { owned: Vec::new() }
    }

    /// Adds a descriptor and returns its index.
    pub fn push(&mut self, fd: OwnedFd) -> u8 {
        self.owned.push(fd);
        (self.owned.len() - 1) as u8
    }

    pub fn raw(&self) -> Vec<RawFd> {
        self.owned.iter().map(|f| f.as_raw_fd()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_fields_after_the_command_name() {
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let stat = format!(
            "4242 (vmd: a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 {} {} 0 0 20 0 3",
            3 * hz,
            hz / 2
        );
        assert_eq!(cpu_time_of(&stat), Some(Duration::from_millis(3500)));
        assert_eq!(cpu_time_of("4242 (vmd: a) S 1"), None);
    }
}
