//! The conversation with vmd over the control socket, and how its failures
//! read to the user (vmctl(8), "EXIT STATUS").

use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};

use proto::client::{Connection, socket_path};
use proto::control::{Request, Response, VmInfo};

use crate::failure::Failure;
use crate::output;

/// One connection to vmd.
pub struct Daemon {
    connection: Connection,
}

/// `strerror` text for an I/O error.
pub fn error_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => proto::error::strerror(errno),
        None => err.to_string(),
    }
}

impl Daemon {
    /// Connects to the socket in use (`VMD_SOCKET` or the default);
    /// failure reads `connect: <path>: <strerror>`.
    pub fn connect() -> Result<Daemon, Failure> {
        let path = socket_path();
        Connection::connect(&path)
            .map(|connection| Daemon { connection })
            .map_err(|err| {
                Failure::msg(format!("connect: {}: {}", path.display(), error_text(&err)))
            })
    }

    /// Sends the request; a connection vmd already closed is `pipe closed`.
    pub fn request(&self, request: &Request) -> Result<(), Failure> {
        self.request_with_fds(request, &[])
    }

    /// Sends the request with descriptors attached (kernel image, stream).
    /// vmd may have refused the connection before the request (too many
    /// from this user): its answer is waiting and says so.
    pub fn request_with_fds(&self, request: &Request, fds: &[RawFd]) -> Result<(), Failure> {
        self.connection
            .send_with_fds(request, fds)
            .map_err(|_| match self.reply() {
                Err(refusal) => refusal,
                Ok(_) => Failure::pipe_closed(),
            })
    }

    /// The next reply. vmd's warnings about the request come first; each
    /// is printed as `vmctl: warning: <text>` as it arrives. vmd closing
    /// the connection is `pipe closed`, a packet that is not a reply is
    /// an unexpected response, and a generic failure (CTL_FAIL) is
    /// `command failed[: <strerror>]` whatever the request was, then the
    /// cause vmd gave.
    pub fn reply(&self) -> Result<Response, Failure> {
        loop {
            return match self.connection.recv() {
                Ok(Some(Response::Warning(text))) => {
                    output::warnx(format_args!("warning: {text}"));
                    continue;
                }
                Ok(Some(Response::Ctl(Err(failed)))) if failed.code.0 == 0 => {
                    Err(Failure::with_cause("command failed", &failed.cause))
                }
                Ok(Some(Response::Ctl(Err(failed)))) => Err(Failure::with_cause(
                    format!("command failed: {}", failed.code),
                    &failed.cause,
                )),
                Ok(Some(response)) => Ok(response),
                Ok(None) => Err(Failure::pipe_closed()),
                Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                    Err(Failure::unexpected_response())
                }
                Err(_) => Err(Failure::pipe_closed()),
            };
        }
    }
}

impl AsFd for Daemon {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.connection.as_fd()
    }
}

/// The VM list as vmd reports it (running VMs first, then the others).
pub fn list_vms() -> Result<Vec<VmInfo>, Failure> {
    let daemon = Daemon::connect()?;
    daemon.request(&Request::Info)?;
    let mut vms = Vec::new();
    loop {
        match daemon.reply()? {
            Response::InfoData(info) => vms.push(info),
            Response::InfoEnd => return Ok(vms),
            _ => return Err(Failure::unexpected_response()),
        }
    }
}
