//! The VM process sandbox (issue 11; docs/architecture.md, "Three kinds of process"; SECURITY.md): once the guest runs, its
//! process is the unprivileged `_vmd`, holds no capability, sits in an
//! empty chroot, and every thread is under seccomp; a forbidden system call
//! kills the process and vmd says so. Faults release what the VM held.

use std::time::Duration;

use testkit::daemon::TestDaemon;

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";

fn status_field(pid: u32, task: Option<&str>, field: &str) -> String {
    let path = match task {
        Some(tid) => format!("/proc/{pid}/task/{tid}/status"),
        None => format!("/proc/{pid}/status"),
    };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn a_vm_process_runs_confined() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", BIOS, "caged"]);
    daemon.console_until("caged", "SeaBIOS (version", Duration::from_secs(60));
    let pid = daemon.vm_pid("caged");

    let vmd_uid = {
        let out = std::process::Command::new("id")
            .args(["-u", "_vmd"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(!vmd_uid.is_empty(), "the _vmd user exists");
    let uids = status_field(pid, None, "Uid");
    assert!(
        uids.split_whitespace().all(|u| u == vmd_uid),
        "real, effective, saved and fs uid are _vmd: {uids}"
    );
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let value = status_field(pid, None, caps);
        if caps == "CapBnd" {
            continue; // the bounding set is irrelevant once nothing is held
        }
        assert_eq!(
            u64::from_str_radix(&value, 16).unwrap(),
            0,
            "{caps} {value}"
        );
    }
    assert_eq!(status_field(pid, None, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, None, "Seccomp"), "2");
    // Every thread is filtered, each with its kind's filter on top of the
    // process-wide ones.
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(threads.len() >= 4, "vCPU, device and control threads");
    for tid in &threads {
        assert_eq!(status_field(pid, Some(tid), "Seccomp"), "2", "thread {tid}");
        let filters: u32 = status_field(pid, Some(tid), "Seccomp_filters")
            .parse()
            .unwrap_or(0);
        assert!(filters >= 6, "thread {tid} has {filters} filters");
    }
    // Locked into the empty directory.
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert_eq!(root, std::path::Path::new("/var/empty"));
    daemon.vmctl_ok(&["stop", "-f", "caged"]);
}

#[test]
fn a_forbidden_system_call_kills_the_vm_and_vmd_reports_it() {
    testkit::needs!(root, kvm);
    // Debug builds honour this: the confined process calls kill(2).
    let daemon = TestDaemon::start_with_env(&[], &[("VMD_SANDBOX_SELF_TEST", "syscall")]);
    daemon.vmctl_ok(&["start", "-b", BIOS, "doomed"]);
    daemon.wait_for_log(
        "doomed: vm 1 process killed by signal 31 (a system call its sandbox forbids)",
        Duration::from_secs(30),
    );
    // The daemon carries on.
    let out = daemon.vmctl(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("   ID"));
}

#[test]
fn a_vm_process_sending_garbage_is_killed_and_the_daemon_carries_on() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start_with_env(&[], &[("VMD_SANDBOX_SELF_TEST", "garbage")]);
    daemon.vmctl_ok(&["start", "-b", BIOS, "babbler"]);
    daemon.wait_for_log(
        "babbler: vm 1 process sent a malformed message",
        Duration::from_secs(30),
    );
    // The process is gone: the VM is stopped, or gone from the list.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = daemon.vmctl(&["status", "babbler"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.lines().nth(1).is_none_or(|l| l.contains("stopped")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running:\n{text}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The daemon still serves requests (a new VM would babble too: the
    // self-test applies to every VM process of this daemon).
    let out = daemon.vmctl(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("   ID"));
    daemon.vmctl_ok(&["start", "-b", BIOS, "next"]);
}

#[test]
fn a_killed_vm_process_releases_its_console_and_disk() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let disk = daemon.dir().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let disk = disk.to_str().unwrap().to_string();
    daemon.vmctl_ok(&["start", "-b", BIOS, "-d", &disk, "holder"]);
    let pid = daemon.vm_pid("holder");
    let tty = {
        let out = daemon.vmctl(&["status", "holder"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        format!(
            "/dev/{}",
            text.lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .nth(5)
                .unwrap()
        )
    };
    // The disk is taken while the VM runs.
    let out = daemon.vmctl(&["start", "-b", BIOS, "-d", &disk, "second"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("vmctl: could not open disk image(s): {disk}: in use by vm holder\n")
    );
    // SAFETY: killing the VM process the test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    // It stays listed, stopped, with how it ended (vmctl status -v).
    daemon.wait_for(
        || {
            daemon
                .status_row("holder")
                .is_some_and(|row| row[7] == "stopped")
        },
        Duration::from_secs(10),
        "the killed VM to stop",
    );
    // The lock went with the process: another VM may use the disk.
    daemon.vmctl_ok(&["start", "-b", BIOS, "-d", &disk, "second"]);
    // The old console went back to root (or went away with its pty).
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(&tty) {
        let reused = daemon.vmctl(&["status", "second"]);
        if !String::from_utf8_lossy(&reused.stdout).contains(&tty["/dev/".len()..]) {
            assert_eq!(meta.uid(), 0, "{tty} given back to root");
        }
    }
    daemon.vmctl_ok(&["stop", "-f", "second"]);
}
