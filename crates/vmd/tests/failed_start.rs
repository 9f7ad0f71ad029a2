//! A start that fails leaves the VM as it was (docs/lifecycle.md,
//! "Launch"): the boot image `vmctl start -b` gave it for its next boot is
//! still the one its next start boots.

use std::time::Duration;

use testkit::daemon::TestDaemon;
use testkit::guest::firmware;

/// A guest that says `word` and idles.
fn sayer(word: &str) -> Vec<u8> {
    firmware(&format!(
        "main:\n    PRINT msg\n.idle:\n    hlt\n    jmp .idle\nmsg: db \"{word}\", 13, 10, 0\n"
    ))
}

#[test]
fn the_kernel_given_to_a_start_that_failed_boots_at_the_next() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let path = |name: &str| daemon.dir().join(name).display().to_string();
    std::fs::write(path("configured.bin"), sayer("configured")).unwrap();
    std::fs::write(path("given.bin"), sayer("given")).unwrap();
    std::fs::write(path("disk.img"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(
        path("vm.conf"),
        format!(
            "vm \"keeper\" {{\n    disable\n    boot \"{}\"\n    memory 64M\n    disk \"{}\"\n}}\n",
            path("configured.bin"),
            path("disk.img")
        ),
    )
    .unwrap();
    daemon.vmctl_ok(&["load", &path("vm.conf")]);

    // The disk is gone: the start with a kernel of its own fails there.
    std::fs::rename(path("disk.img"), path("away.img")).unwrap();
    let out = daemon.vmctl(&["start", "-b", &path("given.bin"), "keeper"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("could not open disk image(s)"),
        "{out:?}"
    );

    // Back again, the disk lets the VM start: with the kernel given.
    std::fs::rename(path("away.img"), path("disk.img")).unwrap();
    daemon.vmctl_ok(&["start", "keeper"]);
    let console = daemon.console_until("keeper", "given", Duration::from_secs(30));
    assert!(!console.contains("configured"), "{console}");
    daemon.vmctl_ok(&["stop", "-f", "-w", "keeper"]);
}
