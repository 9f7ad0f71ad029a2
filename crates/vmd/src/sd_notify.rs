//! The service manager's readiness protocol (sd_notify(3)): under
//! systemd with `Type=notify` (dist/vmd.service runs `vmd -d`), the
//! environment names a datagram socket in `NOTIFY_SOCKET`, and the
//! service is started once the daemon sends `READY=1` there.
//!
//! The socket is a path, or a name in the abstract namespace when it
//! starts with `@`. Without the variable there is nothing to tell.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells the service manager, if there is one, that vmd serves.
pub fn ready() -> io::Result<()> {
    send(b"READY=1")
}

fn send(message: &[u8]) -> io::Result<()> {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(());
    };
    let target = target.as_encoded_bytes();
    let address = match target.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(OsStr::from_bytes(target))?,
    };
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(message, &address)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification cut short",
        ));
    }
    Ok(())
}
