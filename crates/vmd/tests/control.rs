//! The control socket against clients that misbehave: malformed, oversized
//! and truncated messages, unexpected descriptors, clients that vanish.
//! Each costs that connection and nothing else.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use proto::ErrorCode;
use proto::control::{Request, ResetMode, Response, VmRef};
use proto::frame;
use testkit::daemon::TestDaemon;
use testkit::users::connect_as;

fn connect_to(daemon: &TestDaemon) -> OwnedFd {
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(sock.as_raw_fd(), &UnixAddr::new(&daemon.socket).unwrap()).unwrap();
    sock
}

/// The daemon closes the connection: the next receive sees the end.
fn assert_closed(sock: &OwnedFd) {
    nix::sys::socket::setsockopt(
        sock,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(5, 0),
    )
    .unwrap();
    match frame::recv::<Response>(sock.as_fd()) {
        Ok(None) => {}
        other => panic!("expected the daemon to close the connection, got {other:?}"),
    }
}

/// The daemon still answers a proper request.
fn assert_alive(daemon: &TestDaemon) {
    let out = daemon.vmctl(&["status"]);
    assert_eq!(out.status.code(), Some(1), "no VMs: exit 1, but an answer");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("   ID   PID"));
}

#[test]
fn garbage_oversized_and_truncated_messages_cost_only_their_connection() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();

    let sock = connect_to(&daemon);
    frame::send_bytes(sock.as_fd(), &[0xff; 64], &[]).unwrap();
    assert_closed(&sock);
    assert_alive(&daemon);

    // A valid request cut short.
    let bytes = postcard::to_stdvec(&Request::Terminate {
        target: VmRef::Name("some-vm".into()),
        force: true,
        wait: true,
    })
    .unwrap();
    let sock = connect_to(&daemon);
    frame::send_bytes(sock.as_fd(), &bytes[..bytes.len() - 3], &[]).unwrap();
    assert_closed(&sock);
    assert_alive(&daemon);

    // Larger than any message may be: the kernel delivers it truncated
    // to the daemon's buffer, which it detects.
    let sock = connect_to(&daemon);
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::SndBuf, &(1 << 20)).unwrap();
    let huge = vec![0u8; frame::MAX_MESSAGE + 4096];
    let sent = nix::sys::socket::send(
        sock.as_raw_fd(),
        &huge,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    );
    if sent.is_ok() {
        assert_closed(&sock);
    }
    assert_alive(&daemon);

    // Descriptors nobody asked for are closed with the request.
    let sock = connect_to(&daemon);
    let file = std::fs::File::open("/dev/null").unwrap();
    frame::send(sock.as_fd(), &Request::Info, &[file.as_raw_fd()]).unwrap();
    let reply = frame::recv::<Response>(sock.as_fd()).unwrap().unwrap();
    assert_eq!(reply.message, Response::InfoEnd);
    assert_alive(&daemon);
}

#[test]
fn clients_that_vanish_leave_nothing_behind() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let threads = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let fds = |pid: u32| testkit::daemon::open_descriptors(pid).len();
    assert_alive(&daemon);
    let (threads_before, fds_before) = (threads(daemon.pid()), fds(daemon.pid()));
    for _ in 0..50 {
        let sock = connect_to(&daemon);
        // A wait for a VM that does not exist, then gone before reading.
        frame::send(
            sock.as_fd(),
            &Request::Wait {
                target: VmRef::Name("ghost".into()),
            },
            &[],
        )
        .unwrap();
        drop(sock);
        let sock = connect_to(&daemon);
        drop(sock);
    }
    assert_alive(&daemon);
    daemon.wait_for(
        || threads(daemon.pid()) <= threads_before && fds(daemon.pid()) <= fds_before,
        Duration::from_secs(10),
        "client threads and descriptors to be released",
    );
}

/// A uid with no rights on the daemon: the hostile user of the tests
/// below (`nobody`; it need not exist, the credentials are numbers).
const HOSTILE_UID: u32 = 65534;

fn receive_timeout(sock: &OwnedFd, timeout: Duration) {
    nix::sys::socket::setsockopt(
        sock,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(timeout.as_secs() as i64, timeout.subsec_micros() as i64),
    )
    .unwrap();
}

