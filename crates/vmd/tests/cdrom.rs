//! End to end on KVM: SeaBIOS boots GRUB from an ISO given to `vmctl
//! start -r`, through the virtio-scsi CD-ROM; with a bootable disk as
//! well, `-B cdrom` boots the CD and the default boots the disk; images
//! that are not there or not files are refused with the spec's messages.

use std::time::Duration;

use testkit::daemon::{SEABIOS, TestDaemon, strip_escapes};
use testkit::grub;

/// GRUB's core loads through int13 at a few KB/s on a software CPU.
const BOOT: Duration = Duration::from_secs(150);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn seabios_boots_grub_from_the_cd() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let iso = grub::boot_cd();
    daemon.start_seabios_vm_ok("cdvm", &["-r", iso.to_str().unwrap()]);
    let text = strip_escapes(&daemon.console_until("cdvm", grub::CD_DONE, BOOT));
    assert!(text.contains(grub::CD_STARTED), "{text}");
    // A line GRUB read from the CD's file system.
    assert!(text.contains(grub::CD_CONFIG_LINE), "{text}");
    daemon.stop_or_find_ended("cdvm");
}

/// A copy of the GRUB disk and the GRUB CD for a VM that has both.
fn disk_and_cd(daemon: &TestDaemon) -> (String, String) {
    let disk = grub::boot_disk_copy(&daemon.dir().join("disk.img"));
    let iso = grub::boot_cd();
    (
        disk.to_str().unwrap().to_string(),
        iso.to_str().unwrap().to_string(),
    )
}

#[test]
fn boot_device_cdrom_boots_the_cd_before_a_bootable_disk() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let (disk, iso) = disk_and_cd(&daemon);
    daemon.start_seabios_vm_ok("both", &["-d", &disk, "-r", &iso, "-B", "cdrom"]);
    let text = strip_escapes(&daemon.console_until("both", grub::CD_DONE, BOOT));
    assert!(text.contains(grub::CD_CONFIG_LINE), "{text}");
    assert!(!text.contains(grub::STARTED), "the disk booted: {text}");
    // SeaBIOS read a boot order naming target 0 of the SCSI controller
    // (host bridge 0, entropy 1, the disk 2, the CD 3) and nothing else,
    // and found the CD in it.
    let log = daemon.log();
    assert!(
        log.contains("firmware: 1: /pci@i0cf8/*@3/*@0/*@0,40000100"),
        "{log}"
    );
    assert!(
        log.contains("firmware: 2: /pci@i0cf8/*@3/*@0/*@0,0"),
        "{log}"
    );
    assert!(log.contains("firmware: 3: HALT"), "{log}");
    daemon.stop_or_find_ended("both");
}

#[test]
fn without_a_boot_device_the_disk_boots_first() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let (disk, iso) = disk_and_cd(&daemon);
    daemon.start_seabios_vm_ok("both", &["-d", &disk, "-r", &iso]);
    let text = strip_escapes(&daemon.console_until("both", grub::DONE, BOOT));
    assert!(text.contains(grub::CONFIG_LINE), "{text}");
    assert!(!text.contains(grub::CD_STARTED), "the CD booted: {text}");
    daemon.stop_or_find_ended("both");
}

#[test]
fn iso_images_that_are_missing_or_not_files_are_refused() {
    testkit::needs!(root, kvm);
    let dir = testkit::tmp::TempDir::new("cdrom-conf");
    let config = dir.join("vm.conf");
    let missing = dir.join("missing.iso");
    std::fs::write(
        &config,
        format!(
            "vm \"gone\" {{\n    disable\n    boot \"{SEABIOS}\"\n    memory 64M\n    cdrom \"{}\"\n}}\n",
            missing.display()
        ),
    )
    .unwrap();
    let daemon = TestDaemon::start_with(&["-f", config.to_str().unwrap()]);
    // vm.conf names an image that is not there.
    let out = daemon.vmctl(&["start", "gone"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "vmctl: could not find specified iso image: {}: No such file or directory\n",
            missing.display()
        )
    );
    assert!(
        daemon.log().contains("can't open cdrom"),
        "{}",
        daemon.log()
    );
    // A directory passes vmctl's path check, not vmd's.
    let out = daemon.start_seabios_vm("dirvm", &["-r", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "vmctl: specified iso image is not a regular file: {}: a directory, not a regular file\n",
            dir.path().display()
        )
    );
}
