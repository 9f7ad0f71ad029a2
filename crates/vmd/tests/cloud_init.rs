//! The cloud-init volume a real vmd gives a VM (docs/cloud-init.md): the
//! VM process gets one more disk, a sealed memfd holding a FAT volume
//! labelled CIDATA with the VM's meta-data, the user's user-data and key,
//! and a network configuration for its interfaces; vm.conf's files are
//! read when the VM starts, and bad ones stop the start with the reason.

use std::io::{Cursor, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use testkit::daemon::{SEABIOS, TestDaemon};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGNpZGF0YSB0ZXN0IGtleQ test@vmd";
const USER_DATA: &str = "#cloud-config\nruncmd:\n  - echo cidata-marker\n";

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("vmd-cloud-init-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The descriptors of `pid` that are the cloud-init memfd.
fn cidata_fds(pid: u32) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let path = e.ok()?.path();
        let target = std::fs::read_link(&path).ok()?;
        target
            .to_str()?
            .starts_with("/memfd:cidata")
            .then_some(path)
    })
    .collect()
}

/// The cloud-init volume the VM process of `name` holds: its files and
/// label, read back with fatfs from the process's own descriptor, after
/// checking that the descriptor is sealed against writes.
fn volume_of(daemon: &TestDaemon, name: &str) -> (Vec<u8>, Vec<(String, String)>) {
    let pid = daemon.vm_pid(name);
    daemon.wait_for(
        || !cidata_fds(pid).is_empty(),
        Duration::from_secs(10),
        "the VM process to hold its cloud-init volume",
    );
    // The process may hold the memfd more than once (its disk and the
    // lock it keeps on every image): one file, whatever the count.
    let fds = cidata_fds(pid);
    let files: std::collections::BTreeSet<u64> = fds
        .iter()
        .map(|fd| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(fd).unwrap()))
        .collect();
    assert_eq!(files.len(), 1, "one cloud-init volume: {fds:?}");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&fds[0])
        .unwrap();
    // SAFETY: F_GET_SEALS on an open descriptor takes no argument.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    assert_eq!(
        seals & (libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK),
        libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK,
        "the volume is sealed"
    );
    let mut image = Vec::new();
    file.read_to_end(&mut image).unwrap();
    let fs = fatfs::FileSystem::new(Cursor::new(image.clone()), fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.volume_label(), "CIDATA");
    assert_eq!(
        fs.read_volume_label_from_root_dir().unwrap().as_deref(),
        Some("CIDATA")
    );
    let mut files = Vec::new();
    for entry in fs.root_dir().iter() {
        let entry = entry.unwrap();
        let mut text = String::new();
        entry.to_file().read_to_string(&mut text).unwrap();
        files.push((entry.file_name(), text));
    }
    (image, files)
}

fn file<'a>(files: &'a [(String, String)], name: &str) -> &'a str {
    &files
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {files:?}"))
        .1
}

/// The guest MAC of the VM's first interface, from `status -v`.
fn first_mac(daemon: &TestDaemon, name: &str) -> String {
    let out = daemon.vmctl_ok(&["status", "-v", name]);
    let word = out
        .split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .find(|w| w.len() == 17 && w.matches(':').count() == 5)
        .unwrap_or_else(|| panic!("no MAC address in {out}"));
    word.to_ascii_lowercase()
}

