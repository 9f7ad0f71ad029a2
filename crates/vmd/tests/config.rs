//! vm.conf applied by a real vmd: configured, disabled and template VMs,
//! `vmd -n`, reload, reset, instances, and the permission model with real
//! unprivileged users.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use testkit::daemon::{TestDaemon, binary};
use testkit::tmp::TempDir;

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";
const BANNER: &str = "SeaBIOS (version";
const BOOT: Duration = Duration::from_secs(90);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn rows(daemon: &TestDaemon) -> Vec<Vec<String>> {
    let out = daemon.vmctl(&["status"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

fn row(daemon: &TestDaemon, name: &str) -> Option<Vec<String>> {
    rows(daemon)
        .into_iter()
        .find(|r| r.last().map(String::as_str) == Some(name))
}

#[test]
fn vmd_n_checks_the_configuration() {
    let dir = TempDir::new("conf-check");
    let good = dir.join("good.conf");
    std::fs::write(
        &good,
        format!("bios = \"{BIOS}\"\nvm \"a\" {{\n    boot $bios\n    memory 64M\n}}\n"),
    )
    .unwrap();
    let out = Command::new(binary("vmd"))
        .args(["-n", "-f", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "configuration OK\n");

    let bad = dir.join("bad.conf");
    std::fs::write(
        &bad,
        "vm \"a\" {\n    memory 4GB\n}\nvm \"b\" {\n    bogus\n}\n",
    )
    .unwrap();
    let out = Command::new(binary("vmd"))
        .args(["-n", "-f", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let path = bad.to_str().unwrap();
    assert_eq!(
        stderr(&out),
        format!(
            "invalid memory size: 4GB: Invalid argument\n\
             {path}:2: failed to parse size: 4GB\n\
             {path}:5: syntax error\n"
        )
    );

    // A daemon refuses to start on a broken file.
    let out = Command::new(binary("vmd"))
        .args(["-d", "-f", bad.to_str().unwrap()])
        .env("VMD_SOCKET", dir.join("never.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn configured_vms_switches_reload_and_reset() {
    testkit::needs!(root, kvm);
    let dir = TempDir::new("conf-apply");
    let config = dir.join("vm.conf");
    let write = |disabled_memory: &str| {
        std::fs::write(
            &config,
            format!(
                r#"bios = "{BIOS}"
small = "64M"
switch "lan" {{
    interface br-vmdtest
}}
vm "enabled" {{
    boot $bios
    memory $small
}}
vm "sleeper" {{
    disable
    boot $bios
    memory {disabled_memory}
}}
vm "tmpl" {{
    disable
    boot $bios
    memory 128M
    allow instance {{ memory }}
}}
"#
            ),
        )
        .unwrap();
    };
    write("96M");
    let daemon = TestDaemon::start_with(&["-f", config.to_str().unwrap()]);
    daemon.console_until("enabled", BANNER, BOOT);

    let status = rows(&daemon);
    let names: Vec<&str> = status.iter().map(|r| r.last().unwrap().as_str()).collect();
    assert_eq!(
        names,
        ["enabled", "sleeper", "tmpl"],
        "running first, then file order"
    );
    let enabled = row(&daemon, "enabled").unwrap();
    assert_eq!(enabled[3], "64.0M");
    assert_eq!(enabled[7], "running");
    let sleeper = row(&daemon, "sleeper").unwrap();
    assert_eq!(
        &sleeper[1..],
        ["-", "1", "96.0M", "-", "-", "root", "stopped", "sleeper"]
    );

    // An instance of the template, by root, with a memory size it allows.
    daemon.vmctl_ok(&["start", "-t", "tmpl", "-m", "80M", "inst"]);
    assert_eq!(row(&daemon, "inst").unwrap()[3], "80.0M");
    let out = daemon.vmctl(&["start", "-t", "nosuch", "inst2"]);
    assert_eq!(stderr(&out), "vmctl: invalid template\n");
    let out = daemon.vmctl(&["start", "-t", "tmpl", "inst"]);
    assert_eq!(
        stderr(&out),
        "vmctl: start vm command failed: Operation already in progress\n"
    );

    // Edit the file and reload: the stopped VM changes, the running one
    // keeps its settings.
    write("112M");
    daemon.vmctl_ok(&["reload"]);
    daemon.wait_for(
        || row(&daemon, "sleeper").is_some_and(|r| r[3] == "112M"),
        Duration::from_secs(10),
        "the reloaded memory size",
    );
    assert_eq!(row(&daemon, "enabled").unwrap()[7], "running");

    // A broken file is refused and what was loaded stays, stopped VMs too.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{good}\nvm \"broken\" {{ memory lots }}\n"),
    )
    .unwrap();
    let out = daemon.vmctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", daemon.log());
    assert_eq!(row(&daemon, "sleeper").unwrap()[3], "112M");
    assert!(row(&daemon, "broken").is_none());
    std::fs::write(&config, good).unwrap();

    // reset vms terminates every VM and forgets them all.
    daemon.vmctl_ok(&["reset", "vms"]);
    daemon.wait_for(
        || rows(&daemon).is_empty(),
        Duration::from_secs(10),
        "reset to forget every VM",
    );
    // reload brings the configured ones back, numbered from 1 again.
    daemon.vmctl_ok(&["reload"]);
    daemon.wait_for(
        || row(&daemon, "enabled").is_some_and(|r| r[0] == "1"),
        Duration::from_secs(10),
        "the configuration to be back",
    );
}

/// A system user for the test, created if missing, in `group`.
fn ensure_user(name: &str, group: &str) -> (u32, u32) {
    if Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap()
        .stdout
        .is_empty()
    {
        let _ = Command::new("groupadd").args(["--system", group]).status();
    }
    if !Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success()
    {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .args(["--groups", group, name])
            .status();
    }
    let id = |flag: &str| -> u32 {
        String::from_utf8_lossy(
            &Command::new("id")
                .args([flag, name])
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .parse()
        .unwrap()
    };
    (id("-u"), id("-g"))
}

/// Runs the test copy of vmctl as `user`, with its groups.
fn vmctl_as(daemon: &TestDaemon, vmctl: &str, user: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            user,
            "--regid",
            user,
            "--init-groups",
            "--",
            vmctl,
        ])
        .args(args)
        .env("VMD_SOCKET", &daemon.socket)
        .output()
        .unwrap()
}

#[test]
fn owners_control_their_vms_and_others_are_refused() {
    testkit::needs!(root, kvm);
    let group = "vmdtest";
    ensure_user("vmdtest-alice", group);
    ensure_user("vmdtest-bob", group);
    let dir = TempDir::new("conf-perm");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The users run their own copy of vmctl: the build tree may be private.
    let vmctl = dir.join("vmctl");
    std::fs::copy(binary("vmctl"), &vmctl).unwrap();
    std::fs::set_permissions(&vmctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let vmctl = vmctl.to_str().unwrap().to_string();
    let config = dir.join("vm.conf");
    std::fs::write(
        &config,
        format!(
            r#"socket owner :{group}
vm "alices" {{
    disable
    owner vmdtest-alice
    boot "{BIOS}"
    memory 64M
}}
vm "tmpl" {{
    disable
    boot "{BIOS}"
    memory 64M
    allow instance {{ owner vmdtest-bob }}
}}
"#
        ),
    )
    .unwrap();
    let daemon = TestDaemon::start_with(&["-f", config.to_str().unwrap()]);
    daemon.wait_for_log("startup", Duration::from_secs(5));
    // The socket belongs to the group, mode 0660.
    let meta = std::fs::metadata(&daemon.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // The owner starts and controls its VM.
    let out = vmctl_as(&daemon, &vmctl, "vmdtest-alice", &["start", "alices"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), daemon.log());
    assert_eq!(row(&daemon, "alices").unwrap()[6], "vmdtest-alice");

    // The other user is refused, with the spec's text and status.
    let out = vmctl_as(&daemon, &vmctl, "vmdtest-bob", &["stop", "alices"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "stopping vm alices: failed: Operation not permitted\n"
    );
    let out = vmctl_as(&daemon, &vmctl, "vmdtest-bob", &["pause", "alices"]);
    assert_eq!(
        stderr(&out),
        "vmctl: pause vm command failed: Operation not permitted\n"
    );
    let out = vmctl_as(&daemon, &vmctl, "vmdtest-bob", &["console", "alices"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "vmctl: failed to open the console: Permission denied\n"
    );
    // Root-only requests are refused to users.
    let out = vmctl_as(&daemon, &vmctl, "vmdtest-alice", &["reload"]);
    assert_eq!(
        stderr(&out),
        "vmctl: command failed: Operation not permitted\n"
    );
    // Creating a brand-new VM is root's.
    let out = vmctl_as(
        &daemon,
        &vmctl,
        "vmdtest-alice",
        &["start", "-b", BIOS, "mine"],
    );
    assert_eq!(
        stderr(&out),
        "vmctl: start vm command failed: Operation not permitted\n"
    );

    // Instances: bob may, alice may not.
    let out = vmctl_as(
        &daemon,
        &vmctl,
        "vmdtest-alice",
        &["start", "-t", "tmpl", "a1"],
    );
    assert_eq!(
        stderr(&out),
        "vmctl: start vm command failed: Operation not permitted: \
         not allowed to create instances\n"
    );
    let out = vmctl_as(
        &daemon,
        &vmctl,
        "vmdtest-bob",
        &["start", "-t", "tmpl", "b1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(row(&daemon, "b1").unwrap()[6], "vmdtest-bob");

    // The owner stops its VM.
    let out = vmctl_as(&daemon, &vmctl, "vmdtest-alice", &["stop", "-w", "alices"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(row(&daemon, "alices").unwrap()[7], "stopped");
}
