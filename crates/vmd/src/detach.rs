//! Detaching from the terminal, the way daemon(3) does, except that the
//! process that was started exits only once the daemon is ready.
//!
//! daemon(3) lets the parent exit at once. A service manager waiting for
//! that exit (systemd's `Type=forking`), or a script that runs `vmctl`
//! right after `vmd`, could then reach the control socket before the
//! daemon has taken it over from its parent (see `control::relisten`),
//! and a second vmd would be told the pid of a process that no longer
//! exists. Here the parent waits on a pipe for the child's word that it
//! serves the socket, and passes on the child's failure if it has one.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::unistd::{ForkResult, fork, pipe, setsid};

/// The child's side: tells the waiting parent how start-up ended.
pub struct Readiness(std::fs::File);

impl Readiness {
    /// The daemon serves its socket: the parent exits 0.
    pub fn ready(mut self) {
        let _ = self.0.write_all(b"\0");
    }

    /// Start-up failed: the parent prints `message` and exits 1.
    pub fn failed(mut self, message: &str) {
        let _ = self.0.write_all(message.as_bytes());
    }
}

/// Forks; the parent waits for the child's readiness and exits with its
/// outcome (never returning), the child becomes a session leader with
/// `/` as its directory and `/dev/null` as its standard streams.
///
/// Call only while the process has one thread: the child of a
/// multi-threaded fork may hold locks no thread will release.
pub fn detach() -> std::io::Result<Readiness> {
    let (read_end, write_end) = pipe()?;
    // SAFETY: vmd has a single thread when it detaches (see above), so the
    // child may go on running Rust code freely.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {
            drop(write_end);
            std::process::exit(wait_for_child(read_end))
        }
        ForkResult::Child => {
            drop(read_end);
            setsid()?;
            std::env::set_current_dir("/")?;
            redirect_standard_streams()?;
            Ok(Readiness(std::fs::File::from(write_end)))
        }
    }
}

/// The parent's exit status: 0 once the child says it is ready; 1, with
/// the child's message, when it failed or died before saying anything.
fn wait_for_child(read_end: OwnedFd) -> i32 {
    let mut word = Vec::new();
    let _ = std::fs::File::from(read_end).read_to_end(&mut word);
    match word.as_slice() {
        [0, ..] => 0,
        [] => {
            eprintln!("vmd: the daemon ended during start-up (see the system log)");
            1
        }
        message => {
            eprintln!("vmd: {}", String::from_utf8_lossy(message));
            1
        }
    }
}

fn redirect_standard_streams() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}
