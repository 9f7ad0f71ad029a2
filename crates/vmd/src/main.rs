//! vmd: runs virtual machines on KVM and answers vmctl on its control socket.
//!
//! `vmd [-dnv] [-D macro=value] [-f file]` (vmd(8)). The same binary is
//! re-executed, with a private first argument, as each VM's process.

mod client;
mod cloud_init;
mod config;
mod control;
mod daemon;
mod detach;
mod events;
mod incoming;
mod instances;
mod kernel_files;
mod logging;
#[cfg(test)]
mod man_page;
mod network;
mod open_as;
mod params;
mod permissions;
mod pty;
mod registry;
mod sd_notify;
mod strerror;
mod vmproc;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::mpsc;

use getopt::{Getopt, Opt};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::events::Event;
use crate::logging::Destination;
use crate::strerror::strerror;
use crate::vmproc::VM_PROCESS_ARG;

const USAGE: &str = "usage: vmd [-dnv] [-D macro=value] [-f file]";
/// The getopt option string; vmd(8) is checked against it.
const OPTIONS: &str = "dnvD:f:";
const DEFAULT_CONFIG: &str = "/etc/vm.conf";
/// The user VM processes run as.
const VM_USER: &str = "_vmd";
/// Where VM processes are locked in: an empty directory.
const EMPTY_ROOT: &str = "/var/empty";

/// The command line, parsed.
#[derive(Debug, Default)]
struct Options {
    foreground: bool,
    check_only: bool,
    verbosity: u8,
    defines: Vec<conf::Define>,
    config: Option<PathBuf>,
}

fn parse_options(args: &[String]) -> Result<Options, ()> {
    let mut options = Options::default();
    let mut getopt = Getopt::new(args, OPTIONS);
    for opt in getopt.by_ref() {
        match opt {
            Opt::Found('d', _) => options.foreground = true,
            Opt::Found('n', _) => options.check_only = true,
            Opt::Found('v', _) => options.verbosity = options.verbosity.saturating_add(1),
            Opt::Found('D', Some(definition)) => match conf::Define::parse(&definition) {
                Ok(define) => options.defines.push(define),
                Err(e) => eprintln!("{e}"),
            },
            Opt::Found('f', Some(file)) => options.config = Some(PathBuf::from(file)),
            _ => return Err(()),
        }
    }
    if !getopt.operands().is_empty() {
        return Err(());
    }
    Ok(options)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(VM_PROCESS_ARG) {
        std::process::exit(vm_process(&args[2..]));
    }
    let Ok(options) = parse_options(args.get(1..).unwrap_or(&[])) else {
        eprintln!("{USAGE}");
        std::process::exit(1);
    };
    std::process::exit(daemon_main(options));
}

/// Runs as one VM's process (started by the daemon, never by a user).
fn vm_process(args: &[String]) -> i32 {
    let destination = match args.first().map(String::as_str) {
        Some("stderr") => Destination::Stderr,
        _ => Destination::Syslog,
    };
    logging::init(destination, 0);
    // SAFETY: the daemon started this process with the channel at that
    // descriptor, and nothing else here uses it.
    let channel = unsafe { vmm::process::inherited_channel() };
    vmm::process::run(
        channel,
        vmm::process::ProcessHooks {
            set_verbosity: Box::new(logging::set_verbosity),
            set_title: Box::new(|name| set_thread_name(&format!("vmd: {name}"))),
        },
    )
}

/// The unprivileged user VM processes become (vmd(8), "DIAGNOSTICS": `unknown user
/// _vmd` when it is missing) and the empty directory they are locked into,
/// created if the system lacks it. The message says how to make the user,
/// as `make install` and the package do (dist/postinst).
fn sandbox_identity() -> Result<proto::vmchannel::SandboxIdentity, String> {
    use std::os::unix::fs::PermissionsExt;
    let user = nix::unistd::User::from_name(VM_USER)
        .ok()
        .flatten()
        .ok_or_else(|| {
            format!(
                "unknown user {VM_USER}: create it with `useradd --system --user-group \
                 --home-dir {EMPTY_ROOT} --no-create-home --shell /usr/sbin/nologin {VM_USER}` \
                 (`make install` and the Debian package do)"
            )
        })?;
    let root = std::path::Path::new(EMPTY_ROOT);
    if !root.is_dir() {
        std::fs::create_dir_all(root).map_err(|e| format!("{EMPTY_ROOT}: {e}"))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{EMPTY_ROOT}: {e}"))?;
    }
    Ok(proto::vmchannel::SandboxIdentity {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        root: EMPTY_ROOT.to_string(),
    })
}

/// The hypervisor device.
const KVM_DEVICE: &str = "/dev/kvm";
/// `KVM_GET_API_VERSION`, `_IO(KVMIO, 0x00)` in <linux/kvm.h>.
const KVM_GET_API_VERSION: libc::c_ulong = 0xae00;
/// The only KVM API version there has ever been (`KVM_API_VERSION`).
const KVM_API_VERSION: libc::c_int = 12;

/// Opens /dev/kvm and makes sure it is KVM, so that a host without it is
/// told at start-up, with what to do, rather than at the first `vmctl
/// start` with an ioctl error.
fn open_kvm() -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let kvm = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(KVM_DEVICE)
        .map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => {
                    ": load kvm_intel or kvm_amd (`modprobe kvm_intel` or `modprobe kvm_amd`) \
                     and enable virtualization in the firmware, or nested virtualization \
                     if this host is a VM"
                }
                Some(libc::EACCES | libc::EPERM) => {
                    ": access to the device is denied (a container's device policy?)"
                }
                _ => "",
            };
            let cause = e.raw_os_error().map_or(e.to_string(), strerror);
            format!("{KVM_DEVICE}: {cause}{hint}")
        })?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns a
    // number; on a device that is not KVM it fails with an errno (ENOTTY),
    // which is what this checks.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if version < 0 {
        return Err(format!(
            "{KVM_DEVICE}: not a KVM device (KVM_GET_API_VERSION: {})",
            strerror(nix::errno::Errno::last_raw())
        ));
    }
    if version != KVM_API_VERSION {
        return Err(format!(
            "{KVM_DEVICE}: KVM API version {version}, vmd needs {KVM_API_VERSION}"
        ));
    }
    Ok(kvm)
}

