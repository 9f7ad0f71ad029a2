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
