//! The client side of the control socket, as vmctl uses it.

use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};

use crate::control::{Request, Response};
use crate::frame;

/// Default control socket (vmd(8), "Control socket").
pub const DEFAULT_SOCKET: &str = "/var/run/vmd.sock";

/// The control socket in use: `VMD_SOCKET` if set, else the default.
pub fn socket_path() -> PathBuf {
    match std::env::var_os("VMD_SOCKET") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// One connection to vmd.
#[derive(Debug)]
pub struct Connection {
    sock: OwnedFd,
}

impl Connection {
    pub fn connect(path: &Path) -> io::Result<Connection> {
        let sock = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let addr = UnixAddr::new(path)?;
        loop {
            match connect(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr) {
                Ok(()) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Connection { sock })
    }

    pub fn send(&self, request: &Request) -> io::Result<()> {
        frame::send(self.sock.as_fd(), request, &[])
    }

    pub fn send_with_fds(&self, request: &Request, fds: &[RawFd]) -> io::Result<()> {
        frame::send(self.sock.as_fd(), request, fds)
    }

    /// The next reply; `Ok(None)` when vmd closed the connection
    /// (vmctl reports `pipe closed`).
    ///
    /// A packet socket reports a reset (vmd closed the connection with our
    /// request unread, as when it refuses one) ahead of the packets still
    /// queued, and only once: what vmd said before closing comes next.
    pub fn recv(&self) -> io::Result<Option<Response>> {
        match frame::recv::<Response>(self.sock.as_fd()) {
            Err(reset) if reset.raw_os_error() == Some(libc::ECONNRESET) => {
                match frame::recv::<Response>(self.sock.as_fd()) {
                    Ok(Some(received)) => Ok(Some(received.message)),
                    _ => Err(reset),
                }
            }
            received => Ok(received?.map(|r| r.message)),
        }
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorCode, Failed};
    use nix::sys::socket::socketpair;

    /// vmd answers and closes before it read the request (a refused
    /// connection): the client still gets the answer, not a reset.
    #[test]
    fn an_answer_sent_before_a_reset_is_received() {
        let (client, daemon) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let connection = Connection { sock: client };
        connection.send(&Request::Info).unwrap();
        let refusal = Response::Ctl(Err(Failed::because(ErrorCode(libc::EAGAIN), "too many")));
        frame::send(daemon.as_fd(), &refusal, &[]).unwrap();
        drop(daemon);
        assert_eq!(connection.recv().unwrap(), Some(refusal));
        assert_eq!(connection.recv().unwrap(), None);
    }
}
