//! Stopping VMs gracefully (docs/lifecycle.md, "Stop, reboot and the end of a VM"; docs/machine.md, "vmmci"): a guest with a running vmmci
//! driver is asked and given time; one that does not answer is ended after
//! the acknowledgement timeout; one without the driver is ended at once.

use std::time::{Duration, Instant};

use testkit::daemon::TestDaemon;
use testkit::guest::{FIND_VMMCI, firmware};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A guest that starts its vmmci driver, says "ready", then runs `body`.
fn vmmci_guest(daemon: &TestDaemon, name: &str, body: &str) -> String {
    let program = format!(
        r#"
main:
    call find_vmmci
    lea dx, [bx + 0x12]
    mov al, 4
    out dx, al
    PRINT ready
{body}
ready: db "ready", 13, 10, 0
{FIND_VMMCI}
"#
    );
    let path = daemon.dir().join(format!("{name}.bin"));
    std::fs::write(&path, firmware(&program)).unwrap();
    path.display().to_string()
}

#[test]
fn a_guest_that_acknowledges_is_stopped_when_it_reboots() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let image = vmmci_guest(
        &daemon,
        "polite",
        r#"
    ; wait for a request, acknowledge it, then reset
.poll:
    lea dx, [bx + 0x14]
    in eax, dx
    test eax, eax
    jz .poll
    out dx, eax
    PRINT ack
    mov al, 0xfe
    out 0x64, al
.hang:
    jmp .hang
ack: db "acknowledged", 13, 10, 0
"#,
    );
    daemon.vmctl_ok(&["start", "-b", &image, "polite"]);
    let mut console = daemon.console("polite");
    console
        .read_until("ready", Duration::from_secs(30))
        .unwrap();
    let out = daemon.vmctl(&["stop", "-w", "polite"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "stopping vm polite: terminated vm 1\n");
    console
        .read_until("acknowledged", Duration::from_secs(5))
        .expect("the guest saw the request");
    // The reset that follows a requested stop ends the VM; no restart.
    assert!(!daemon.log().contains("polite: vm 1 is rebooting"));
}

#[test]
fn a_guest_that_does_not_answer_is_ended_after_the_timeout() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let image = vmmci_guest(
        &daemon,
        "deaf",
        r#"
.spin:
    jmp .spin
"#,
    );
    daemon.vmctl_ok(&["start", "-b", &image, "deaf"]);
    daemon.console_until("deaf", "ready", Duration::from_secs(30));
    let started = Instant::now();
    let out = daemon.vmctl(&["stop", "-w", "deaf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "stopping vm deaf: terminated vm 1\n");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(30),
        "ended after {took:?}"
    );
    assert!(daemon.log().contains("vmmci: timeout, ending the vm"));
}

