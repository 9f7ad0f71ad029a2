//! A failure vmd knows the reason for reaches the user who asked: vmctl
//! prints OpenBSD's message, then vmd's cause after `: `; what vmd warns
//! about during a request (an unknown switch) reaches that request's
//! vmctl before the answer. Each case asserts vmctl's exact stderr and
//! exit status.

use std::process::Output;

use testkit::daemon::TestDaemon;
use testkit::netns::NetNs;

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";

fn outcome(out: &Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn failed(text: String) -> (Option<i32>, String) {
    (Some(1), text)
}

/// A disabled VM of vm.conf whose disk is `disk`, loaded into `daemon`.
fn configured_with_disk(daemon: &TestDaemon, name: &str, disk: &str) {
    let conf = daemon.dir().join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "vm \"{name}\" {{\n    disable\n    boot \"{BIOS}\"\n    memory 64M\n    disk \"{disk}\"\n}}\n"
        ),
    )
    .unwrap();
    daemon.vmctl_ok(&["load", conf.to_str().unwrap()]);
}

#[test]
fn a_missing_disk_is_named() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let disk = daemon.dir().join("gone.img");
    // The parser checks the disk; it goes after the file is loaded.
    std::fs::write(&disk, [0u8; 512]).unwrap();
    let disk = disk.to_str().unwrap();
    configured_with_disk(&daemon, "nodisk", disk);
    std::fs::remove_file(disk).unwrap();
    assert_eq!(
        outcome(&daemon.vmctl(&["start", "nodisk"])),
        failed(format!(
            "vmctl: could not open disk image(s): {disk}: No such file or directory\n"
        ))
    );
}

#[test]
fn a_qcow2_overlay_without_its_base_names_the_base() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let base = daemon.dir().join("base.qcow2");
    let overlay = daemon.dir().join("overlay.qcow2");
    let (base, overlay) = (base.to_str().unwrap(), overlay.to_str().unwrap());
    daemon.vmctl_ok(&["create", "-s", "1M", base]);
    daemon.vmctl_ok(&["create", "-b", base, overlay]);
    std::fs::remove_file(base).unwrap();
    let out = daemon.start_seabios_vm("orphan", &["-d", &format!("qcow2:{overlay}")]);
    assert_eq!(
        outcome(&out),
        failed(format!(
            "vmctl: could not open disk image(s): {overlay}: backing file: \
             {base}: No such file or directory\n"
        ))
    );
}

#[test]
fn a_disk_in_use_names_the_vm_that_has_it() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let disk = daemon.dir().join("shared.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let disk = disk.to_str().unwrap();
    daemon.start_seabios_vm_ok("holder", &["-d", disk]);
    let out = daemon.start_seabios_vm("second", &["-d", disk]);
    assert_eq!(
        outcome(&out),
        failed(format!(
            "vmctl: could not open disk image(s): {disk}: in use by vm holder\n"
        ))
    );
    daemon.vmctl_ok(&["stop", "-f", "holder"]);
}

#[test]
fn an_unknown_switch_is_a_warning_for_the_starter() {
    testkit::needs!(root, kvm);
    let ns = NetNs::new("vmdwarn");
    let daemon = TestDaemon::start_in_netns(ns.name(), &[]);
    let out = daemon.start_seabios_vm("lonely", &["-n", "nosuch"]);
    let (status, text) = outcome(&out);
    assert_eq!(status, Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[0],
        "vmctl: warning: switch \"nosuch\" not found; interface 0 stays unattached"
    );
    assert!(
        lines[1].starts_with("vmctl: started vm 1 successfully, tty /dev/pts/"),
        "{text}"
    );
    daemon.vmctl_ok(&["stop", "-f", "lonely"]);
}

#[test]
fn load_of_a_missing_file_fails_with_its_path() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let conf = daemon.dir().join("nonexistent.conf");
    let conf = conf.to_str().unwrap();
    assert_eq!(
        outcome(&daemon.vmctl(&["load", conf])),
        failed(format!(
            "vmctl: command failed: {conf}: No such file or directory\n"
        ))
    );
}

#[test]
fn load_of_a_broken_file_prints_its_errors() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let conf = daemon.dir().join("broken.conf");
    std::fs::write(&conf, "# two mistakes\nbogus\nvm \"a\" { memory }\n").unwrap();
    let conf = conf.to_str().unwrap();
    assert_eq!(
        outcome(&daemon.vmctl(&["load", conf])),
        failed(format!(
            "vmctl: command failed: {conf}:2: syntax error\n\
             vmctl: {conf}:3: syntax error\n"
        ))
    );
    // Nothing of it was applied.
    assert!(daemon.status_row("a").is_none());
}
