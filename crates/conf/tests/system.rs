//! `conf::load` and `conf::check` on the real machine: files, symlinks,
//! qcow2 detection and the system's user database (root only, which every
//! Linux system has).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use conf::{Define, LoadOptions, Origin, Owner, SocketOwner};
use proto::control::DiskFormat;

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("conf-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(fs::canonicalize(&dir).unwrap())
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.path(name);
        fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn explicit() -> LoadOptions {
    LoadOptions {
        origin: Origin::Explicit,
        ..LoadOptions::default()
    }
}

#[test]
fn missing_default_file_is_an_empty_configuration() {
    let dir = Scratch::new("default");
    let path = dir.path("vm.conf");
    let loaded = conf::load(&path, &LoadOptions::default()).unwrap();
    assert!(loaded.config.vms.is_empty() && loaded.config.switches.is_empty());
    assert!(loaded.warnings.is_empty());
    let check = conf::check(&path, &LoadOptions::default());
    assert_eq!(check.lines, ["configuration OK"]);
    assert_eq!(check.exit_code(), 0);
    assert_eq!(conf::DEFAULT_PATH, "/etc/vm.conf");
}

#[test]
fn missing_explicit_file_is_a_warning_when_loading_and_fails_a_check() {
    let dir = Scratch::new("explicit");
    let path = dir.path("nope.conf");
    let loaded = conf::load(&path, &explicit()).unwrap();
    assert!(loaded.config.vms.is_empty());
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    let message = format!("failed to open {path}: No such file or directory");
    assert_eq!(warnings, std::slice::from_ref(&message));
    let check = conf::check(&path, &explicit());
    assert_eq!(check.lines, [message]);
    assert!(!check.ok);
}

#[test]
fn a_file_that_cannot_be_read_is_an_error() {
    // Tests may run as root, where permissions do not stop a read; a
    // directory fails for everyone.
    let dir = Scratch::new("unreadable");
    let path = dir.path("");
    let path = path.trim_end_matches('/');
    let rejected = conf::load(path, &explicit()).unwrap_err();
    assert_eq!(
        rejected.error_lines(),
        [format!("failed to open {path}: Is a directory")]
    );
    let check = conf::check(path, &LoadOptions::default());
    assert_eq!(
        check.lines,
        [format!("failed to open {path}: Is a directory")]
    );
    assert_eq!(check.exit_code(), 1);
}

#[test]
fn images_are_resolved_and_detected_on_disk() {
    let dir = Scratch::new("images");
    let raw = dir.write("disk.qcow2", b"plain bytes");
    let qcow = dir.write("disk.img", b"QFI\xfb\0\0\0\x03rest of header");
    let kernel = dir.write("bsd", b"kernel");
    symlink(&kernel, dir.path("bsd.link")).unwrap();
    let dotted = format!(
        "{}/../{}/disk.qcow2",
        dir.0.display(),
        dir.0.file_name().unwrap().to_str().unwrap()
    );
    let config = dir.write(
        "vm.conf",
        format!(
            "vm \"v\" {{\n\tboot \"{link}\"\n\tdisk \"{dot}\"\n\tdisk \"{qcow}\"\n\tdisk \"{raw}\" format qcow2\n\tcdrom \"relative.iso\"\n}}\n",
            link = dir.path("bsd.link"),
            dot = dotted,
        ),
    );
    let loaded = conf::load(&config, &explicit()).unwrap();
    let vm = &loaded.config.vms[0];
    // realpath: symlinks and `..` resolved.
    assert_eq!(vm.boot.as_deref(), Some(kernel.as_str()));
    let disks: Vec<_> = vm
        .disks
        .iter()
        .map(|d| (d.path.as_str(), d.format))
        .collect();
    assert_eq!(
        disks,
        [
            // Only the contents decide, not the extension.
            (raw.as_str(), DiskFormat::Raw),
            (qcow.as_str(), DiskFormat::Qcow2),
            (raw.as_str(), DiskFormat::Qcow2),
        ]
    );
    // The CD-ROM path is kept as written.
    assert_eq!(vm.cdrom.as_deref(), Some("relative.iso"));
}

#[test]
fn missing_images_on_disk() {
    let dir = Scratch::new("missing");
    let config = dir.write(
        "vm.conf",
        "vm \"v\" {\n\tdisk /nonexistent/a.img\n}\nvm \"w\" {\n\tboot /nonexistent/bsd\n}\n",
    );
    let rejected = conf::load(&config, &explicit()).unwrap_err();
    assert_eq!(
        rejected.error_lines(),
        [
            "disk /nonexistent/a.img: No such file or directory".to_string(),
            format!("{config}:2: failed to parse disks: /nonexistent/a.img"),
            format!("{config}:5: kernel path not found: No such file or directory"),
        ]
    );
}

#[test]
fn includes_on_disk_with_defines() {
    let dir = Scratch::new("include");
    let disk = dir.write("a.img", b"raw");
    let inner = dir.write(
        "inner.conf",
        "vm \"inner\" {\n\tdisk $img\n\towner root:root\n}\n",
    );
    let main = dir.write(
        "vm.conf",
        format!("img = \"/overridden\"\ninclude \"{inner}\"\nsocket owner root\nbroken\n"),
    );
    let options = LoadOptions {
        defines: vec![Define::parse(&format!("img={disk}")).unwrap()],
        ..explicit()
    };
    let rejected = conf::load(&main, &options).unwrap_err();
    assert_eq!(rejected.error_lines(), [format!("{main}:4: syntax error")]);

    fs::write(&main, format!("include \"{inner}\"\nsocket owner root\n")).unwrap();
    let loaded = conf::load(&main, &options).unwrap();
    let vm = &loaded.config.vms[0];
    assert_eq!(vm.disks[0].path, disk);
    assert_eq!(
        vm.owner,
        Owner {
            uid: Some(0),
            gid: Some(0)
        }
    );
    assert_eq!(
        loaded.config.settings().socket_owner,
        SocketOwner { uid: 0, gid: 0 }
    );
    assert!(loaded.warnings.is_empty());
    assert_eq!(conf::check(&main, &options).lines, ["configuration OK"]);
}

#[test]
fn unknown_system_users_and_groups() {
    let dir = Scratch::new("users");
    let config = dir.write(
        "vm.conf",
        "socket owner no-such-user-xyz\nsocket owner :no-such-group-xyz\n",
    );
    assert_eq!(
        conf::load(&config, &explicit()).unwrap_err().error_lines(),
        [
            format!("{config}:1: failed to get user: no-such-user-xyz"),
            format!("{config}:2: failed to get group: no-such-group-xyz"),
        ]
    );
}