/// Root's `vmctl status`, and how long it took; None if it did not answer
/// within `limit`.
fn timed_status(daemon: &TestDaemon, limit: Duration) -> Option<Duration> {
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(testkit::daemon::binary("vmctl"))
        .arg("status")
        .env("VMD_SOCKET", &daemon.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(1), "no VMs: exit 1, but an answer");
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn clients_that_never_read_their_replies_do_not_stall_root() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let hostile = connect_as(&daemon.socket, HOSTILE_UID, 20);
    // Each asks for the VM list over and over and never reads: its socket
    // fills with replies the daemon cannot write.
    for sock in &hostile {
        nix::fcntl::fcntl(
            sock,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        for _ in 0..5000 {
            if frame::send(sock.as_fd(), &Request::Info, &[]).is_err() {
                break;
            }
        }
    }
    let mut answers = Vec::new();
    for _ in 0..5 {
        // Unhindered it takes milliseconds; the bound only tells an
        // answer from a daemon waiting out the clients' send timeouts.
        let took = timed_status(&daemon, Duration::from_secs(2))
            .expect("root's status must answer while hostile clients flood");
        answers.push(took);
    }
    eprintln!("root's status while 20 clients flood: {answers:?}");
    drop(hostile);
    assert_alive(&daemon);
}

#[test]
fn root_only_requests_from_a_user_are_refused_before_they_are_queued() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let sock = connect_as(&daemon.socket, HOSTILE_UID, 1).pop().unwrap();
    for _ in 0..100 {
        if frame::send(
            sock.as_fd(),
            &Request::Reset {
                mode: ResetMode::All,
            },
            &[],
        )
        .is_err()
        {
            break;
        }
    }
    receive_timeout(&sock, Duration::from_secs(5));
    // The daemon closes the connection with the unread requests still
    // queued, which the kernel reports as a reset; it may report it before
    // the reply queued ahead of it, which the next read then returns.
    let mut replies = Vec::new();
    let mut resets = 0;
    loop {
        match frame::recv::<Response>(sock.as_fd()) {
            Ok(Some(reply)) => replies.push(reply.message),
            Ok(None) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && resets == 0 => {
                resets += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("expected the daemon to close the connection, got {e}"),
        }
    }
    assert_eq!(replies, [Response::Ctl(Err(ErrorCode::EPERM.into()))]);
    assert_alive(&daemon);
    // The core saw none of them: the one refusal is the reader's.
    let denied = daemon.log().matches("denied request reset").count();
    assert_eq!(denied, 1, "{}", daemon.log());
}

#[test]
fn a_user_holds_a_bounded_number_of_connections() {
    testkit::needs!(root, kvm);
    let daemon = TestDaemon::start();
    let held = connect_as(&daemon.socket, HOSTILE_UID, 40);
    // The refused ones are told so at once; the others hear nothing.
    for sock in &held {
        nix::fcntl::fcntl(
            sock,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
    }
    let mut refused = vec![false; held.len()];
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        for (sock, refused) in held.iter().zip(refused.iter_mut()) {
            if let Ok(Some(r)) = frame::recv::<Response>(sock.as_fd()) {
                assert!(matches!(r.message, Response::Ctl(Err(_))), "{r:?}");
                *refused = true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = refused.iter().filter(|&&r| r).count();
    assert_eq!(refused, 40 - 32, "connections past the cap are refused");
    // vmctl run by that user now says why it gets no answer (the socket
    // opened to it, as a socket group would).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(testkit::daemon::binary("vmctl"))
        .arg("status")
        .env("VMD_SOCKET", &daemon.socket)
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (
            Some(1),
            "vmctl: command failed: Resource temporarily unavailable: \
             too many connections from this user (32 at most)\n"
        )
    );
    // Root is not counted against the user.
    assert_alive(&daemon);
    // Closed connections give their places back.
    drop(held);
    daemon.wait_for(
        || {
            let sock = connect_as(&daemon.socket, HOSTILE_UID, 1).pop().unwrap();
            receive_timeout(&sock, Duration::from_secs(2));
            frame::send(sock.as_fd(), &Request::Info, &[]).is_ok()
                && matches!(
                    frame::recv::<Response>(sock.as_fd()),
                    Ok(Some(r)) if r.message == Response::InfoEnd
                )
        },
        Duration::from_secs(10),
        "the user's connections to be released",
    );
}