#[test]
fn vmctl_start_with_user_data_and_ssh_key() {
    testkit::needs!(root, kvm);
    let scratch = Scratch::new("start");
    let user_data = scratch.write("user-data", USER_DATA);
    let key = scratch.write("key.pub", format!("{KEY}\n"));
    let daemon = TestDaemon::start();
    daemon.start_seabios_vm_ok(
        "ci-web",
        &["-L", "--user-data", &user_data, "--ssh-key", &key],
    );
    let (image, files) = volume_of(&daemon, "ci-web");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["meta-data", "user-data", "network-config"]);
    let seed = cidata::Seed {
        user_data: Some(USER_DATA.into()),
        ssh_key: Some(KEY.into()),
    };
    assert_eq!(
        file(&files, "meta-data"),
        format!(
            "instance-id: \"{}\"\nlocal-hostname: \"ci-web\"\n",
            cidata::instance_id("ci-web", &seed)
        )
    );
    let user = file(&files, "user-data");
    assert!(user.starts_with("Content-Type: multipart/mixed"), "{user}");
    assert!(user.contains(USER_DATA), "{user}");
    assert!(
        user.contains(&format!("ssh_authorized_keys:\n  - '{KEY}'\n")),
        "{user}"
    );
    let mac = first_mac(&daemon, "ci-web");
    assert_eq!(
        file(&files, "network-config"),
        format!(
            "version: 2\nethernets:\n  nic0:\n    match:\n      macaddress: \"{mac}\"\n    dhcp4: true\n"
        )
    );
    // The same VM gets the same bytes: it is what vmd would build now.
    let nics = [cidata::Nic {
        mac: parse_mac(&mac),
        local: true,
    }];
    assert!(image == cidata::build("ci-web", &seed, &nics).unwrap());

    // Cloud-init data describe a new VM: not for one that exists.
    let out = daemon.vmctl(&["start", "-b", SEABIOS, "--user-data", &user_data, "ci-web"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vmctl: start vm command failed: Operation already in progress\n"
    );
    // Nor can it be sent: the stream would lose the volume, and the VM
    // with it. It runs on.
    let out = daemon.vmctl_io(
        &["send", "ci-web"],
        std::process::Stdio::null(),
        std::process::Stdio::null(),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "vmctl: command failed: Operation not supported\n"
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(daemon.status_row("ci-web").unwrap()[7], "running");
    daemon.vmctl_ok(&["stop", "-fw", "ci-web"]);

    // Without cloud-init data, no volume.
    daemon.start_seabios_vm_ok("ci-plain", &[]);
    let pid = daemon.vm_pid("ci-plain");
    std::thread::sleep(Duration::from_millis(500));
    assert!(cidata_fds(pid).is_empty());
}

fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

#[test]
fn vm_conf_files_are_read_at_start() {
    testkit::needs!(root, kvm);
    let scratch = Scratch::new("conf");
    let user_data = scratch.write("user-data", "#!/bin/sh\necho from vm.conf\n");
    let big = scratch.write("big", vec![b'#'; cidata::MAX_USER_DATA + 1]);
    let key = scratch.write("key.pub", KEY);
    let config = scratch.write(
        "vm.conf",
        format!(
            "vm \"ci-conf\" {{\n\tboot \"{SEABIOS}\"\n\tmemory 64M\n\tuser-data \"{user_data}\"\n}}\n\
             vm \"ci-key\" {{\n\tdisable\n\tboot \"{SEABIOS}\"\n\tmemory 64M\n\tssh-key \"{key}\"\n}}\n\
             vm \"ci-big\" {{\n\tdisable\n\tboot \"{SEABIOS}\"\n\tmemory 64M\n\tuser-data \"{big}\"\n}}\n"
        ),
    );
    let daemon = TestDaemon::start_with(&["-f", &config]);
    daemon.wait_for(
        || daemon.status_row("ci-conf").is_some_and(|r| r[1] != "-"),
        Duration::from_secs(20),
        "ci-conf to run",
    );
    let (_, files) = volume_of(&daemon, "ci-conf");
    assert_eq!(file(&files, "user-data"), "#!/bin/sh\necho from vm.conf\n");
    assert!(file(&files, "meta-data").contains("local-hostname: \"ci-conf\"\n"));
    assert_eq!(
        file(&files, "network-config"),
        "version: 2\nethernets: {}\n"
    );

    daemon.vmctl_ok(&["start", "ci-key"]);
    let (_, files) = volume_of(&daemon, "ci-key");
    assert_eq!(
        file(&files, "user-data"),
        format!("#cloud-config\nssh_authorized_keys:\n  - '{KEY}'\n")
    );

    let out = daemon.vmctl(&["start", "ci-big"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "vmctl: start vm command failed: Invalid argument: user data {big}: \
             larger than 65536 bytes\n"
        )
    );
    assert_eq!(out.status.code(), Some(1));
}
