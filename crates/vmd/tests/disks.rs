//! End to end on KVM: SeaBIOS boots GRUB from virtio-blk disks given to
//! `vmctl start -d`, raw and as a qcow2 overlay; images stay locked while
//! their VM runs; `-B disk` hands the BIOS a boot order.

use std::time::Duration;

use testkit::daemon::{TestDaemon, strip_escapes};
use testkit::grub;

/// GRUB's core loads through int13 at a few KB/s on a software CPU.
const BOOT: Duration = Duration::from_secs(150);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `-d` for each of `disks`, then `extra`.
fn options<'a>(disks: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = extra.to_vec();
    for disk in disks {
        args.extend_from_slice(&["-d", disk.as_str()]);
    }
    args
}

/// `vmctl start` of `name` with SeaBIOS, 64 MiB, `disks` and `extra`
/// options.
fn start(
    daemon: &TestDaemon,
    name: &str,
    disks: &[String],
    extra: &[&str],
) -> std::process::Output {
    daemon.start_seabios_vm(name, &options(disks, extra))
}

fn start_ok(daemon: &TestDaemon, name: &str, disks: &[String], extra: &[&str]) {
    daemon.start_seabios_vm_ok(name, &options(disks, extra));
}

#[test]
fn seabios_boots_grub_from_a_raw_disk_and_grub_sees_the_second_disk() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let boot = grub::boot_disk_copy(&daemon.dir().join("boot.img"));
    let second = daemon.dir().join("second.img");
    std::fs::File::create(&second)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let disks = [
        boot.display().to_string(),
        format!("raw:{}", second.display()),
    ];
    start_ok(&daemon, "grubvm", &disks, &[]);
    let text = strip_escapes(&daemon.console_until("grubvm", grub::DONE, BOOT));
    // GRUB's own words: its boot sector, then its kernel.
    assert!(text.contains("GRUB loading."), "{text}");
    assert!(text.contains("Welcome to GRUB"), "{text}");
    assert!(text.contains(grub::STARTED), "{text}");
    assert!(text.contains(grub::CONFIG_LINE), "{text}");
    // GRUB's own `ls`: both BIOS disks and the boot partition. (SeaBIOS's
    // serial console may flush a late "!" of GRUB's welcome into the
    // listing while GRUB probes the disks, so no line is taken whole.)
    for device in ["(hd0)", "(hd0,msdos1)", "(hd1)"] {
        assert!(text.contains(device), "{device} not listed: {text}");
    }
    daemon.stop_or_find_ended("grubvm");
}

#[test]
fn grub_boots_from_a_qcow2_overlay_and_images_are_locked_while_the_vm_runs() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let base = grub::boot_disk_copy(&daemon.dir().join("base.img"));
    let overlay = daemon.dir().join("overlay.qcow2");
    // `vmctl create -b` wants a qcow2 base; QEMU's tool makes the overlay
    // over a raw one.
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&base)
        .arg(&overlay)
        .output()
        .expect("qemu-img (qemu-utils)");
    assert!(out.status.success(), "{}", stderr(&out));
    let disks = [format!("qcow2:{}", overlay.display())];
    start_ok(&daemon, "overlayvm", &disks, &["-B", "disk"]);
    // A second VM on the same overlay is refused while the first runs.
    let out = start(&daemon, "intruder", &disks, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "vmctl: could not open disk image(s): {}: in use by vm overlayvm\n",
            overlay.display()
        )
    );

    let text = daemon.console_until("overlayvm", grub::DONE, BOOT);
    assert!(text.contains(grub::STARTED), "{text}");
    assert!(text.contains(grub::CONFIG_LINE), "{text}");
    // `-B disk`: SeaBIOS read a boot order naming the first virtio-blk
    // device's slot (the host bridge has slot 0, the entropy device 1)
    // and nothing else.
    let log = daemon.log();
    assert!(log.contains("firmware: 1: /pci@i0cf8/*@2"), "{log}");
    assert!(log.contains("firmware: 2: HALT"), "{log}");
    daemon.stop_or_find_ended("overlayvm");
    daemon.wait_for(
        || !String::from_utf8_lossy(&daemon.vmctl(&["status"]).stdout).contains("overlayvm"),
        Duration::from_secs(10),
        "overlayvm to stop",
    );
    // Once it stopped, the image is free again.
    start_ok(&daemon, "successor", &disks, &[]);
}

#[test]
fn an_image_that_does_not_open_is_refused() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    // qcow2 magic and nothing else: vmctl accepts the path, vmd's image
    // chain cannot read a header from it.
    let broken = daemon.dir().join("broken.qcow2");
    std::fs::write(&broken, b"QFI\xfb").unwrap();
    let out = start(
        &daemon,
        "brokenvm",
        &[format!("qcow2:{}", broken.display())],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    // The cause names the image; what is wrong with it is the image
    // chain's to word.
    let prefix = format!(
        "vmctl: could not open disk image(s): {}: ",
        broken.display()
    );
    assert!(stderr(&out).starts_with(&prefix), "{}", stderr(&out));
    assert!(daemon.log().contains("can't open disk"), "{}", daemon.log());
}
