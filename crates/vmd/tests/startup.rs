//! What vmd says when it cannot start, before it detaches, so that the
//! terminal that started it sees why: the user `_vmd` missing, /dev/kvm
//! missing or not KVM, another vmd on its control socket. And that a
//! socket left by a dead vmd is taken over. Needs root: the host's user
//! database and devices are changed only inside private mount namespaces
//! (`unshare --mount`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::daemon::{TestDaemon, binary, processes_on, vmctl_at};
use testkit::tmp::TempDir;

/// Runs `command` (vmd, or a launcher that ends by exec'ing vmd) and
/// returns what it printed once it exits; a vmd still running after ten
/// seconds did not refuse to start, and is killed.
fn run_to_exit(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("vmd output");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child (SIGTERM: vmd cleans up after itself).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("vmd output");
    panic!(
        "vmd did not refuse to start; it ran until killed. stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `vmd -d -f <empty file>` on the socket `dir/vmd.sock`, after the shell
/// commands `setup` have run in a private mount namespace.
fn vmd_in_namespace(dir: &TempDir, setup: &str) -> Output {
    let config = dir.join("vm.conf");
    std::fs::write(&config, "").unwrap();
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(format!("{setup}\nexec \"$0\" -d -f \"$1\""))
        .arg(binary("vmd"))
        .arg(&config)
        .env("VMD_SOCKET", dir.join("vmd.sock"));
    run_to_exit(command)
}

/// vmd refused with exactly `expected` on stderr, exit status 1, and left
/// no socket behind.
fn assert_refused(out: &Output, dir: &TempDir, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, format!("{expected}\n"));
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert!(
        !dir.join("vmd.sock").exists(),
        "a vmd that cannot start made its socket"
    );
}

#[test]
fn a_missing_vmd_user_is_named_with_how_to_create_it() {
    testkit::needs!(root);
    let dir = TempDir::new("startup-user");
    let passwd: String = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("_vmd:"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(dir.join("passwd"), passwd).unwrap();
    let out = vmd_in_namespace(
        &dir,
        &format!(
            "mount --bind '{}' /etc/passwd",
            dir.join("passwd").display()
        ),
    );
    assert_refused(
        &out,
        &dir,
        "vmd: unknown user _vmd: create it with `useradd --system --user-group \
         --home-dir /var/empty --no-create-home --shell /usr/sbin/nologin _vmd` \
         (`make install` and the Debian package do)",
    );
}

#[test]
fn a_missing_kvm_device_is_named_with_the_module_to_load() {
    testkit::needs!(root);
    let dir = TempDir::new("startup-nokvm");
    // An empty /dev: no /dev/kvm, as on a host without the KVM modules.
    let out = vmd_in_namespace(&dir, "mount -t tmpfs -o mode=0755 vmd-test-dev /dev");
    assert_refused(
        &out,
        &dir,
        "vmd: /dev/kvm: No such file or directory: load kvm_intel or kvm_amd \
         (`modprobe kvm_intel` or `modprobe kvm_amd`) and enable virtualization in the \
         firmware, or nested virtualization if this host is a VM",
    );
}

#[test]
fn a_kvm_device_that_is_not_kvm_is_named() {
    testkit::needs!(root);
    let dir = TempDir::new("startup-notkvm");
    let out = vmd_in_namespace(&dir, "mount --bind /dev/null /dev/kvm");
    assert_refused(
        &out,
        &dir,
        "vmd: /dev/kvm: not a KVM device (KVM_GET_API_VERSION: Inappropriate ioctl for device)",
    );
}

fn second_vmd(socket: &Path, dir: &TempDir) -> Output {
    let config = dir.join("vm.conf");
    std::fs::write(&config, "").unwrap();
    let mut command = Command::new(binary("vmd"));
    command
        .args(["-d", "-f"])
        .arg(&config)
        .env("VMD_SOCKET", socket);
    run_to_exit(command)
}

fn another_vmd_message(socket: &Path, pid: u32) -> String {
    format!(
        "vmd: {}: another vmd is running (pid {pid}): stop it first, or give this one a \
         socket of its own with VMD_SOCKET\n",
        socket.display()
    )
}

#[test]
fn a_second_vmd_on_a_live_socket_refuses_and_changes_nothing() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&[
        "start",
        "-b",
        testkit::daemon::SEABIOS,
        "-m",
        "64M",
        "first",
    ]);
    let before = std::fs::metadata(&daemon.socket).unwrap();

    let dir = TempDir::new("startup-second");
    let out = second_vmd(&daemon.socket, &dir);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        another_vmd_message(&daemon.socket, daemon.pid())
    );
    assert_eq!(out.status.code(), Some(1));

    // The same socket file, still served by the first daemon with its VM.
    let after = std::fs::metadata(&daemon.socket).expect("the first daemon's socket is gone");
    assert_eq!((after.dev(), after.ino()), (before.dev(), before.ino()));
    assert!(daemon.status_row("first").is_some(), "{}", daemon.log());
}

#[test]
fn a_socket_left_by_a_killed_vmd_is_taken_over() {
    testkit::needs!(root, kvm);
    let mut daemon = TestDaemon::start();
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGKILL) };
    daemon.terminate();
    assert!(daemon.socket.exists(), "a killed vmd leaves its socket");

    let dir = TempDir::new("startup-stale");
    let config = dir.join("vm.conf");
    std::fs::write(&config, "").unwrap();
    let log = std::fs::File::create(dir.join("vmd.log")).unwrap();
    let mut second = Command::new(binary("vmd"))
        .args(["-d", "-f"])
        .arg(&config)
        .env("VMD_SOCKET", &daemon.socket)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start vmd");
    let deadline = Instant::now() + Duration::from_secs(10);
    let answered = loop {
        let out = vmctl_at(&daemon.socket, &["status"]);
        if String::from_utf8_lossy(&out.stdout).starts_with("   ID   PID") {
            break true;
        }
        if Instant::now() > deadline || second.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let status = second.wait().unwrap();
    assert!(
        answered,
        "the new vmd did not take the stale socket over:\n{}",
        std::fs::read_to_string(dir.join("vmd.log")).unwrap_or_default()
    );
    assert!(status.success());
}

/// The vmd that detached on a socket, stopped when the test ends.
struct Detached<'a>(&'a Path);

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        for pid in processes_on(self.0) {
            // SAFETY: a process started by this test (it has the test's
            // own socket in its environment).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

#[test]
fn a_detached_vmd_is_named_by_its_own_pid() {
    testkit::needs!(root, kvm);
    let dir = TempDir::new("startup-detached");
    let socket = dir.join("vmd.sock");
    let config = dir.join("vm.conf");
    std::fs::write(&config, "").unwrap();
    // Without -d: vmd detaches once its socket listens; the process we
    // start exits, the daemon is its child.
    let launched = Command::new(binary("vmd"))
        .arg("-f")
        .arg(&config)
        .env("VMD_SOCKET", &socket)
        .stdin(Stdio::null())
        .output()
        .expect("start vmd");
    let _daemon = Detached(&socket);
    assert!(
        launched.status.success(),
        "{}",
        String::from_utf8_lossy(&launched.stderr)
    );
    // The daemon, not the process that started it (and first listened),
    // which has exited.
    let running = processes_on(&socket);
    assert_eq!(running.len(), 1, "one daemon: {running:?}");

    let out = second_vmd(&socket, &dir);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        another_vmd_message(&socket, running[0] as u32)
    );
    assert_eq!(out.status.code(), Some(1));
}
