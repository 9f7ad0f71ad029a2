//! Every control request, made by root, by a VM's owner, by a member of
//! its owner group and by another user, straight on the socket: who is
//! refused with EPERM and who is not (docs/lifecycle.md, "Who may do
//! what"). The whole table, not examples: a check dropped from any one
//! request's path fails it.

use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use proto::ErrorCode;
use proto::control::{Request, ResetMode, Response, StartRequest, VmRef};
use proto::frame;
use testkit::daemon::TestDaemon;
use testkit::tmp::TempDir;
use testkit::users::{ThrowawayUser, connect_as};

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Refused for want of permission.
    Denied,
    /// Past the permission check (answered, or waiting, or failing for
    /// another reason).
    Let,
}

/// The first answer to `request` from `uid`; None if nothing came within
/// `wait` (a request that waits for the VM, as `wait` does).
fn ask(socket: &std::path::Path, uid: u32, request: &Request, wait: Duration) -> Option<Response> {
    let sock = connect_as(socket, uid, 1).pop().unwrap();
    ask_on(&sock, request, wait)
}

fn ask_on(sock: &OwnedFd, request: &Request, wait: Duration) -> Option<Response> {
    nix::sys::socket::setsockopt(
        sock,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(wait.as_secs() as i64, wait.subsec_micros() as i64),
    )
    .unwrap();
    frame::send(sock.as_fd(), request, &[]).unwrap();
    loop {
        match frame::recv::<Response>(sock.as_fd()) {
            Ok(Some(received)) => match received.message {
                Response::Warning(_) => continue,
                response => return Some(response),
            },
            Ok(None) => panic!("{request:?}: the connection ended without an answer"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(e) => panic!("{request:?}: {e}"),
        }
    }
}

/// Whether an answer is a refusal for want of permission. A start refused
/// because the VM restarted too quickly also carries EPERM, with that
/// cause: it got past the permission check.
fn outcome(response: Option<&Response>) -> Outcome {
    let eperm = |code: &ErrorCode| *code == ErrorCode::EPERM;
    let denied = match response {
        None => false,
        Some(Response::Start(Err(failed))) => {
            eperm(&failed.code)
                && !failed
                    .cause
                    .iter()
                    .any(|line| format!("{line:?}").contains("restarted too quickly"))
        }
        Some(Response::Ctl(Err(failed))) => eperm(&failed.code),
        Some(
            Response::Terminate { result, .. }
            | Response::Pause { result, .. }
            | Response::Unpause { result, .. },
        ) => result.as_ref().err().is_some_and(eperm),
        Some(Response::ConsoleRefused(code)) => eperm(code),
        Some(Response::SendStarted(result)) => result.as_ref().err().is_some_and(eperm),
        Some(_) => false,
    };
    if denied {
        Outcome::Denied
    } else {
        Outcome::Let
    }
}

fn vm() -> VmRef {
    VmRef::Name("shared".into())
}

#[test]
fn every_request_by_every_kind_of_user() {
    testkit::needs!(root, kvm);
    let owner = ThrowawayUser::create("vmdown");
    let member = ThrowawayUser::create("vmdmem");
    let status = Command::new("usermod")
        .args(["-a", "-G", &owner.name, &member.name])
        .status()
        .unwrap();
    assert!(status.success());
    let other = ThrowawayUser::create("vmdoth");

    let dir = TempDir::new("perm-matrix");
    let config = dir.join("vm.conf");
    std::fs::write(
        &config,
        format!(
            "vm \"shared\" {{\n    boot \"{BIOS}\"\n    memory 64M\n    owner {o}:{o}\n}}\n",
            o = owner.name
        ),
    )
    .unwrap();
    let daemon = TestDaemon::start_with(&["-f", config.to_str().unwrap()]);
    let running = || {
        daemon
            .status_row("shared")
            .is_some_and(|r| r[7] == "running")
    };
    daemon.wait_for(running, Duration::from_secs(20), "the VM to run");
    let socket = daemon.socket.clone();
    let quick = Duration::from_secs(5);

    // Who asks, and whether they may control the VM.
    let users = [
        ("other user", other.uid, Outcome::Denied),
        ("owner", owner.uid, Outcome::Let),
        ("owner group member", member.uid, Outcome::Let),
        ("root", 0, Outcome::Let),
    ];
    for (who, uid, per_vm) in users {
        let root_only = if uid == 0 {
            Outcome::Let
        } else {
            Outcome::Denied
        };
        let check = |what: &str, response: Option<Response>, expected: Outcome| {
            assert_eq!(
                outcome(response.as_ref()),
                expected,
                "{what} by {who}: {response:?}\n{}",
                daemon.log()
            );
        };
        // The VM runs here, started by root or by the previous user.
        assert!(running(), "{who}: the VM should run");
        check(
            "status",
            ask(&socket, uid, &Request::Info, quick),
            Outcome::Let,
        );
        check(
            "status -v",
            ask(&socket, uid, &Request::InfoVerbose, quick),
            Outcome::Let,
        );
        check(
            "console",
            ask(
                &socket,
                uid,
                &Request::ConsoleAttach { target: vm() },
                quick,
            ),
            per_vm,
        );
        check(
            "pause",
            ask(&socket, uid, &Request::Pause { target: vm() }, quick),
            per_vm,
        );
        check(
            "unpause",
            ask(&socket, uid, &Request::Unpause { target: vm() }, quick),
            per_vm,
        );
        // A wait that is let through waits: no answer while the VM runs.
        let waiter = connect_as(&socket, uid, 1).pop().unwrap();
        check(
            "wait",
            ask_on(
                &waiter,
                &Request::Wait { target: vm() },
                Duration::from_millis(500),
            ),
            per_vm,
        );
        // Root-only requests, each harmless when let through.
        let harmless = [
            ("log", Request::Log { level: 2 }),
            ("reload", Request::Reload),
            (
                "load",
                Request::Load {
                    path: "/nonexistent/vm.conf".into(),
                },
            ),
            (
                "reset switches",
                Request::Reset {
                    mode: ResetMode::Switches,
                },
            ),
            ("send", Request::Send { target: vm() }),
            (
                "receive",
                Request::Receive {
                    name: "elsewhere".into(),
                },
            ),
        ];
        for (what, request) in harmless {
            check(what, ask(&socket, uid, &request, quick), root_only);
        }
        // Stopping it, and starting it again (as this user).
        check(
            "stop",
            ask(
                &socket,
                uid,
                &Request::Terminate {
                    target: vm(),
                    force: true,
                    wait: true,
                },
                Duration::from_secs(20),
            ),
            per_vm,
        );
        if per_vm == Outcome::Let {
            daemon.wait_for(|| !running(), Duration::from_secs(20), "the VM to stop");
        }
        let start = Request::Start(StartRequest {
            target: Some(vm()),
            ..StartRequest::default()
        });
        let started = ask(&socket, uid, &start, Duration::from_secs(20));
        check("start", started.clone(), per_vm);
        if per_vm == Outcome::Let && !matches!(started, Some(Response::Start(Ok(_)))) {
            // Refused only as a too-quick restart: root starts it.
            std::thread::sleep(Duration::from_secs(7));
            assert!(matches!(
                ask(&socket, 0, &start, Duration::from_secs(20)),
                Some(Response::Start(Ok(_)))
            ));
        }
        daemon.wait_for(running, Duration::from_secs(20), "the VM to run again");
        drop(waiter);
    }
}
