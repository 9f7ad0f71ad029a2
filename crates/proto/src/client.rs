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
    pub fn recv(&self) -> io::Result<Option<Response>> {
        Ok(frame::recv::<Response>(self.sock.as_fd())?.map(|r| r.message))
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}
