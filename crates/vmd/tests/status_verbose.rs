//! `vmctl status -v` and `-jv` against a real vmd (vmctl(8), STATUS):
//! a VM's disk chain, CD, local interface with its lease, boot device,
//! uptime and CPU time; the table above stays the plain one.

use testkit::daemon::TestDaemon;
use testkit::guest::firmware;
use testkit::netns::NetNs;

const GREETER: &str = r#"
main:
    PRINT msg
.idle:
    hlt
    jmp .idle
msg: db "hello", 13, 10, 0
"#;

#[test]
fn a_running_vm_shows_its_disk_chain_cd_and_local_interface() {
    testkit::needs!(root, kvm);
    let ns = NetNs::new("vmdverbose");
    let daemon = TestDaemon::start_in_netns(ns.name(), &[]);
    let dir = daemon.dir();
    let path = |name: &str| dir.join(name).display().to_string();
    std::fs::write(dir.join("greeter.bin"), firmware(GREETER)).unwrap();
    daemon.vmctl_ok(&["create", "-s", "64M", &path("base.qcow2")]);
    daemon.vmctl_ok(&["create", "-b", &path("base.qcow2"), &path("web.qcow2")]);
    std::fs::write(dir.join("cd.iso"), vec![0u8; 4096]).unwrap();
    daemon.vmctl_ok(&[
        "start",
        "-b",
        &path("greeter.bin"),
        "-m",
        "64M",
        "-d",
        &path("web.qcow2"),
        "-r",
        &path("cd.iso"),
        "-B",
        "cdrom",
        "-L",
        "web",
    ]);
    let table = daemon.vmctl_ok(&["status", "web"]);
    let verbose = daemon.vmctl_ok(&["status", "-v", "web"]);
    // The table above the details is the plain one; CURMEM may have grown
    // between the two requests, as the guest touches memory.
    let table_lines: Vec<&str> = table.lines().collect();
    let verbose_lines: Vec<&str> = verbose.lines().collect();
    assert!(verbose_lines.len() > table_lines.len(), "{verbose}");
    for (plain, detailed) in table_lines.iter().zip(&verbose_lines) {
        assert_eq!(without_curmem(plain), without_curmem(detailed), "{verbose}");
    }
    let block = &verbose_lines[table_lines.len()..];
    assert_eq!(block[0], "vm web (id 1):");
    assert_eq!(
        block[1],
        format!(
            "    disk 0      {} (qcow2, 64.0M), base {} (qcow2, 64.0M)",
            path("web.qcow2"),
            path("base.qcow2")
        )
    );
    assert_eq!(block[2], format!("    cdrom       {}", path("cd.iso")));
    let nic = block[3];
    assert!(
        nic.starts_with("    nic 0       tap")
            && nic.ends_with(", local 100.64.1.2, lease 100.64.1.3"),
        "{nic}"
    );
    assert_eq!(block[4], "    boot        cdrom");
    assert!(
        block[5].starts_with("    uptime      ") && block[5].ends_with('s'),
        "{verbose}"
    );
    assert!(block[6].starts_with("    cpu time    "), "{verbose}");
    assert_eq!(block[7], "    last end    -");
    assert_eq!(block.len(), 8, "{verbose}");

    // -jv: the same details as members (the schema is checked against
    // every kind of value in vmctl's status_json test).
    let json = daemon.vmctl_ok(&["status", "-jv", "web"]);
    for member in [
        format!(
            "\"disks\":[{{\"path\":\"{}\",\"format\":\"qcow2\",\"size\":67108864,\
             \"base\":[{{\"path\":\"{}\",\"format\":\"qcow2\",\"size\":67108864}}],\
             \"error\":null}}]",
            path("web.qcow2"),
            path("base.qcow2")
        ),
        format!("\"cdrom\":\"{}\"", path("cd.iso")),
        "\"local\":\"100.64.1.2\",\"lease\":\"100.64.1.3\"".into(),
        "\"boot\":\"cdrom\",\"uptime\":".into(),
        "\"ended\":null}]".into(),
    ] {
        assert!(json.contains(&member), "{member} in {json}");
    }
    daemon.vmctl_ok(&["stop", "-f", "-w", "web"]);
}

/// A status table line's columns without CURMEM (the fifth), which
/// changes while the guest runs.
fn without_curmem(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .enumerate()
        .filter(|(column, _)| *column != 4)
        .map(|(_, word)| word)
        .collect()
}
