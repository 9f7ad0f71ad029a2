//! vmd under systemd's `Type=notify` (dist/vmd.service runs `vmd -d`):
//! once its control socket serves, vmd sends `READY=1` to the datagram
//! socket named by `NOTIFY_SOCKET`, a path or, with a leading `@`, a name
//! in the abstract namespace. Needs root, as every test that starts vmd.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use testkit::daemon::TestDaemon;
use testkit::tmp::TempDir;

/// Starts `vmd -d` with `NOTIFY_SOCKET=address` and returns the first
/// datagram `socket` receives, with the daemon.
fn first_notification(socket: &UnixDatagram, address: &str) -> (String, TestDaemon) {
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let daemon = TestDaemon::start_with_env(&[], &[("NOTIFY_SOCKET", address)]);
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification from vmd: {e}\n{}", daemon.log()));
    (String::from_utf8_lossy(&buf[..n]).into_owned(), daemon)
}

#[test]
fn vmd_tells_systemd_it_is_ready_once_its_socket_serves() {
    testkit::needs!(root, kvm);
    let dir = TempDir::new("sd-notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let (message, daemon) = first_notification(&socket, path.to_str().unwrap());
    assert_eq!(message, "READY=1");
    // Ready means served: a client right after the word is answered
    // (with the table's header: vmd has no VM yet).
    let out = daemon.vmctl(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NAME"),
        "vmctl status right after READY=1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_abstract_notify_socket_is_reached_too() {
    testkit::needs!(root, kvm);
    let name = format!("vmd-test-notify-{}", std::process::id());
    let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&address).unwrap();
    let (message, _daemon) = first_notification(&socket, &format!("@{name}"));
    assert_eq!(message, "READY=1");
}
