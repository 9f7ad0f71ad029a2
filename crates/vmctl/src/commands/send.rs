//! Legacy `send id` (vmctl(8), send, receive): vmd writes the VM's state to one end
//! of a socket pair; vmctl copies it to stdout. Unlike upstream, success is
//! reported only once vmd confirms the stream is complete, and the VM
//! leaves only once vmctl confirmed that it wrote the whole stream out
//! (docs/send-stream.md): a vmctl that fails to write, or dies, leaves the
//! VM running where it was. A terminal is refused as the stream's
//! destination before vmd is asked anything.

use std::io::{self, IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use proto::control::{Request, Response, SEND_RECEIVED, VmRef};
use proto::error::ErrorCode;

use super::single_operand;
use super::stream_pump::{self, Pump, PumpError};
use crate::args::parse_id;
use crate::cli::CommandId;
use crate::daemon::{Daemon, error_text};
use crate::failure::{CmdResult, Failure};
use crate::output;

/// The failure for a refused or failed send.
pub fn send_failure(code: ErrorCode) -> Failure {
    match code {
        ErrorCode::ENOENT => Failure::msg("vm not found"),
        other => Failure::msg(format!("command failed: {other}")),
    }
}

pub fn run(args: &[String]) -> CmdResult {
    let word = single_operand(args, CommandId::Send)?;
    let target = parse_id(Some(word), false)?;
    // The stream is binary, and the VM ends once it is out: on a terminal
    // it would be garbage on the screen and a VM gone. Refused before vmd
    // hears of it, so the VM is untouched.
    if io::stdout().is_terminal() {
        return Err(Failure::msg(
            "send: standard output is a terminal; redirect it to a file or a pipe",
        ));
    }
    let label = match &target {
        VmRef::Id(id) => id.to_string(),
        VmRef::Name(name) => name.clone(),
    };
    let (mut stream, vmd_end) = UnixStream::pair()
        .map_err(|err| Failure::msg(format!("socketpair: {}", error_text(&err))))?;
    stream_pump::widen_send_buffer(&vmd_end);
    let daemon = Daemon::connect()?;
    daemon.request_with_fds(&Request::Send { target }, &[vmd_end.as_raw_fd()])?;
    // Only vmd's copy may stay open, so its close is our end of file.
    drop(vmd_end);

    let mut stream_open = true;
    let mut confirmed = false;
    // Straight to the descriptor: the stream is binary, std's line
    // buffering would only split it.
    let stdout = io::stdout();
    let mut pump = Pump::new();
    while stream_open || !confirmed {
        let mut fds = Vec::with_capacity(2);
        if stream_open {
            fds.push(PollFd::new(stream.as_fd(), PollFlags::POLLIN));
        }
        if !confirmed {
            fds.push(PollFd::new(daemon.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(err) => return Err(Failure::msg(format!("poll: {}", err.desc()))),
        }
        let events: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let (stream_ready, daemon_ready) = match (stream_open, confirmed) {
            (true, false) => (events[0], events[1]),
            (true, true) => (events[0], false),
            (false, _) => (false, events[0]),
        };

        if stream_ready {
            match pump.transfer(stream.as_fd(), stdout.as_fd()) {
                Ok(0) => {
                    stream_open = false;
                    // Everything is out: tell the VM it may leave. Its
                    // outcome comes from vmd.
                    let _ = stream.write_all(&[SEND_RECEIVED]);
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                }
                Ok(_) => {}
                Err(PumpError::Write(err)) => {
                    return Err(Failure::msg(format!("write: {}", error_text(&err))));
                }
                Err(PumpError::Read(err)) => {
                    return Err(Failure::msg(format!("read: {}", error_text(&err))));
                }
            }
        }
        if daemon_ready {
            match daemon.reply()? {
                Response::SendStarted(Ok(_)) => {}
                Response::SendDone(Ok(())) => confirmed = true,
                Response::SendStarted(Err(code)) | Response::SendDone(Err(code)) => {
                    return Err(send_failure(code));
                }
                _ => return Err(Failure::unexpected_response()),
            }
        }
    }
    output::warnx(format_args!("sent vm {label} successfully"));
    Ok(())
}
