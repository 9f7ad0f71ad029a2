//! End to end on KVM: a private vmd per test, the real vmctl, SeaBIOS or a
//! tiny firmware assembled in the test.

use std::time::Duration;

use testkit::daemon::{ConsoleSession, TestDaemon};
use testkit::guest::firmware;

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";
const BANNER: &str = "SeaBIOS (version";
const BOOT: Duration = Duration::from_secs(90);

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

#[test]
fn seabios_boots_and_the_vm_is_listed_then_stopped() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let out = daemon.vmctl(&["start", "-b", BIOS, "-m", "256M", "vm1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.starts_with("vmctl: started vm 1 successfully, tty /dev/pts/"),
        "{message}"
    );
    let tty = message.trim_end().rsplit(' ').next().unwrap().to_string();

    daemon.console_until("vm1", BANNER, BOOT);

    let out = daemon.vmctl(&["status"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME"
    );
    let row = lines.next().unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[0], "1");
    assert!(cols[1].parse::<u32>().is_ok(), "pid column: {row}");
    assert_eq!(cols[2], "1");
    assert_eq!(cols[3], "256M");
    assert_eq!(&tty["/dev/".len()..], cols[5]);
    assert_eq!(&cols[6..], ["root", "running", "vm1"]);
    // Fixed-width columns exactly as the printf format lays them out.
    let expected = format!(
        "{:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>12} {:>8} {}",
        1, cols[1], 1, "256M", cols[4], cols[5], "root", "running", "vm1"
    );
    assert_eq!(row, expected);

    let out = daemon.vmctl(&["stop", "vm1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "stopping vm vm1: requested to shutdown vm 1\n"
    );
    daemon.wait_for(
        || daemon.status_row("vm1").is_none(),
        Duration::from_secs(10),
        "vm1 to go away",
    );
    let out = daemon.vmctl(&["status"]);
    assert_eq!(out.status.code(), Some(1), "no VM at all: exit 1");
    assert_eq!(stdout(&out).lines().count(), 1, "header only");
    assert!(
        daemon
            .log()
            .contains("the guest has no shutdown channel, terminating the vm")
    );
}

#[test]
fn a_killed_vm_process_leaves_the_vm_stopped_and_the_daemon_running() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", BIOS, "victim"]);
    let pid = daemon.vm_pid("victim") as i32;
    // SAFETY: killing the VM process the test just started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // It stays listed, stopped, with how it ended (vmctl(8), STATUS).
    daemon.wait_for(
        || {
            daemon
                .status_row("victim")
                .is_some_and(|row| row[7] == "stopped")
        },
        Duration::from_secs(10),
        "the killed VM to be stopped",
    );
    assert!(daemon.log().contains("process killed by signal 9"));
    // The daemon carries on: a new VM starts and boots.
    daemon.vmctl_ok(&["start", "-b", BIOS, "survivor"]);
    daemon.console_until("survivor", BANNER, BOOT);
}

#[test]
fn a_console_whose_vm_ends_before_it_is_attached_learns_how_it_ended() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    // The VM process cannot answer the attach (as when a guest resets
    // before its process reads the request), then dies.
    let pid = start_a_frozen_victim(&daemon);
    let session = daemon.console("victim");
    daemon.wait_for_log("victim: console attach by client", BOOT);
    killed_while_attaching(&daemon, pid, session);
}

#[test]
fn a_console_attached_while_the_vm_process_ends_learns_how_it_ended() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    // The VM process has said its last and closed its channel, but is not
    // reaped yet (tearing its guest down takes a while under load): vmd
    // has read everything from this run and cannot write to it.
    let pid = start_a_frozen_victim(&daemon);
    shut_channel(pid);
    daemon.wait_for_log("vm process channel 1 closed", BOOT);
    let mut session = daemon.console("victim");
    // Held until the run ends, not refused.
    if let Some(status) = session.wait_exit(Duration::from_secs(3)) {
        panic!(
            "the attach was answered at once ({status}): {}",
            session.stderr()
        );
    }
    daemon.wait_for_log("victim: console attach by client", BOOT);
    killed_while_attaching(&daemon, pid, session);
}

/// Starts the VM `victim` and stops its VM process (SIGSTOP), which then
/// answers nothing; its pid.
fn start_a_frozen_victim(daemon: &TestDaemon) -> i32 {
    daemon.vmctl_ok(&["start", "-b", BIOS, "victim"]);
    let pid = daemon.vm_pid("victim") as i32;
    // SAFETY: signalling the VM process the test just started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    pid
}

