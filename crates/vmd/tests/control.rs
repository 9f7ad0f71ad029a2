//! The control socket against clients that misbehave: malformed, oversized
//! and truncated messages, unexpected descriptors, clients that vanish.
//! Each costs that connection and nothing else.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use proto::control::{Request, Response, VmRef};
use proto::frame;
use testkit::daemon::TestDaemon;

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
