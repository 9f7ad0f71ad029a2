//! Any byte string as vm.conf: the parser must never panic, and what it
//! accepts must respect the limits of vm.conf(5).
//!
//! The input is the main file. It can include itself (up to the nesting
//! limit) and a small fixed file, refer to a few images and owners, and use
//! one `-D` macro, so that every path of the parser is reachable.

#![no_main]

use conf::model::{MAX_DISKS, MAX_INTERFACES, MAX_MEMORY, MAX_VCPUS, MAX_VM_NAME_LEN, MIN_MEMORY};
use conf::{Define, LoadOptions, MemoryHost, Origin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let host = MemoryHost::new()
        .file("fuzz.conf", data)
        .file("inc.conf", "vm \"inc\" {\n\tdisk /a.img\n}\nswitch s {\n\tinterface br0\n}\n")
        .file("/bsd", "kernel")
        .file("/a.img", "raw")
        .file("/q.img", b"QFI\xfb\0\0\0\x03".to_vec())
        .unreadable_file("/secret.conf")
        .user("alice", 1000)
        .group("vmusers", 500);
    let options = LoadOptions {
        defines: vec![Define {
            name: "d".into(),
            value: "memory 1G".into(),
        }],
        origin: Origin::Explicit,
        first_switch_id: 1,
    };

    let check = conf::check_with(&host, "fuzz.conf", &options);
    let result = conf::load_with(&host, "fuzz.conf", &options);
    // `vmd -n` does not register what it reads (vm.conf(5)): a file it
    // accepts can still fail to load, but only on what registering a
    // block checks. A file it refuses never loads.
    match &result {
        Ok(_) => assert!(check.ok, "loaded, but vmd -n said {:?}", check.lines),
        Err(rejected) if check.ok => {
            for error in &rejected.errors {
                assert!(
                    error.location.is_none() || is_registration_failure(&error.message),
                    "vmd -n accepted what failed to load with {error}"
                );
            }
        }
        Err(_) => {}
    }
    assert_eq!(check.lines.last().map(String::as_str) == Some("configuration OK"), check.ok);

    match result {
        Ok(loaded) => {
            let config = loaded.config;
            for (i, switch) in config.switches.iter().enumerate() {
                assert_eq!(switch.id as usize, i + 1);
                assert!(!switch.interface.is_empty() && switch.interface.len() <= 15);
            }
            let mut names = std::collections::HashSet::new();
            for vm in &config.vms {
                assert!(names.insert(vm.name.clone()), "duplicate vm {}", vm.name);
                assert!(vm.name.len() <= MAX_VM_NAME_LEN);
                assert!(vm.disks.len() <= MAX_DISKS);
                assert!(vm.interfaces.len() <= MAX_INTERFACES);
                if let Some(memory) = vm.memory {
                    assert!((MIN_MEMORY..=MAX_MEMORY).contains(&memory) && memory % MIN_MEMORY == 0);
                }
                if let Some(vcpus) = vm.vcpus {
                    assert!((1..=MAX_VCPUS).contains(&vcpus));
                }
                if vm.instance_of.is_none() {
                    assert!(vm.has_boot_source());
                }
            }
        }
        Err(rejected) => {
            assert!(!rejected.errors.is_empty());
            for line in rejected.error_lines() {
                assert!(!line.is_empty());
            }
        }
    }
});

/// The errors only registering a `vm` or `switch` block gives: a VM whose
/// checks failed (its cause, on a line without a place, comes first), a
/// switch name too long for an interface, a switch defined twice.
fn is_registration_failure(message: &str) -> bool {
    (message.starts_with("vm \"") && message.contains("\" failed: "))
        || message.starts_with("switch name too long: ")
        || (message.starts_with("switch \"") && message.ends_with("\" defined more than once"))
}
