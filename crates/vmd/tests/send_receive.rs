//! End to end on KVM: `vmctl send` and `vmctl receive` move a VM that
//! SeaBIOS booted into GRUB's menu. The menu counts down; the VM is sent
//! to a file mid-countdown and received under a new name, twice, and the
//! countdown goes on from where it was until GRUB boots its entry, which
//! lists the boot partition through the moved virtio-blk device and
//! halts. Damaged streams are refused with vmctl's documented messages
//! (docs/send-stream.md).

use std::fs::File;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use testkit::daemon::{ConsoleSession, TestDaemon};
use testkit::grub;
use testkit::guest::firmware;

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";
/// GRUB's core with `normal` loads through int13 at a few KB/s.
const BOOT: Duration = Duration::from_secs(240);
const COUNTDOWN: u32 = 20;
const ENTERED: &str = "grub-menu: entry started";
const DONE: &str = "grub-menu: entry done";

fn menu_cfg() -> String {
    format!(
        "set timeout={COUNTDOWN}\n\
         menuentry \"migrate-test\" {{\n\
         \techo \"{ENTERED}\"\n\
         \tls (hd0,msdos1)/\n\
         \techo \"{DONE}\"\n\
         \thalt\n\
         }}\n"
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The countdown values GRUB printed, in order.
fn countdown(text: &str) -> Vec<u32> {
    text.split("automatically in ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Reads the console until GRUB shows a countdown value of `at_most`
/// or less; returns the values seen.
fn count_down_to(session: &mut ConsoleSession, at_most: u32, daemon: &TestDaemon) -> Vec<u32> {
    let deadline = std::time::Instant::now() + BOOT;
    loop {
        let seen = countdown(&session.text());
        if seen.last().is_some_and(|&n| n <= at_most) {
            return seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no countdown to {at_most}; console:\n{}\n--- vmd log ---\n{}",
            session.text(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send(daemon: &TestDaemon, name: &str, to: &Path) -> Output {
    daemon.vmctl_io(
        &["send", name],
        Stdio::null(),
        Stdio::from(File::create(to).unwrap()),
    )
}

fn receive(daemon: &TestDaemon, name: &str, from: &Path) -> Output {
    daemon.vmctl_io(
        &["receive", name],
        Stdio::from(File::open(from).unwrap()),
        Stdio::null(),
    )
}

fn send_ok(daemon: &TestDaemon, name: &str, to: &Path) {
    let out = send(daemon, name, to);
    assert!(
        out.status.success(),
        "send {name}: {}\n--- vmd log ---\n{}",
        stderr(&out),
        daemon.log()
    );
    assert_eq!(
        stderr(&out),
        format!("vmctl: sent vm {name} successfully\n")
    );
}

fn receive_ok(daemon: &TestDaemon, name: &str, from: &Path) {
    let out = receive(daemon, name, from);
    assert!(
        out.status.success(),
        "receive {name}: {}\n--- vmd log ---\n{}",
        stderr(&out),
        daemon.log()
    );
    let text = stderr(&out);
    assert!(
        text.starts_with("vmctl: started vm ") && text.contains(" successfully, tty "),
        "{text}"
    );
}

fn listed(daemon: &TestDaemon, name: &str) -> bool {
    String::from_utf8_lossy(&daemon.vmctl(&["status"]).stdout)
        .split_whitespace()
        .any(|w| w == name)
}

/// Sends `from` when its countdown reached `at_most`, receives it as
/// `to`; returns the last value `from` showed and the session on `to`.
fn move_vm(
    daemon: &TestDaemon,
    session: &mut ConsoleSession,
    (from, to): (&str, &str),
    at_most: u32,
) -> (u32, ConsoleSession) {
    let seen = count_down_to(session, at_most, daemon);
    let stream = daemon.dir().join(format!("{from}.state"));
    send_ok(daemon, from, &stream);
    // The sent VM is gone (it was ad hoc), and its console with it.
    assert!(!listed(daemon, from), "{from} still listed after the send");
    let last = *countdown(&session.text()).last().unwrap_or(&seen[0]);
    receive_ok(daemon, to, &stream);
    (last, daemon.console(to))
}

#[test]
fn grub_counts_down_across_two_moves_then_boots_its_entry_from_the_moved_disk() {
    let daemon = TestDaemon::start();
    let disk = grub::menu_disk_copy(&menu_cfg(), &["ls"], &daemon.dir().join("menu.img"));
    let disk = disk.display().to_string();
    daemon.vmctl_ok(&["start", "-b", BIOS, "-m", "64M", "-d", &disk, "gm1"]);
    let mut first = daemon.console("gm1");

    let (sent_at, mut second) = move_vm(&daemon, &mut first, ("gm1", "gm2"), COUNTDOWN - 4);
    let resumed_at = count_down_to(&mut second, sent_at - 2, &daemon);
    // The countdown went on from the value it had when the VM left: it
    // did not start over, and no time was lost while it was in a file.
    assert!(
        resumed_at[0] <= sent_at && resumed_at[0] + 2 >= sent_at,
        "sent at {sent_at}, resumed with {resumed_at:?}"
    );

    let (sent_again_at, mut third) = move_vm(&daemon, &mut second, ("gm2", "gm3"), sent_at - 3);
    let text = match third.read_until(DONE, BOOT) {
        Ok(text) => text,
        Err(text) => panic!("gm3 did not boot its entry:\n{text}\n{}", daemon.log()),
    };
    let values = countdown(&text);
    assert!(
        values
            .first()
            .is_some_and(|&n| n <= sent_again_at && n + 2 >= sent_again_at),
        "sent at {sent_again_at}, resumed with {values:?}"
    );
    assert!(text.contains(ENTERED), "{text}");
    // GRUB's `ls` of the partition, read through the moved virtio-blk
    // device and SeaBIOS's driver state in guest memory.
    assert!(text.contains("grub.cfg"), "{text}");
    daemon.wait_for(
        || !listed(&daemon, "gm3"),
        Duration::from_secs(30),
        "gm3 to power off",
    );
}

/// The PCI device records a stream's header lists: a slot each, named
/// after what is in it (vmd.md §8.5's order), which the receiving VM's
/// slots must match before any state is restored.
fn pci_slots(stream: &Path) -> Vec<String> {
    let whole = std::fs::read(stream).unwrap();
    let (_, payload) = vmm::snapshot::format::read_header_bytes(&mut &whole[..]).unwrap();
    let header = vmm::snapshot::Header::decode(&payload).unwrap();
    header
        .devices
        .into_iter()
        .filter(|name| name.starts_with("pci/"))
        .collect()
}

/// The CD's menu: its entry reads the CD's own `grub.cfg` back, through
/// SeaBIOS's virtio-scsi driver and the moved device.
fn cd_menu_cfg() -> String {
    format!(
        "# {CD_MARK}\n\
         set timeout={COUNTDOWN}\n\
         menuentry \"migrate-cd-test\" {{\n\
         \techo \"{ENTERED}\"\n\
         \tcat (cd)/grub.cfg\n\
         \techo \"{DONE}\"\n\
         \thalt\n\
         }}\n"
    )
}

/// A comment line of the CD's `grub.cfg`: only a read of the CD shows it.
const CD_MARK: &str = "this line was read from the moved cd-rom";

#[test]
fn grub_on_the_cd_counts_down_across_a_move_then_reads_the_cd() {
    let daemon = TestDaemon::start();
    let iso = grub::menu_cd(&cd_menu_cfg(), &[]);
    let iso = iso.display().to_string();
    daemon.vmctl_ok(&["start", "-b", BIOS, "-m", "64M", "-r", &iso, "cd1"]);
    let mut first = daemon.console("cd1");
    let (sent_at, mut second) = move_vm(&daemon, &mut first, ("cd1", "cd2"), COUNTDOWN - 4);
    let text = match second.read_until(DONE, BOOT) {
        Ok(text) => text,
        Err(text) => panic!("cd2 did not boot its entry:\n{text}\n{}", daemon.log()),
    };
    let values = countdown(&text);
    assert!(
        values
            .first()
            .is_some_and(|&n| n <= sent_at && n + 2 >= sent_at),
        "sent at {sent_at}, resumed with {values:?}"
    );
    assert!(text.contains(ENTERED), "{text}");
    assert!(text.contains(CD_MARK), "{text}");
    assert_eq!(
        pci_slots(&daemon.dir().join("cd1.state")),
        [
            "pci/00:host",
            "pci/01:viornd",
            "pci/02:vioscsi",
            "pci/03:vmmci"
        ]
    );
    daemon.wait_for(
        || !listed(&daemon, "cd2"),
        Duration::from_secs(30),
        "cd2 to power off",
    );
}

/// A tiny guest that says `alive`, then prints a dot now and then,
/// forever; written into the daemon's directory.
fn ticker(daemon: &TestDaemon) -> String {
    let path = daemon.dir().join("ticker.bin");
    std::fs::write(
        &path,
        firmware(
            r#"
main:
    PRINT alive
.tick:
    mov ecx, 100000
.delay:
    dec ecx
    jnz .delay
    SERIAL_OUT '.'
    jmp .tick
alive: db "alive", 13, 10, 0
"#,
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// Starts a ticker called `name` (with `extra` options) and sends it to
/// a file; returns the file's path.
fn sent_ticker(daemon: &TestDaemon, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let image = ticker(daemon);
    let mut args = vec!["start", "-b", image.as_str(), "-m", "64M"];
    args.extend_from_slice(extra);
    args.push(name);
    daemon.vmctl_ok(&args);
    daemon.console_until(name, "alive", Duration::from_secs(30));
    let stream = daemon.dir().join(format!("{name}.state"));
    send_ok(daemon, name, &stream);
    stream
}

/// `vmctl receive` of `bytes` fails with `message` and leaves nothing.
fn refused(daemon: &TestDaemon, bytes: &[u8], message: &str) {
    let path = daemon.dir().join("refused.state");
    std::fs::write(&path, bytes).unwrap();
    let out = receive(daemon, "refused", &path);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stderr(&out), format!("vmctl: {message}\n"));
    assert!(!listed(daemon, "refused"), "a refused vm is not registered");
}

#[test]
fn damaged_truncated_and_newer_streams_are_refused_and_leave_nothing_behind() {
    let daemon = TestDaemon::start();
    let stream = sent_ticker(&daemon, "t1", &[]);
    let whole = std::fs::read(&stream).unwrap();

    // Cut inside the header (vmd refuses before it registers anything),
    // and inside guest memory (the VM process refuses; the VM goes away).
    refused(&daemon, &whole[..40], "vm state stream is truncated");
    refused(
        &daemon,
        &whole[..whole.len() - 5000],
        "vm state stream is truncated",
    );
    refused(&daemon, &[], "vm state stream is truncated");
    // A flipped bit in the header, and one near the end.
    for at in [30, whole.len() - 3000] {
        let mut bytes = whole.clone();
        bytes[at] ^= 0x10;
        refused(&daemon, &bytes, "vm state stream is corrupt");
    }
    refused(
        &daemon,
        b"not a stream at all",
        "vm state stream is corrupt",
    );
    // A stream with something after it.
    let mut longer = whole.clone();
    longer.extend_from_slice(&whole[..64]);
    refused(&daemon, &longer, "vm state stream is corrupt");
    let mut newer = whole.clone();
    newer[8] = 2;
    refused(
        &daemon,
        &newer,
        "vm state stream has an unsupported version",
    );

    // The intact stream is received, and runs on: a received VM ticks.
    receive_ok(&daemon, "t2", &stream);
    let mut session = daemon.console("t2");
    assert!(
        session.read_until("..", Duration::from_secs(30)).is_ok(),
        "{}",
        session.text()
    );
}

#[test]
fn a_host_without_a_cpu_feature_the_guest_saw_is_refused() {
    use vmm::snapshot::format::{FrameWriter, Tag, read_header_bytes};
    let daemon = TestDaemon::start();
    let stream = sent_ticker(&daemon, "cpu", &[]);
    let whole = std::fs::read(&stream).unwrap();
    let mut rest = &whole[..];
    let (_, payload) = read_header_bytes(&mut rest).unwrap();
    let mut header = vmm::snapshot::Header::decode(&payload).unwrap();
    // CPUID leaf 1 ECX bit 16 is reserved: no KVM supports it.
    for entry in &mut header.cpuid {
        if entry.0.function == 1 {
            entry.0.ecx |= 1 << 16;
        }
    }
    let mut doctored = Vec::new();
    FrameWriter::new(&mut doctored)
        .unwrap()
        .frame(Tag::Header, &[&header.encode()])
        .unwrap();
    doctored.extend_from_slice(rest);
    refused(
        &daemon,
        &doctored,
        "this host's CPU lacks features the vm uses",
    );
    assert!(
        daemon
            .log()
            .contains("leaf 0x1.0 ecx bits 0x10000 are missing"),
        "{}",
        daemon.log()
    );
}

fn resize(path: &Path, len: u64) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn disks_and_the_cd_are_opened_again_at_their_paths_and_must_not_have_changed() {
    let daemon = TestDaemon::start();
    let disk = daemon.dir().join("data.img");
    File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    let disk_arg = disk.display().to_string();
    let iso = daemon.dir().join("data.iso");
    File::create(&iso).unwrap().set_len(1 << 20).unwrap();
    let iso_arg = iso.display().to_string();
    let stream = sent_ticker(&daemon, "d1", &["-d", &disk_arg, "-r", &iso_arg]);
    // A disk, or an ISO image, of another size is not the one the guest
    // knew.
    for (path, len) in [(&disk, 1 << 20), (&iso, 1 << 20)] {
        resize(path, 2 << 20);
        let out = receive(&daemon, "d2", &stream);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            "vmctl: a disk image differs from the one the vm was sent with\n"
        );
        assert!(!listed(&daemon, "d2"));
        resize(path, len);
    }
    // An ISO image that is not there is refused as at a start.
    let away = daemon.dir().join("away.iso");
    std::fs::rename(&iso, &away).unwrap();
    let out = receive(&daemon, "d2", &stream);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: could not find specified iso image\n");
    assert!(!listed(&daemon, "d2"));
    std::fs::rename(&away, &iso).unwrap();
    // Put back, they are the same images again: the disk opened and
    // locked by the received VM, the ISO read-only.
    receive_ok(&daemon, "d2", &stream);
    assert_eq!(
        pci_slots(&stream),
        [
            "pci/00:host",
            "pci/01:viornd",
            "pci/02:vioblk0",
            "pci/03:vioscsi",
            "pci/04:vmmci"
        ]
    );
    let image = ticker(&daemon);
    let out = daemon.vmctl(&["start", "-b", &image, "-m", "64M", "-d", &disk_arg, "d3"]);
    assert_eq!(stderr(&out), "vmctl: could not open disk image(s)\n");
}

#[test]
fn a_configured_vm_stays_listed_as_stopped_after_a_send() {
    let scratch = testkit::tmp::TempDir::new("conf");
    let config = scratch.join("vm.conf");
    let daemon = TestDaemon::start();
    let image = ticker(&daemon);
    std::fs::write(
        &config,
        format!("vm \"conf\" {{\n    boot \"{image}\"\n    memory 64M\n}}\n"),
    )
    .unwrap();
    daemon.vmctl_ok(&["load", config.to_str().unwrap()]);
    daemon.console_until("conf", "alive", Duration::from_secs(30));
    send_ok(&daemon, "conf", &daemon.dir().join("conf.state"));
    let row = daemon.status_row("conf").expect("conf is still listed");
    assert_eq!((row[1].as_str(), row[7].as_str()), ("-", "stopped"));
    // Sending what does not run, or does not exist, is refused.
    let out = send(&daemon, "conf", &daemon.dir().join("again.state"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: command failed: Invalid argument\n");
    let out = send(&daemon, "nosuchvm", &daemon.dir().join("none.state"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: vm not found\n");
}

#[test]
fn a_send_that_vmctl_cannot_write_out_leaves_the_vm_running() {
    let daemon = TestDaemon::start();
    let image = ticker(&daemon);
    daemon.vmctl_ok(&["start", "-b", &image, "-m", "64M", "stay"]);
    let mut session = daemon.console("stay");
    assert!(session.read_until("alive", Duration::from_secs(30)).is_ok());
    // vmctl's stdout is a pipe nobody reads: its first write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = daemon.vmctl_io(&["send", "stay"], Stdio::null(), Stdio::from(writer));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: write: Broken pipe\n");
    daemon.wait_for_log("stay: send failed", Duration::from_secs(10));
    let row = daemon.status_row("stay").expect("still listed");
    assert_eq!(row[7], "running", "{row:?}");
    // And the guest goes on ticking.
    let dots = session.text().matches('.').count();
    let more = ".".repeat(dots + 3);
    assert!(
        session.read_until(&more, Duration::from_secs(30)).is_ok(),
        "the guest stopped after the failed send: {}",
        session.text()
    );
}