#[test]
fn a_guest_powering_itself_off_shows_stopping_then_ends() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let image = vmmci_guest(
        &daemon,
        "leaving",
        r#"
    lea dx, [bx + 0x14]
    mov eax, 1
    out dx, eax
.spin:
    jmp .spin
"#,
    );
    daemon.vmctl_ok(&["start", "-b", &image, "leaving"]);
    let state = || {
        let out = daemon.vmctl(&["status", "leaving"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .map(|l| l.split_whitespace().nth(7).unwrap_or("").to_string())
    };
    daemon.wait_for(
        || state().as_deref() == Some("stopping"),
        Duration::from_secs(30),
        "the VM to show stopping",
    );
    // A second stop while it is shutting down is refused without -f.
    let out = daemon.vmctl(&["stop", "leaving"]);
    assert_eq!(
        stderr(&out),
        "stopping vm leaving: failed: Operation already in progress\n"
    );
    daemon.wait_for(
        || state().is_none(),
        Duration::from_secs(10),
        "the VM to end",
    );
}

// ----- with GRUB on a virtio disk: ACPI power-off, reboot, pause -----

const BANNER: &str = "SeaBIOS (version";
const GRUB_BOOT: Duration = Duration::from_secs(120);

/// Starts a VM booting GRUB from a disk running `script`.
fn start_grub(daemon: &TestDaemon, name: &str, script: &str, modules: &[&str]) {
    let disk = testkit::grub::scripted_disk_copy(
        script,
        modules,
        &daemon.dir().join(format!("{name}.img")),
    );
    daemon.vmctl_ok(&["start", "-m", "64M", "-d", disk.to_str().unwrap(), name]);
}

fn vm_row(daemon: &TestDaemon, name: &str) -> Option<Vec<String>> {
    let out = daemon.vmctl(&["status", name]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
}

#[test]
fn grub_halt_powers_the_vm_off_through_acpi() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    start_grub(&daemon, "halter", "echo grub-halt-test: halting\nhalt", &[]);
    let mut console = daemon.console("halter");
    console
        .read_until("grub-halt-test: halting", GRUB_BOOT)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm_row(&daemon, "halter").is_some() {
        assert!(
            Instant::now() < deadline,
            "GRUB's halt did not power the VM off; console:\n{}\n--- log ---\n{}",
            console.text(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !daemon.log().contains("halter: vm 1 is rebooting"),
        "a power-off, not a reset"
    );
}

#[test]
fn grub_reboot_restarts_the_vm_with_the_same_id() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    start_grub(
        &daemon,
        "rebooter",
        "echo grub-reboot-test: rebooting\nreboot",
        &["reboot"],
    );
    let mut console = daemon.console("rebooter");
    console
        .read_until("grub-reboot-test: rebooting", GRUB_BOOT)
        .unwrap();
    daemon.wait_for_log("rebooter: vm 1 is rebooting", Duration::from_secs(60));
    // The firmware comes up again on the same console.
    daemon.wait_for(
        || console.text().matches(BANNER).count() >= 2,
        Duration::from_secs(60),
        "a second SeaBIOS banner",
    );
    assert_eq!(vm_row(&daemon, "rebooter").unwrap()[0], "1", "same id");
    daemon.vmctl_ok(&["stop", "-f", "rebooter"]);
}

#[test]
fn pause_freezes_a_grub_countdown_and_unpause_resumes_it() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    start_grub(
        &daemon,
        "counter",
        "echo grub-pause-test: counting\nsleep --verbose 40\necho grub-pause-test: done",
        &["sleep"],
    );
    let mut console = daemon.console("counter");
    console
        .read_until("grub-pause-test: counting", GRUB_BOOT)
        .unwrap();
    // Let a few seconds tick by, then freeze.
    std::thread::sleep(Duration::from_secs(3));
    daemon.vmctl_ok(&["pause", "counter"]);
    std::thread::sleep(Duration::from_millis(500));
    let frozen = console.text();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(console.text(), frozen, "no output while paused");
    daemon.vmctl_ok(&["unpause", "counter"]);
    daemon.wait_for(
        || console.text().len() > frozen.len(),
        Duration::from_secs(20),
        "the countdown to go on",
    );
    daemon.vmctl_ok(&["stop", "-f", "counter"]);
}

/// The daemon's descriptors that are sockets: its control socket, its
/// clients, and a channel per VM process.
fn sockets(pid: u32) -> usize {
    testkit::daemon::open_descriptors(pid)
        .iter()
        .filter(|target| target.starts_with("socket:"))
        .count()
}

#[test]
fn stopped_vms_leave_no_channel_to_their_processes() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let image = daemon.dir().join("idle.bin");
    std::fs::write(&image, firmware("main:\n    hlt\n    jmp main\n")).unwrap();
    let before = sockets(daemon.pid());
    // Several VMs ending together: their processes exit and their
    // channels close in whatever order the daemon sees them.
    for round in 0..20 {
        for i in 0..4 {
            let name = format!("idle{round}x{i}");
            daemon.vmctl_ok(&["start", "-b", image.to_str().unwrap(), "-m", "32M", &name]);
        }
        daemon.vmctl_ok(&["stop", "-f", "-w", "-a"]);
        // Once vmctl's own connection is gone, the sockets are the ones
        // from before any VM ran: the channel of a process that ended
        // went with it, not when some later child happens to exit.
        daemon.wait_for(
            || sockets(daemon.pid()) <= before,
            Duration::from_secs(5),
            &format!("the daemon's {before} sockets (round {round})"),
        );
    }
}
