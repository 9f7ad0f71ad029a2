//! How a VM's end is told (vmctl(8), STATUS and CONSOLE): a VM that ends
//! other than by a guest power-off or a requested stop says how, on its
//! attached console and afterwards; its last output stays readable.

use std::time::Duration;

use testkit::daemon::TestDaemon;
use testkit::guest::{TRIPLE_FAULT, firmware};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a tiny firmware image into the daemon's directory.
fn tiny_firmware(daemon: &TestDaemon, name: &str, program: &str) -> String {
    let path = daemon.dir().join(name);
    std::fs::write(&path, firmware(program)).unwrap();
    path.display().to_string()
}

/// Prints a line, then idles.
const GREETER: &str = r#"
main:
    PRINT msg
.idle:
    hlt
    jmp .idle
msg: db "hello from the guest", 13, 10, 0
"#;

#[test]
fn a_killed_vm_says_so_on_its_console_and_stays_listed() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let image = tiny_firmware(&daemon, "greeter.bin", GREETER);
    daemon.vmctl_ok(&["start", "-b", &image, "victim"]);
    let mut session = daemon.console("victim");
    session
        .read_until("hello from the guest", Duration::from_secs(30))
        .unwrap();
    let pid = daemon.vm_pid("victim") as i32;
    // SAFETY: killing the VM process the test just started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = session
        .wait_exit(Duration::from_secs(10))
        .expect("the console ends with the VM");
    let text = session.stderr();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.ends_with("[EOT]\nvmctl: vm victim ended: vm process killed by signal 9 (SIGKILL)\n"),
        "{text:?}"
    );
    // The ad-hoc VM stays listed, stopped, with the plain table's columns.
    let row = daemon.status_row("victim").expect("still listed");
    assert_eq!(row[1], "-");
    assert_eq!(row[7], "stopped");
    assert!(
        daemon
            .vmctl_ok(&["status", "-v", "victim"])
            .contains("\n    last end    vm process killed by signal 9 (SIGKILL)\n")
    );
    assert!(daemon.vmctl_ok(&["status", "-jv", "victim"]).contains(
        "\"ended\":{\"kind\":\"signal\",\"reason\":\"vm process killed by signal 9 (SIGKILL)\"}"
    ));
    // Its console now only tells how it ended (the killed process took
    // its last output with it).
    let out = daemon.vmctl(&["console", "victim"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "vmctl: vm victim ended: vm process killed by signal 9 (SIGKILL)\n"
    );
    // Starting a new VM under its name replaces it.
    daemon.vmctl_ok(&["start", "-b", &image, "victim"]);
    assert_eq!(daemon.status_row("victim").unwrap()[7], "running");
    daemon.vmctl_ok(&["stop", "-f", "-w", "victim"]);
    assert!(
        daemon.status_row("victim").is_none(),
        "a stopped ad-hoc VM is forgotten as before"
    );
}

#[test]
fn a_clean_end_is_quiet_and_leaves_nothing_behind() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let image = tiny_firmware(&daemon, "greeter.bin", GREETER);
    daemon.vmctl_ok(&["start", "-b", &image, "calm"]);
    let mut session = daemon.console("calm");
    session
        .read_until("hello from the guest", Duration::from_secs(30))
        .unwrap();
    daemon.vmctl_ok(&["stop", "-f", "calm"]);
    let status = session.wait_exit(Duration::from_secs(10)).unwrap();
    assert!(status.success());
    assert!(session.stderr().ends_with("[EOT]\n"));
    assert!(daemon.status_row("calm").is_none());
}

/// A guest that resets itself at once, over and over (through the
/// keyboard controller; a triple fault takes the same way).
const RESETTER: &str = r#"
main:
    PRINT msg
    DONE
msg: db "about to reset", 13, 10, 0
"#;

