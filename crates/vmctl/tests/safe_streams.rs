//! `send` and `receive` refuse a terminal as their stream (vmctl(8)):
//! `send` would write binary guest memory to the screen and then end the
//! VM, `receive` would wait for typed input forever. The refusal comes
//! before vmd is asked anything: a fake vmd records no request, and a VM
//! of a real vmd keeps running.
//!
//! The terminal is a pseudo-terminal opened by the test; vmctl's other
//! stream (stdin of `send`, stdout of `receive`) is not a terminal, so the
//! refusal is about the stream's own end.

mod common;

use std::os::fd::OwnedFd;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{FakeVmd, outcome};
use nix::pty::openpty;
use proto::control::Response;
use proto::error::ErrorCode;
use testkit::daemon::{TestDaemon, binary};

const SEND_REFUSED: &str =
    "vmctl: send: standard output is a terminal; redirect it to a file or a pipe\n";
const RECEIVE_REFUSED: &str =
    "vmctl: receive: standard input is a terminal; redirect it from a file or a pipe\n";

/// Which of vmctl's streams is the terminal.
#[derive(Clone, Copy)]
enum OnTerminal {
    Stdin,
    Stdout,
}

/// Runs vmctl against `socket` with stdin or stdout on a fresh
/// pseudo-terminal (the other one /dev/null), stderr captured; killed
/// after 30 seconds, so that a vmctl that waits on the terminal fails
/// the test instead of hanging it.
fn run_on_terminal(socket: &std::path::Path, args: &[&str], which: OnTerminal) -> Output {
    let pty = openpty(None, None).expect("openpty");
    // The master stays open while vmctl runs: the terminal is alive.
    let _master: OwnedFd = pty.master;
    let terminal = Stdio::from(pty.slave);
    let mut command = Command::new("timeout");
    command
        .arg("30")
        .arg(binary_path())
        .args(args)
        .env("VMD_SOCKET", socket)
        .stderr(Stdio::piped());
    match which {
        OnTerminal::Stdin => command.stdin(terminal).stdout(Stdio::null()),
        OnTerminal::Stdout => command.stdin(Stdio::null()).stdout(terminal),
    };
    command.output().expect("run vmctl")
}

fn binary_path() -> &'static str {
    env!("CARGO_BIN_EXE_vmctl")
}

/// A vmd that answers `send` and `receive` with a failure at once, so a
/// vmctl that asks does not wait; what it was asked is recorded.
fn refusing_vmd() -> FakeVmd {
    FakeVmd::start(|request, _fds, peer| {
        let response = match request {
            proto::control::Request::Send { .. } => Response::SendStarted(Err(ErrorCode::ENOENT)),
            _ => Response::Start(Err(ErrorCode::ENOENT.into())),
        };
        peer.send(&response);
    })
}

/// `vmctl <word> <arg>`, for each spelling `word` of the command, with
/// `which` on a terminal: refused with `refusal`, and the vmd is asked
/// nothing.
fn refused_before_asking(words: [&str; 2], arg: &str, which: OnTerminal, refusal: &str) {
    let vmd = refusing_vmd();
    for word in words {
        let output = run_on_terminal(&vmd.socket, &[word, arg], which);
        assert_eq!(outcome(&output), (1, String::new(), refusal.into()));
    }
    assert_eq!(vmd.requests(), []);
}

#[test]
fn send_to_a_terminal_asks_nothing_of_vmd() {
    refused_before_asking(["send", "se"], "web", OnTerminal::Stdout, SEND_REFUSED);
}

#[test]
fn receive_from_a_terminal_asks_nothing_of_vmd() {
    refused_before_asking(
        ["receive", "rec"],
        "moved",
        OnTerminal::Stdin,
        RECEIVE_REFUSED,
    );
}

#[test]
fn usage_and_id_errors_come_first() {
    // What is wrong with the command line is said before the terminal.
    let vmd = refusing_vmd();
    let cases = [
        (
            &["send"][..],
            OnTerminal::Stdout,
            "usage:\tvmctl [-v] send id\n",
        ),
        (
            &["send", "-x"],
            OnTerminal::Stdout,
            "vmctl: invalid id: -x\n",
        ),
        (
            &["receive"],
            OnTerminal::Stdin,
            "usage:\tvmctl [-v] receive name\n",
        ),
        (
            &["receive", "12"],
            OnTerminal::Stdin,
            "vmctl: invalid vm name\nvmctl: invalid id: 12\n",
        ),
    ];
    for (args, which, stderr) in cases {
        let output = run_on_terminal(&vmd.socket, args, which);
        assert_eq!(
            outcome(&output),
            (1, String::new(), stderr.into()),
            "vmctl {args:?}"
        );
    }
    assert_eq!(vmd.requests(), []);
}

/// The end-to-end case the refusal exists for: a running VM, `send` on a
/// terminal, and the VM still running afterwards; `receive` from a
/// terminal creates nothing.
#[test]
fn a_running_vm_is_untouched_by_a_refused_send() {
    testkit::needs!(root, kvm);
    // The daemon under test is the workspace's vmd.
    let _ = binary("vmd");
    let daemon = TestDaemon::start();
    daemon.start_seabios_vm_ok("web", &[]);
    let running = || {
        daemon
            .status_row("web")
            .is_some_and(|row| row.get(7).map(String::as_str) == Some("running"))
    };
    daemon.wait_for(running, Duration::from_secs(10), "web running");
    let pid_before = daemon.status_row("web").unwrap()[1].clone();

    let output = run_on_terminal(&daemon.socket, &["send", "web"], OnTerminal::Stdout);
    assert_eq!(outcome(&output), (1, String::new(), SEND_REFUSED.into()));
    let output = run_on_terminal(&daemon.socket, &["receive", "moved"], OnTerminal::Stdin);
    assert_eq!(outcome(&output), (1, String::new(), RECEIVE_REFUSED.into()));

    // Had vmd been asked, the VM would be paused for the send or gone by
    // now; it runs on in the same process, and nothing was received.
    std::thread::sleep(Duration::from_millis(500));
    let row = daemon.status_row("web").expect("web is still listed");
    assert_eq!(
        (row[1].as_str(), row[7].as_str()),
        (pid_before.as_str(), "running"),
        "status of web after the refused send\n--- vmd log ---\n{}",
        daemon.log()
    );
    assert_eq!(daemon.status_row("moved"), None);
    let log = daemon.log();
    assert!(
        !log.contains("send") && !log.contains("receiv"),
        "vmd heard of the send or receive:\n{log}"
    );
}