/// Kills the VM process `pid` of `victim` while `session` still waits for
/// the answer to its attach: vmctl console says how the VM ended and
/// exits 1, as an attached session would.
fn killed_while_attaching(daemon: &TestDaemon, pid: i32, mut session: ConsoleSession) {
    // SAFETY: killing the VM process the test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = session.wait_exit(BOOT).expect("vmctl console ends");
    let err = session.stderr();
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "vmctl: vm victim ended: vm process killed by signal 9 (SIGKILL)\n",
        "{}",
        daemon.log()
    );
}

/// Shuts both ways the VM process `pid`'s end of its channel to vmd, as
/// its exit does, without ending the process.
fn shut_channel(pid: i32) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes no pointers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a descriptor pidfd_open just returned, owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd takes no pointers.
    let channel = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            pidfd.as_raw_fd(),
            vmm::process::CHANNEL_FD,
            0,
        )
    };
    assert!(
        channel >= 0,
        "pidfd_getfd: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a descriptor pidfd_getfd just returned, owned by nothing else.
    let channel = unsafe { OwnedFd::from_raw_fd(channel as i32) };
    // SAFETY: shutdown takes no pointers; the socket is shared with the
    // VM process, which is the point.
    let shut = unsafe { libc::shutdown(channel.as_raw_fd(), libc::SHUT_RDWR) };
    assert_eq!(shut, 0, "shutdown: {}", std::io::Error::last_os_error());
}

#[test]
fn two_vms_run_at_once() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", BIOS, "-m", "128M", "one"]);
    daemon.vmctl_ok(&["start", "-b", BIOS, "-m", "128M", "two"]);
    daemon.console_until("one", BANNER, BOOT);
    daemon.console_until("two", BANNER, BOOT);
    let a = daemon.status_row("one").unwrap();
    let b = daemon.status_row("two").unwrap();
    assert_eq!((a[0].as_str(), b[0].as_str()), ("1", "2"));
    assert_ne!(a[1], b[1], "separate VM processes");
    assert_ne!(a[5], b[5], "separate consoles");
}

#[test]
fn a_16g_guest_starts_and_uses_little_memory() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", BIOS, "-m", "16G", "big"]);
    daemon.console_until("big", BANNER, BOOT);
    let row = daemon.status_row("big").unwrap();
    assert_eq!(row[3], "16.0G");
    let curmem = scaled_bytes(&row[4]);
    assert!(curmem < 64 << 20, "CURMEM {} is not small", row[4]);
    // The VM process itself is small too: resident memory well under 1 GiB.
    let pid = &row[1];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(rss_kb < 256 * 1024, "VmRSS {rss_kb} kB");
}

/// Inverse of fmt_scaled, good enough for comparisons.
fn scaled_bytes(text: &str) -> u64 {
    let (number, unit) = text.split_at(text.len() - 1);
    let factor: u64 = match unit {
        "B" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => panic!("unit of {text}"),
    };
    (number.parse::<f64>().unwrap() * factor as f64) as u64
}

#[test]
fn console_replays_what_came_before_and_is_exclusive() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", BIOS, "quiet"]);
    // Let the banner go by with nobody attached.
    daemon.wait_for_log("quiet: firmware: sercon: using ioport", BOOT);
    std::thread::sleep(Duration::from_secs(2));
    let mut first = daemon.console("quiet");
    first
        .read_until(BANNER, Duration::from_secs(20))
        .expect("the banner printed before attach is replayed");
    // A second client is refused while the first is attached.
    let out = daemon.vmctl(&["console", "quiet"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "vmctl: failed to open the console: Device or resource busy\n"
    );
    drop(first);
    // After the first detaches, a new client gets the replay again.
    daemon.console_until("quiet", BANNER, Duration::from_secs(20));
}

#[test]
fn console_ends_when_the_vm_stops() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", BIOS, "short"]);
    let mut session = daemon.console("short");
    session.read_until(BANNER, BOOT).unwrap();
    daemon.vmctl_ok(&["stop", "-f", "short"]);
    let status = session
        .wait_exit(Duration::from_secs(10))
        .expect("console exits when the VM stops");
    assert!(status.success());
    assert!(session.stderr().contains("[EOT]"));
}

