//! Helpers shared by the parser tests: an imaginary host with a few images,
//! users and groups, and short ways to parse a text.
#![allow(dead_code)]

use conf::{Config, Define, LoadOptions, Loaded, MemoryHost, Rejected, Vm, Warning};

/// qcow2 magic followed by some header bytes.
pub const QCOW2: &[u8] = b"QFI\xfb\0\0\0\x03";

/// The machine the tests run against.
pub fn host() -> MemoryHost {
    MemoryHost::new()
        .file("/bsd", "kernel")
        .file("/bsd.rd", "ramdisk kernel")
        .file("/boot/vmlinuz", "linux")
        .file("/boot/initrd.img", "initrd")
        .file("/var/vm/user-data", "#cloud-config\n")
        .file("/var/vm/id_ed25519.pub", "ssh-ed25519 AAAA me@host\n")
        .file("/var/vm/a.img", "raw data")
        .file("/var/vm/b.img", "raw data")
        .file("/var/vm/c.img", "raw data")
        .file("/var/vm/d.img", "raw data")
        .file("/var/vm/e.img", "raw data")
        .file("/var/vm/q.qcow2", QCOW2)
        .file("/var/vm/q.img", QCOW2)
        .file("/var/vm/fake.qcow2", "not really qcow2")
        .file("/var/vm/web1.qcow2", QCOW2)
        .file("/var/vm/web1-data.img", "raw data")
        .file("/var/vm/bob1.qcow2", QCOW2)
        .user("root", 0)
        .user("alice", 1000)
        .user("bob", 1001)
        .group("wheel", 0)
        .group("vmusers", 500)
        .group("staff", 50)
}

pub fn options_with(defines: &[&str]) -> LoadOptions {
    LoadOptions {
        defines: defines.iter().map(|d| Define::parse(d).unwrap()).collect(),
        ..LoadOptions::default()
    }
}

pub fn try_parse_with(text: &str, defines: &[&str]) -> Result<Loaded, Rejected> {
    conf::parse(&host(), "vm.conf", text, &options_with(defines))
}

pub fn try_parse(text: &str) -> Result<Loaded, Rejected> {
    try_parse_with(text, &[])
}

/// Parses a text that must be valid.
pub fn parse(text: &str) -> Loaded {
    match try_parse(text) {
        Ok(loaded) => loaded,
        Err(rejected) => panic!("unexpected errors: {:#?}", rejected.error_lines()),
    }
}

pub fn config(text: &str) -> Config {
    parse(text).config
}

/// Parses a text that must be invalid; returns its error lines.
pub fn errors(text: &str) -> Vec<String> {
    errors_with(text, &[])
}

pub fn errors_with(text: &str, defines: &[&str]) -> Vec<String> {
    match try_parse_with(text, defines) {
        Ok(loaded) => panic!("expected errors, got {:#?}", loaded.config),
        Err(rejected) => rejected.error_lines(),
    }
}

/// The only VM of a valid text.
pub fn vm(text: &str) -> Vm {
    let mut config = config(text);
    assert_eq!(config.vms.len(), 1, "{:#?}", config.vms);
    config.vms.remove(0)
}

/// A VM block with a disk (so that it is valid) and the given options.
pub fn vm_with(options: &str) -> Vm {
    vm(&format!(
        "vm \"v\" {{\n\tdisk /var/vm/a.img\n{options}\n}}\n"
    ))
}

pub fn warning_lines(warnings: &[Warning]) -> Vec<String> {
    warnings.iter().map(ToString::to_string).collect()
}
