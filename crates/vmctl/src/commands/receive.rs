//! Legacy `receive name` (vmctl(8), send, receive): stdin goes into one end of a
//! socket pair whose other end vmd restores the VM from (spliced where
//! stdin allows, [`Feeder`]); the outcome is reported like `start`. A
//! terminal is refused as the stream's source before vmd is asked
//! anything.

use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use proto::control::{Request, Response, VmRef};

use super::single_operand;
use super::start::start_failure;
use super::stream_pump::{self, Feeder};
use crate::args::parse_id;
use crate::cli::CommandId;
use crate::daemon::{Daemon, error_text};
use crate::failure::{CmdResult, Failure};
use crate::output;

pub fn run(args: &[String]) -> CmdResult {
    let word = single_operand(args, CommandId::Receive)?;
    let VmRef::Name(name) = parse_id(Some(word), true)? else {
        unreachable!("parse_id refuses numbers when a name is needed");
    };
    // A stream is a file or a pipe; from a terminal vmctl would wait for
    // typed input forever. Refused before vmd is asked anything.
    if io::stdin().is_terminal() {
        return Err(Failure::msg(
            "receive: standard input is a terminal; redirect it from a file or a pipe",
        ));
    }
    let (stream, vmd_end) = UnixStream::pair()
        .map_err(|err| Failure::msg(format!("socketpair: {}", error_text(&err))))?;
    stream
        .set_nonblocking(true)
        .map_err(|err| Failure::msg(format!("socketpair: {}", error_text(&err))))?;
    stream_pump::widen_send_buffer(&stream);
    let daemon = Daemon::connect()?;
    daemon.request_with_fds(&Request::Receive { name }, &[vmd_end.as_raw_fd()])?;
    drop(vmd_end);

    // `None` once the whole input went out (or vmd stopped taking it):
    // closing our end is vmd's end of file.
    let mut stream = Some(stream);
    let mut feeder = Feeder::new();
    let stdin = io::stdin();
    loop {
        let mut fds = vec![PollFd::new(daemon.as_fd(), PollFlags::POLLIN)];
        let mut stdin_slot = None;
        let mut stream_slot = None;
        if let Some(stream) = &stream {
            if feeder.is_empty() {
                stdin_slot = Some(fds.len());
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            } else {
                stream_slot = Some(fds.len());
                fds.push(PollFd::new(stream.as_fd(), PollFlags::POLLOUT));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(err) => return Err(Failure::msg(format!("poll: {}", err.desc()))),
        }
        let ready = |slot: Option<usize>| {
            slot.is_some_and(|i| fds[i].revents().is_some_and(|r| !r.is_empty()))
        };
        let (daemon_ready, stdin_ready, stream_ready) =
            (ready(Some(0)), ready(stdin_slot), ready(stream_slot));
        drop(fds);

        if daemon_ready {
            drop(stream.take());
            return match daemon.reply()? {
                Response::Start(Ok(started)) => {
                    output::warnx(format_args!(
                        "started vm {} successfully, tty {}",
                        started.id, started.tty
                    ));
                    Ok(())
                }
                Response::Start(Err(failed)) => Err(start_failure(&failed)),
                _ => Err(Failure::unexpected_response()),
            };
        }
        if stdin_ready {
            match feeder.fill(stdin.as_fd()) {
                Ok(0) => stream = None,
                Ok(_) => {}
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => return Err(Failure::msg(format!("read: {}", error_text(&err)))),
            }
        }
        if stream_ready && let Some(writer) = &stream {
            // vmd stopped reading; its verdict follows on the socket.
            if feeder.flush(writer.as_fd()).is_err() {
                stream = None;
            }
        }
    }
}