#[test]
fn a_guest_that_keeps_resetting_ends_with_the_reason_and_its_output_kept() {
    testkit::needs!(root, kvm);
    let scratch = testkit::tmp::TempDir::new("fault");
    let image = scratch.join("fault.bin");
    std::fs::write(&image, firmware(RESETTER)).unwrap();
    let config = scratch.join("vm.conf");
    std::fs::write(
        &config,
        format!(
            "vm \"faulty\" {{\n    boot \"{}\"\n    memory 64M\n}}\n",
            image.display()
        ),
    )
    .unwrap();
    let daemon = TestDaemon::start_with(&["-f", config.to_str().unwrap()]);
    daemon.wait_for_log("vm 1 restarted too quickly", Duration::from_secs(60));
    daemon.wait_for(
        || {
            daemon
                .status_row("faulty")
                .is_some_and(|row| row[7] == "stopped")
        },
        Duration::from_secs(10),
        "the VM to be stopped",
    );
    let out = daemon.vmctl(&["console", "faulty"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("about to reset"), "{}", stdout(&out));
    assert_eq!(
        stderr(&out),
        "vmctl: vm faulty ended: start failed: the guest reset itself 3 times in a row, \
         each within 6 s of its start\n"
    );
}

#[test]
fn a_triple_fault_is_logged_with_the_registers() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let image = tiny_firmware(&daemon, "faulter.bin", TRIPLE_FAULT);
    daemon.vmctl_ok(&["start", "-b", &image, "faulter"]);
    daemon.wait_for_log(
        "vcpu 0: triple fault, resetting: rip=",
        Duration::from_secs(60),
    );
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("triple fault, resetting"))
        .unwrap();
    for register in ["rsp=", "cs=", "cr0=", "efer="] {
        assert!(line.contains(register), "{line}");
    }
    // The guest faults again at once after each reset, and the restart
    // limit may end it before this stop comes.
    daemon.stop_or_find_ended("faulter");
}

#[test]
fn an_emulation_failure_ends_the_attached_console_with_its_cause() {
    testkit::needs!(root, kvm);
    // Code fetched from the legacy VGA hole, where no memory is: KVM
    // cannot emulate it and the VM process fails.
    let daemon = TestDaemon::start();
    let image = tiny_firmware(
        &daemon,
        "hole.bin",
        r#"
main:
    PRINT msg
    jmp 0xa000:0
msg: db "jumping into the hole", 13, 10, 0
"#,
    );
    let out = daemon.vmctl(&["start", "-c", "-b", &image, "holey"]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", daemon.log());
    assert!(stdout(&out).contains("jumping into the hole"));
    assert!(
        text.contains("[EOT]\nvmctl: vm holey ended: vm error: vcpu 0: "),
        "{text:?}\n{}",
        daemon.log()
    );
    // Its output stays readable.
    let out = daemon.vmctl(&["console", "holey"]);
    assert!(stdout(&out).contains("jumping into the hole"));
    assert!(stderr(&out).starts_with("vmctl: vm holey ended: vm error: vcpu 0: "));
}

#[test]
fn a_configured_vm_that_failed_to_start_differs_from_one_never_started() {
    testkit::needs!(root, kvm);
    use std::os::fd::AsRawFd;
    let scratch = testkit::tmp::TempDir::new("failed-start");
    let disk = scratch.join("busy.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    // Another holder of the image: vmd cannot lock it.
    let holder = std::fs::File::open(&disk).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
    let config = scratch.join("vm.conf");
    std::fs::write(
        &config,
        format!(
            "vm \"broken\" {{\n    memory 64M\n    disk \"{0}\"\n}}\n\
             vm \"idle\" {{\n    disable\n    memory 64M\n    disk \"{0}\"\n}}\n",
            disk.display()
        ),
    )
    .unwrap();
    let daemon = TestDaemon::start_with(&["-f", config.to_str().unwrap()]);
    daemon.wait_for_log("failed to start vm broken", Duration::from_secs(10));
    let out = daemon.vmctl(&["console", "broken"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("vmctl: vm broken ended: start failed: "),
        "{}",
        stderr(&out)
    );
    let out = daemon.vmctl(&["console", "idle"]);
    assert_eq!(stderr(&out), "vmctl: console not found\n");
    // The table shows both as stopped; -v and -jv tell them apart.
    let verbose = daemon.vmctl_ok(&["status", "-v"]);
    assert!(
        verbose.contains("vm broken (id 1):\n    disk 0      "),
        "{verbose}"
    );
    assert!(
        verbose.contains("    last end    start failed: could not open disk image(s): "),
        "{verbose}"
    );
    assert!(verbose.ends_with("    last end    -\n"), "{verbose}");
    let json = daemon.vmctl_ok(&["status", "-jv"]);
    assert!(
        json.contains("\"ended\":{\"kind\":\"start-failed\","),
        "{json}"
    );
    assert!(json.contains("\"ended\":null"), "{json}");
    drop(holder);
}