#[test]
fn stop_wait_and_wait_report_termination() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", BIOS, "w1"]);
    daemon.console_until("w1", BANNER, BOOT);
    let waiter = {
        let socket = daemon.socket.clone();
        std::thread::spawn(move || {
            std::process::Command::new(testkit::daemon::binary("vmctl"))
                .args(["wait", "w1"])
                .env("VMD_SOCKET", socket)
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let out = daemon.vmctl(&["stop", "-w", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "stopping vm: terminated vm 1\n");
    let waited = waiter.join().unwrap();
    assert!(waited.status.success());
    assert_eq!(stderr(&waited), "waiting for vm w1: terminated vm 1\n");

    // Stopping or waiting for what is not there.
    let out = daemon.vmctl(&["stop", "w1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "stopping vm w1: vm not found\n");
    let out = daemon.vmctl(&["wait", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "waiting for vm: vm not found\n");
}

#[test]
fn start_errors_from_the_daemon() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", BIOS, "dup"]);
    let out = daemon.vmctl(&["start", "dup"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "vmctl: start vm command failed: Operation already in progress\n"
    );
    let out = daemon.vmctl(&["start", "nosuchvm"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "vmctl: could not open disk image(s): vm not found\n"
    );

    // A firmware image whose size is not whole 64 KiB blocks is refused.
    let bad = daemon.dir().join("bad.bin");
    std::fs::write(&bad, vec![0u8; 1000]).unwrap();
    let out = daemon.vmctl(&["start", "-b", bad.to_str().unwrap(), "bad"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "vmctl: start vm command failed: Exec format error: \
         bios image size 1000 is not a multiple of 64 KiB between 64 KiB and 16 MiB\n"
    );
    assert!(
        daemon.status_row("bad").is_none(),
        "a failed ad-hoc VM is forgotten"
    );

    // Pause and unpause, including the idempotent second pause.
    let out = daemon.vmctl(&["pause", "dup"]);
    assert_eq!(stderr(&out), "vmctl: paused vm 1 successfully\n");
    assert_eq!(daemon.status_row("dup").unwrap()[7], "paused");
    let out = daemon.vmctl(&["pause", "1"]);
    assert_eq!(stderr(&out), "vmctl: paused vm 1 successfully\n");
    let out = daemon.vmctl(&["unpause", "dup"]);
    assert_eq!(stderr(&out), "vmctl: unpaused vm 1 successfully\n");
    assert_eq!(daemon.status_row("dup").unwrap()[7], "running");
    let out = daemon.vmctl(&["pause", "ghost"]);
    assert_eq!(
        stderr(&out),
        "vmctl: pause vm command failed: No such file or directory\n"
    );
}

#[test]
fn a_guest_reset_restarts_the_vm_with_the_default_firmware() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let image = tiny_firmware(
        &daemon,
        "reboot.bin",
        r#"
main:
    PRINT msg
    DONE
msg: db "booted once", 13, 10, 0
"#,
    );
    let disk = daemon.dir().join("looper.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let config = daemon.dir().join("looper.conf");
    std::fs::write(
        &config,
        format!(
            "vm \"looper\" {{\n    disable\n    memory 64M\n    disk \"{}\"\n}}\n",
            disk.display()
        ),
    )
    .unwrap();
    daemon.vmctl_ok(&["load", config.to_str().unwrap()]);
    daemon.vmctl_ok(&["start", "-b", &image, "looper"]);
    // -b of a configured VM is used once; the reboot comes up with the
    // default firmware, and the console history survives the reboot.
    let text = daemon.console_until("looper", BANNER, BOOT);
    let first = text.find("booted once").expect("output of the first run");
    assert!(first < text.find(BANNER).unwrap(), "{text}");
    daemon.wait_for_log("looper: vm 1 is rebooting", Duration::from_secs(10));
    assert_eq!(daemon.status_row("looper").unwrap()[0], "1", "same id");
    daemon.vmctl_ok(&["stop", "-f", "looper"]);
}

#[test]
fn a_reboot_loop_is_stopped_by_the_rate_limit() {
    testkit::needs!(root, kvm);
    let scratch = testkit::tmp::TempDir::new("rate");
    let image = scratch.join("reboot.bin");
    std::fs::write(
        &image,
        firmware(
            r#"
main:
    PRINT msg
    DONE
msg: db "going round", 13, 10, 0
"#,
        ),
    )
    .unwrap();
    let config = scratch.join("vm.conf");
    std::fs::write(
        &config,
        format!(
            "vm \"looper\" {{\n    boot \"{}\"\n    memory 64M\n}}\n",
            image.display()
        ),
    )
    .unwrap();
    let daemon = TestDaemon::start_with(&["-f", config.to_str().unwrap()]);
    daemon.wait_for_log("vm 1 restarted too quickly", Duration::from_secs(60));
    daemon.wait_for(
        || {
            daemon
                .status_row("looper")
                .is_some_and(|row| row[1] == "-" && row[7] == "stopped")
        },
        Duration::from_secs(10),
        "the configured VM to be listed as stopped",
    );
    assert!(daemon.log().matches("looper: vm 1 is rebooting").count() >= 2);
}

#[test]
fn sigterm_stops_every_vm_and_removes_the_socket() {
    testkit::needs!(root, kvm);
    let mut daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", BIOS, "a"]);
    daemon.vmctl_ok(&["start", "-b", BIOS, "b"]);
    let pids: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| daemon.status_row(n).unwrap()[1].clone())
        .collect();
    let status = daemon.terminate().expect("vmd exits");
    assert!(status.success());
    assert!(!daemon.socket.exists());
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "VM process {pid} outlived the daemon"
        );
    }
    assert!(daemon.log().contains("terminating"));
}

#[test]
fn an_emulation_failure_ends_the_vm_with_its_registers_logged() {
    testkit::needs!(root, kvm);
    // Real-mode BSWAP: KVM's instruction emulator cannot run it, so where
    // the guest runs in that emulator the VM must end cleanly with its
    // registers in the log; on hardware that runs it natively the guest
    // goes on and reports the swapped value.
    let daemon = TestDaemon::start();
    let image = tiny_firmware(
        &daemon,
        "bswap.bin",
        r#"
main:
    mov eax, 0x11223344
    bswap eax
    PRINT_HEX8
    DONE
"#,
    );
    daemon.vmctl_ok(&["start", "-b", &image, "emu"]);
    daemon.wait_for(
        || {
            let log = daemon.log();
            log.contains("emulation failure") || log.contains("emu: vm 1 is rebooting")
        },
        Duration::from_secs(30),
        "the guest to fail or finish",
    );
    let log = daemon.log();
    if log.contains("emulation failure") {
        assert!(log.contains("rip=0x"), "registers logged:\n{log}");
        daemon.wait_for(
            || {
                daemon
                    .status_row("emu")
                    .is_some_and(|row| row[7] == "stopped")
            },
            Duration::from_secs(10),
            "the failed VM to be stopped",
        );
    } else {
        daemon.stop_or_find_ended("emu");
    }
}

#[test]
fn pause_stops_the_guest_and_unpause_resumes_it() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let image = tiny_firmware(
        &daemon,
        "ticker.bin",
        r#"
main:
    mov dx, 0x3f8
.tick:
    mov al, '.'
    out dx, al
    mov ecx, 20000
.wait:
    dec ecx
    jnz .wait
    jmp .tick
"#,
    );
    daemon.vmctl_ok(&["start", "-b", &image, "ticker"]);
    let mut session = daemon.console("ticker");
    session.read_until("..........", BOOT).unwrap();
    daemon.vmctl_ok(&["pause", "ticker"]);
    // Let output already in flight arrive, then nothing more may come.
    std::thread::sleep(Duration::from_millis(300));
    let frozen = session.text().len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(session.text().len(), frozen, "no output while paused");
    assert_eq!(daemon.status_row("ticker").unwrap()[7], "paused");
    daemon.vmctl_ok(&["unpause", "ticker"]);
    daemon.wait_for(
        || session.text().len() > frozen + 10,
        Duration::from_secs(20),
        "output to resume",
    );
    daemon.vmctl_ok(&["stop", "-f", "ticker"]);
}

#[test]
fn vm_processes_do_not_outlive_a_killed_daemon() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    daemon.vmctl_ok(&["start", "-b", BIOS, "orphan"]);
    let pid = daemon.status_row("orphan").unwrap()[1].clone();
    // SAFETY: killing the daemon this test started.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGKILL) };
    daemon.wait_for(
        || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        Duration::from_secs(10),
        "the VM process to end with its daemon",
    );
}