fn set_thread_name(title: &str) {
    // The kernel keeps 15 bytes of a task name.
    let short: String = title.chars().take(15).collect();
    if let Ok(name) = std::ffi::CString::new(short) {
        // SAFETY: PR_SET_NAME with a NUL-terminated string.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    }
}

fn daemon_main(options: Options) -> i32 {
    let source = config::ConfigSource {
        path: options
            .config
            .as_ref()
            .map_or(DEFAULT_CONFIG.to_string(), |p| p.display().to_string()),
        origin: if options.config.is_some() {
            conf::Origin::Explicit
        } else {
            conf::Origin::Default
        },
        defines: options.defines.clone(),
    };
    if options.check_only {
        let outcome = conf::check(&source.path, &source.options(1));
        for line in &outcome.lines {
            eprintln!("{line}");
        }
        return outcome.exit_code();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("vmd: need root privileges");
        return 1;
    }
    // Start-up failures are reported before vmd detaches, so that they
    // reach the terminal that started it. Another daemon on the socket is
    // looked for first: a second vmd must change nothing.
    let socket_path = proto::client::socket_path();
    if let Err(occupied) = control::ensure_vacant(&socket_path) {
        eprintln!("vmd: {}", occupied.message(&socket_path));
        return 1;
    }
    let sandbox = match sandbox_identity() {
        Ok(identity) => identity,
        Err(message) => {
            eprintln!("vmd: {message}");
            return 1;
        }
    };
    let kvm = match open_kvm() {
        Ok(f) => f,
        Err(message) => {
            eprintln!("vmd: {message}");
            return 1;
        }
    };
    let loaded = match source.load(1) {
        Ok(loaded) => loaded,
        Err(rejected) => {
            for line in rejected.error_lines() {
                eprintln!("{line}");
            }
            return 1;
        }
    };

    // The socket listens before vmd detaches, so a service manager that
    // waits for the detach (systemd's Type=forking) finds it ready.
    let listener = match control::listen_at(&socket_path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("vmd: {e}");
            return 1;
        }
        Err(e) => {
            eprintln!("vmd: control socket {}: {e}", socket_path.display());
            return 1;
        }
    };
    // Detached, the process started exits once the daemon serves the
    // socket (see detach.rs).
    let readiness = if options.foreground {
        None
    } else {
        match detach::detach() {
            Ok(readiness) => Some(readiness),
            Err(e) => {
                eprintln!("vmd: detach: {e}");
                return 1;
            }
        }
    };
    logging::init(
        if options.foreground {
            Destination::Stderr
        } else {
            Destination::Syslog
        },
        options.verbosity,
    );
    if readiness.is_some()
        && let Err(e) = control::relisten(&listener)
    {
        return startup_failed(
            readiness,
            format!("control socket {}: {e}", socket_path.display()),
        );
    }

    // A client that goes away must not kill the daemon.
    // SAFETY: ignoring SIGPIPE has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // SAFETY: nor has ignoring SIGUSR1.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
    let (events_tx, events_rx) = mpsc::channel();
    let mut signals = match Signals::new([SIGCHLD, SIGHUP, SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => return startup_failed(readiness, format!("signals: {e}")),
    };
    {
        let tx = events_tx.clone();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                let event = match signal {
                    SIGCHLD => Event::ChildExited,
                    SIGHUP => Event::Reload,
                    _ => Event::Shutdown,
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
    }
    if let Err(e) = control::spawn_acceptor(listener, events_tx.clone()) {
        return startup_failed(readiness, format!("control: {e}"));
    }
    if let Some(readiness) = readiness {
        readiness.ready();
    }
    // Under systemd (Type=notify, `vmd -d`) the service is started once
    // the socket serves; without NOTIFY_SOCKET this does nothing. The
    // variable stays set (removing it is unsafe with threads running);
    // VM processes never send to it.
    if let Err(e) = sd_notify::ready() {
        tracing::warn!("sd_notify: {e}");
    }
    tracing::info!("startup");
    let mut daemon = daemon::Daemon::new(
        events_tx,
        kvm,
        vmproc::SpawnOptions {
            foreground: options.foreground,
        },
        options.verbosity,
        socket_path,
        source,
        sandbox,
    );
    daemon.apply(loaded, false);
    daemon.run(events_rx);
    0
}

/// Logs why start-up failed after vmd detached and tells the process
/// that started it, which prints the reason and exits 1.
fn startup_failed(readiness: Option<detach::Readiness>, message: String) -> i32 {
    tracing::error!("{message}");
    if let Some(readiness) = readiness {
        readiness.failed(&message);
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options() {
        let o = parse_options(&words("-dvv -D a=b -f /x.conf")).unwrap();
        assert!(o.foreground);
        assert_eq!(o.verbosity, 2);
        assert_eq!(o.defines.len(), 1);
        assert_eq!(o.config, Some(PathBuf::from("/x.conf")));
        assert!(parse_options(&words("-x")).is_err());
        assert!(parse_options(&words("extra")).is_err());
        assert!(parse_options(&words("-f")).is_err());
    }
}
