//! Attacks by a local user allowed to create instances of a template
//! (`allow instance { disk, cdrom, boot }`), made as a hostile client
//! makes them: straight on the control socket, skipping every check
//! vmctl does on its side. Each asks vmd, which runs as root, to open a
//! file the user could not open, or to block on one. Each must be refused
//! with the reason, and the daemon must go on answering root.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use proto::ErrorCode;
use proto::control::{DiskFormat, DiskSpec, Request, Response, StartRequest, VmRef};
use proto::error::Failed;
use proto::frame;
use testkit::daemon::TestDaemon;
use testkit::tmp::TempDir;
use testkit::users::ThrowawayUser;

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// The stage: a template the user may instantiate, a root-only secret, a
/// world-readable file in a directory only root may enter, the user's
/// own directory, and a daemon whose socket the user may use.
struct Stage {
    _dir: TempDir,
    root: PathBuf,
    user: ThrowawayUser,
    daemon: TestDaemon,
}

impl Stage {
    fn new() -> Stage {
        let user = ThrowawayUser::create("vmdatk");
        let dir = TempDir::new("hostile");
        let root = dir.path().to_path_buf();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(root.join("secret"), b"root's secret\n").unwrap();
        std::fs::set_permissions(root.join("secret"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let closed = root.join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::write(closed.join("readable.iso"), vec![0u8; 64 << 10]).unwrap();
        std::fs::set_permissions(
            closed.join("readable.iso"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let home = root.join("home");
        std::fs::create_dir(&home).unwrap();
        user.chown(&home);
        let config = root.join("vm.conf");
        std::fs::write(
            &config,
            format!(
                "socket owner :{name}\n\
                 vm \"tmpl\" {{\n    disable\n    boot \"{BIOS}\"\n    memory 64M\n    \
                 allow instance {{ owner {name}, disk, cdrom, boot }}\n}}\n",
                name = user.name
            ),
        )
        .unwrap();
        let daemon = TestDaemon::start_with(&["-f", config.to_str().unwrap()]);
        daemon.wait_for_log("startup", Duration::from_secs(5));
        Stage {
            _dir: dir,
            root,
            user,
            daemon,
        }
    }

    fn home(&self, name: &str) -> PathBuf {
        self.root.join("home").join(name)
    }

    /// A file of the user's, `size` bytes.
    fn users_file(&self, name: &str, size: usize) -> PathBuf {
        let path = self.home(name);
        std::fs::write(&path, vec![0u8; size]).unwrap();
        self.user.chown(&path);
        path
    }

    /// `vmctl start -t tmpl NAME ...` as the user, on the socket; the
    /// failure vmd answered and how long it took.
    fn start_instance(&self, name: &str, request: StartRequest) -> (Failed, Duration) {
        let sock = self.user.connect(&self.daemon.socket);
        let request = StartRequest {
            target: Some(VmRef::Name(name.into())),
            instance_of: Some("tmpl".into()),
            ..request
        };
        let started = Instant::now();
        frame::send(sock.as_fd(), &Request::Start(request), &[]).unwrap();
        let failed = start_reply(&sock);
        (failed, started.elapsed())
    }

    /// Root still gets an answer, at once.
    fn assert_root_answered(&self) {
        let started = Instant::now();
        let out = self.daemon.vmctl(&["status"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("   ID   PID"),
            "{}",
            self.daemon.log()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

fn start_reply(sock: &OwnedFd) -> Failed {
    nix::sys::socket::setsockopt(
        sock,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(30, 0),
    )
    .unwrap();
    loop {
        let reply = frame::recv::<Response>(sock.as_fd())
            .expect("an answer")
            .expect("an answer before the end");
        match reply.message {
            Response::Warning(_) => continue,
            Response::Start(Err(failed)) => return failed,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

fn disk(path: &Path, format: DiskFormat) -> DiskSpec {
    DiskSpec {
        path: path.display().to_string(),
        format,
    }
}

fn qemu_img_create_overlay(top: &Path, backing: &Path) {
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-u", "-b"])
        .arg(backing)
        .args(["-F", "raw"])
        .arg(top)
        .arg("1M")
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
}

#[test]
fn a_backing_file_the_user_cannot_read_is_not_opened_for_them() {
    testkit::needs!(root, kvm);
    let stage = Stage::new();
    let secret = stage.root.join("secret");
    let overlay = stage.home("overlay.qcow2");
    qemu_img_create_overlay(&overlay, &secret);
    stage.user.chown(&overlay);
    let (failed, _) = stage.start_instance(
        "chain",
        StartRequest {
            disks: vec![disk(&overlay, DiskFormat::Qcow2)],
            ..StartRequest::default()
        },
    );
    assert_eq!(
        failed,
        Failed::because(
            ErrorCode::DISK_MISSING,
            format!(
                "{}: backing file: {}: Permission denied",
                overlay.display(),
                secret.display()
            )
        )
    );
    stage.assert_root_answered();
}

#[test]
fn a_symlink_to_a_root_only_file_is_opened_as_the_user() {
    testkit::needs!(root, kvm);
    let stage = Stage::new();
    let link = stage.home("disk.img");
    std::os::unix::fs::symlink(stage.root.join("secret"), &link).unwrap();
    let (failed, _) = stage.start_instance(
        "link",
        StartRequest {
            disks: vec![disk(&link, DiskFormat::Raw)],
            ..StartRequest::default()
        },
    );
    assert_eq!(
        failed,
        Failed::because(
            ErrorCode::EPERM,
            format!("{}: Permission denied", link.display())
        )
    );
    stage.assert_root_answered();
}

#[test]
fn a_readable_file_in_a_directory_the_user_cannot_enter_is_refused() {
    testkit::needs!(root, kvm);
    let stage = Stage::new();
    let hidden = stage.root.join("closed").join("readable.iso");
    let (failed, _) = stage.start_instance(
        "peek",
        StartRequest {
            cdrom: Some(hidden.display().to_string()),
            ..StartRequest::default()
        },
    );
    assert_eq!(
        failed,
        Failed::because(
            ErrorCode::EPERM,
            format!("{}: Permission denied", hidden.display())
        )
    );
    stage.assert_root_answered();
}

#[test]
fn a_fifo_as_any_kind_of_image_is_refused_without_blocking() {
    testkit::needs!(root, kvm);
    let stage = Stage::new();
    let pipe = stage.home("pipe");
    fifo(&pipe);
    stage.user.chown(&pipe);
    let overlay = stage.home("over-fifo.qcow2");
    qemu_img_create_overlay(&overlay, &pipe);
    stage.user.chown(&overlay);
    let kinds: [(&str, StartRequest, Failed); 4] = [
        (
            "disk",
            StartRequest {
                disks: vec![disk(&pipe, DiskFormat::Raw)],
                ..StartRequest::default()
            },
            Failed::because(
                ErrorCode::DISK_MISSING,
                format!(
                    "{}: a FIFO, not a regular file or a block device",
                    pipe.display()
                ),
            ),
        ),
        (
            "backing",
            StartRequest {
                disks: vec![disk(&overlay, DiskFormat::Qcow2)],
                ..StartRequest::default()
            },
            Failed::because(
                ErrorCode::DISK_MISSING,
                format!(
                    "{}: backing file: {}: a FIFO, not a regular file or a block device",
                    overlay.display(),
                    pipe.display()
                ),
            ),
        ),
        (
            "cd",
            StartRequest {
                disks: vec![disk(&stage.users_file("d1.img", 1 << 20), DiskFormat::Raw)],
                cdrom: Some(pipe.display().to_string()),
                ..StartRequest::default()
            },
            Failed::because(
                ErrorCode::CDROM_INVALID,
                format!("{}: a FIFO, not a regular file", pipe.display()),
            ),
        ),
        (
            "initrd",
            StartRequest {
                disks: vec![disk(&stage.users_file("d2.img", 1 << 20), DiskFormat::Raw)],
                initrd: Some(pipe.display().to_string()),
                ..StartRequest::default()
            },
            Failed::because(
                ErrorCode::INITRD_MISSING,
                format!("{}: a FIFO, not a regular file", pipe.display()),
            ),
        ),
    ];
    for (name, request, expected) in kinds {
        let (failed, took) = stage.start_instance(name, request);
        assert_eq!(failed, expected, "{name}");
        assert!(took < Duration::from_secs(5), "{name} took {took:?}");
        stage.assert_root_answered();
    }
}

/// The race of a check by name and a later open by name as root, forced:
/// the user's instance runs with a disk of theirs, the user swaps that
/// name for a symlink to a root-only file, and the guest then resets, so
/// vmd opens the disk again for the next boot. That open is the user's,
/// so it fails; the root-only file is never opened.
#[test]
fn a_disk_swapped_for_a_symlink_while_the_vm_runs_is_not_opened_at_its_reboot() {
    testkit::needs!(root, kvm);
    // A kernel that says it is ready, waits for a key on COM1, then
    // resets the machine.
    let code = testkit::guest::assemble(
        r#"
bits 32
org 0x100000
    mov dx, 0x3f8
    mov esi, ready
.print:
    mov al, [esi]
    test al, al
    jz .wait
    out dx, al
    inc esi
    jmp .print
.wait:
    mov dx, 0x3fd
.poll:
    in al, dx
    test al, 1
    jz .poll
    mov al, 0xfe
    out 0x64, al
    hlt
ready: db "racer ready", 13, 10, 0
"#,
    );
    let stage = Stage::new();
    let kernel = stage.home("racer.bzImage");
    std::fs::write(&kernel, testkit::guest::bzimage_32(&code, 255)).unwrap();
    stage.user.chown(&kernel);
    let disk_path = stage.users_file("racer.img", 1 << 20);
    let kernel_file = std::fs::File::open(&kernel).unwrap();
    let sock = stage.user.connect(&stage.daemon.socket);
    let request = Request::Start(StartRequest {
        target: Some(VmRef::Name("racer".into())),
        instance_of: Some("tmpl".into()),
        kernel: Some(kernel.display().to_string()),
        disks: vec![disk(&disk_path, DiskFormat::Raw)],
        ..StartRequest::default()
    });
    use std::os::fd::AsRawFd;
    frame::send(sock.as_fd(), &request, &[kernel_file.as_raw_fd()]).unwrap();
    nix::sys::socket::setsockopt(
        &sock,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(30, 0),
    )
    .unwrap();
    let started = loop {
        match frame::recv::<Response>(sock.as_fd())
            .unwrap()
            .unwrap()
            .message
        {
            Response::Warning(_) => continue,
            other => break other,
        }
    };
    let Response::Start(Ok(started)) = started else {
        panic!(
            "the instance should start: {started:?}\n{}",
            stage.daemon.log()
        );
    };
    let session = stage.daemon.console("racer");
    stage.daemon.wait_for(
        || session.text().contains("racer ready"),
        Duration::from_secs(60),
        "the kernel to be ready",
    );
    // The swap.
    std::fs::remove_file(&disk_path).unwrap();
    let secret = stage.root.join("secret");
    std::os::unix::fs::symlink(&secret, &disk_path).unwrap();
    // A key on the console: the guest resets and its next boot opens the
    // disk again.
    let mut tty = std::fs::OpenOptions::new()
        .write(true)
        .open(&started.tty)
        .unwrap();
    std::io::Write::write_all(&mut tty, b"x").unwrap();
    let ended = || {
        stage
            .daemon
            .status_row("racer")
            .is_some_and(|row| row[7] == "stopped")
    };
    stage
        .daemon
        .wait_for(ended, Duration::from_secs(60), "the relaunch to fail");
    let details = stage.daemon.vmctl(&["status", "-v", "racer"]);
    let details = String::from_utf8_lossy(&details.stdout);
    assert!(
        details.contains(&format!("{}: Permission denied", disk_path.display())),
        "{details}\n{}",
        stage.daemon.log()
    );
    assert_eq!(
        std::fs::read(&secret).unwrap(),
        b"root's secret\n",
        "the root-only file is untouched"
    );
}
