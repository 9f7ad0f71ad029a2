//! The spec's example configurations and a set of wrong files, each checked
//! like `vmd -n` against the expected output next to it
//! (`tests/fixtures/<dir>/<name>.conf` → `<name>.out`), plus the model the
//! examples produce.
//!
//! `CONF_BLESS=1 cargo test -p conf --test fixtures` rewrites the `.out`
//! files; review the diff before committing it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use conf::{
    Config, LoadOptions, LocalInet6, MemoryHost, Origin, Owner, SocketOwner, StaggeredStart, Tap,
};
use proto::control::{BootDevice, DiskFormat};

fn fixture_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(sub)
}

/// The test host plus every file of the fixture directory under its bare
/// name, so that diagnostics read `vm.conf:3: …` and includes find
/// `bad.inc`.
fn fixture_host(sub: &str) -> MemoryHost {
    let mut host = common::host();
    for entry in fs::read_dir(fixture_dir(sub)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        host = host.file(&name, fs::read(&path).unwrap());
    }
    host
}

fn explicit() -> LoadOptions {
    LoadOptions {
        origin: Origin::Explicit,
        ..LoadOptions::default()
    }
}

/// Checks every `.conf` of the directory; returns how many there were.
fn check_all(sub: &str) -> usize {
    let host = fixture_host(sub);
    let bless = std::env::var_os("CONF_BLESS").is_some();
    let mut confs: Vec<PathBuf> = fs::read_dir(fixture_dir(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    confs.sort();
    let mut failures = Vec::new();
    for conf in &confs {
        let name = conf.file_name().unwrap().to_str().unwrap();
        let check = conf::check_with(&host, name, &explicit());
        let actual = check.lines.join("\n") + "\n";
        let out = conf.with_extension("out");
        if bless {
            fs::write(&out, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&out)
            .unwrap_or_else(|_| panic!("{} has no .out file", conf.display()));
        if actual != expected {
            failures.push(format!(
                "{name}:\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    confs.len()
}

#[test]
fn spec_examples_check_ok() {
    assert!(check_all("spec") >= 6);
    // And every one of them really is accepted.
    let host = fixture_host("spec");
    for entry in fs::read_dir(fixture_dir("spec")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "conf") {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(conf::check_with(&host, name, &explicit()).ok, "{name}");
        }
    }
}

#[test]
fn wrong_files_give_the_expected_diagnostics() {
    assert!(check_all("errors") >= 5);
    let host = fixture_host("errors");
    for entry in fs::read_dir(fixture_dir("errors")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "conf") {
            let name = path.file_name().unwrap().to_str().unwrap();
            let check = conf::check_with(&host, name, &explicit());
            assert!(!check.ok, "{name}");
            assert_eq!(check.exit_code(), 1);
            assert_ne!(
                check.lines.last().map(String::as_str),
                Some("configuration OK")
            );
        }
    }
}

fn load(sub: &str, name: &str) -> Config {
    let loaded = conf::load_with(&fixture_host(sub), name, &explicit()).unwrap();
    loaded.config
}

#[test]
fn complete_example_model() {
    let config = load("spec", "complete-example.conf");
    let settings = config.settings();
    assert_eq!(settings.local_prefix.to_string(), "100.64.0.0/10");
    assert_eq!(settings.socket_owner, SocketOwner { uid: 0, gid: 500 });
    assert_eq!(
        settings.staggered_start,
        StaggeredStart {
            parallel: 2,
            delay_secs: 10
        }
    );

    assert_eq!(config.switches.len(), 1);
    let uplink = &config.switches[0];
    assert_eq!(
        (uplink.id, uplink.name.as_str(), uplink.interface.as_str()),
        (1, "uplink", "bridge0")
    );
    assert_eq!(uplink.group.as_deref(), Some("vmnet"));
    assert!(uplink.locked && uplink.up);

    let names: Vec<_> = config.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["openbsd.template", "web1.example.com", "bob1"]);

    let template = &config.vms[0];
    assert!(!template.enabled);
    assert_eq!(template.memory, Some(1 << 30));
    assert_eq!(template.boot_device, Some(BootDevice::Cdrom));
    assert_eq!(template.cdrom.as_deref(), Some("/var/vm/install78.iso"));
    assert_eq!(template.interfaces.len(), 1);
    assert_eq!(template.interfaces[0].switch.as_deref(), Some("uplink"));
    let perms = template.instances.unwrap();
    assert!(
        perms.memory
            && perms.disk
            && !perms.boot
            && !perms.cdrom
            && !perms.interface
            && !perms.instance
    );
    assert_eq!(
        perms.owner,
        Owner {
            uid: None,
            gid: Some(500)
        }
    );

    let web = &config.vms[1];
    assert!(web.enabled);
    assert_eq!(web.memory, Some(2 << 30));
    let disks: Vec<_> = web
        .disks
        .iter()
        .map(|d| (d.path.as_str(), d.format))
        .collect();
    assert_eq!(
        disks,
        [
            ("/var/vm/web1.qcow2", DiskFormat::Qcow2),
            ("/var/vm/web1-data.img", DiskFormat::Raw)
        ]
    );
    assert_eq!(web.interfaces.len(), 2);
    assert!(web.interfaces[0].local);
    assert_eq!(web.interfaces[0].tap, Tap::NextFree);
    let tap7 = &web.interfaces[1];
    assert!(!tap7.local);
    assert_eq!(tap7.tap, Tap::Named("tap7".into()));
    assert_eq!(tap7.switch.as_deref(), Some("uplink"));
    assert_eq!(tap7.lladdr.unwrap().to_string(), "fe:e1:bb:d1:00:07");
    assert_eq!(tap7.rdomain, Some(0));
    assert_eq!(
        web.owner,
        Owner {
            uid: Some(1000),
            gid: Some(500)
        }
    );

    let bob = &config.vms[2];
    assert_eq!(bob.instance_of.as_deref(), Some("openbsd.template"));
    assert_eq!(bob.memory, Some(768 << 20));
    assert_eq!(bob.disks[0].path, "/var/vm/bob1.qcow2");
    assert_eq!(bob.disks[0].format, DiskFormat::Qcow2);
    assert!(bob.enabled);
    assert_eq!(bob.defined_at.to_string(), "complete-example.conf:38");
}

#[test]
fn instances_example_model() {
    let config = load("spec", "instances.conf");
    let template = &config.vms[0];
    let perms = template.instances.unwrap();
    assert!(
        perms.boot
            && perms.cdrom
            && perms.disk
            && perms.instance
            && perms.interface
            && perms.memory
    );
    assert_eq!(
        perms.owner,
        Owner {
            uid: Some(1000),
            gid: Some(500)
        }
    );
    let small = config.vms[1].instances.unwrap();
    assert!(small.memory && !small.disk);
    assert_eq!(
        small.owner,
        Owner {
            uid: None,
            gid: Some(500)
        }
    );
    assert_eq!(config.vms[2].instance_of.as_deref(), Some("template"));
    assert_eq!(config.vms[2].name, "inst1");
}

#[test]
fn installer_example_model() {
    let config = load("spec", "installer.conf");
    let vm = &config.vms[0];
    assert_eq!(vm.boot.as_deref(), Some("/bsd.rd"));
    assert!(vm.disks.is_empty() && vm.cdrom.is_none());
    assert!(vm.interfaces[0].local);
}

#[test]
fn interfaces_example_model() {
    let config = load("spec", "interfaces.conf");
    let ifaces = &config.vms[0].interfaces;
    assert_eq!(ifaces.len(), 4);
    assert!(ifaces[0].local && ifaces[0].switch.is_none());
    assert_eq!(ifaces[1].tap, Tap::Named("tap3".into()));
    assert!(ifaces[1].locked);
    assert_eq!(ifaces[1].lladdr.unwrap().to_string(), "fe:e1:bb:d2:00:01");
    assert_eq!(ifaces[2].group.as_deref(), Some("vms"));
    assert_eq!(ifaces[2].rdomain, Some(1));
    assert!(!ifaces[2].up);
    assert_eq!(ifaces[3], conf::Interface::default());
}

#[test]
fn globals_example_model() {
    let settings = load("spec", "globals.conf").settings();
    assert_eq!(settings.local_prefix.to_string(), "10.0.0.0/8");
    match settings.local_inet6 {
        Some(LocalInet6::Prefix(prefix)) => assert_eq!(prefix.to_string(), "fd00:1234::/48"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        settings.socket_owner,
        SocketOwner {
            uid: 1000,
            gid: 500
        }
    );
    let agentx = settings.agentx.unwrap();
    assert_eq!(
        (agentx.context.as_deref(), agentx.path.as_str()),
        (Some("vms"), "/var/agentx/master")
    );
    assert_eq!(
        settings.staggered_start,
        StaggeredStart {
            parallel: 4,
            delay_secs: 5
        }
    );
}

#[test]
fn linux_example_model() {
    let config = load("spec", "linux.conf");
    assert_eq!(config.switches[0].rdomain, Some(5));
    let vm = &config.vms[0];
    assert_eq!(vm.boot.as_deref(), Some("/boot/vmlinuz"));
    assert_eq!(vm.initrd.as_deref(), Some("/boot/initrd.img"));
    assert_eq!(
        vm.cmdline.as_deref(),
        Some("console=ttyS0 root=/dev/vda rw")
    );
    assert_eq!(vm.vcpu_count(), 2);
    assert_eq!(vm.disks[0].format, DiskFormat::Qcow2);
}
