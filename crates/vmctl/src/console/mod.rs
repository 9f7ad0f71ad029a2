//! The built-in console client that replaces `cu -r -l <tty> -s 115200`
//! (vmctl(8), console; docs/lifecycle.md, "The console").
//!
//! A session opens the VM's tty exclusively, attaches to vmd on a
//! connection of its own (vmd answers with the output to replay, and tells
//! the client on that connection when the VM stops; `~#` sends BREAK
//! requests over it), then relays the tty and the user's terminal until
//! the user leaves, the VM stops or a signal ends it.

pub(crate) mod escape;
mod line;
mod local;
mod relay;
mod signals;
mod terminal;
mod xmodem;

use std::io::{self, Write};

use proto::control::{Request, Response, VmRef};

use crate::daemon::Daemon;
use crate::failure::{CmdResult, Failure};
use line::{CONSOLE_SPEED, Line};
use relay::{Mode, Relay};
use signals::EndSignals;
use terminal::Terminal;

fn open_failure(errno: i32) -> Failure {
    Failure::msg(format!(
        "failed to open the console: {}",
        proto::error::strerror(errno)
    ))
}

/// Runs a console session on the running VM `target` whose tty is `tty`.
pub fn session(target: VmRef, tty: &str) -> CmdResult {
    let line = Line::open(tty).map_err(|errno| open_failure(errno as i32))?;
    let daemon = Daemon::connect()?;
    daemon.request(&Request::ConsoleAttach { target })?;
    let (tty, replay) = match daemon.reply()? {
        Response::ConsoleAttached { tty, replay } => (tty, replay),
        // The VM ended before the session was attached: what it printed,
        // then how it ended, which fails the session as it would have
        // had it been attached.
        Response::ConsoleHistory { name, output, end } => {
            print_output(&output);
            return match end.filter(|end| end.abnormal()) {
                Some(end) => Err(Failure::msg(format!("vm {name} ended: {end}"))),
                None => Ok(()),
            };
        }
        Response::ConsoleRefused(code) => {
            return Err(Failure::msg(format!("failed to open the console: {code}")));
        }
        _ => return Err(Failure::unexpected_response()),
    };

    let interactive = nix::unistd::isatty(io::stdin()).unwrap_or(false);
    let signals = EndSignals::install(interactive).map_err(|errno| open_failure(errno as i32))?;
    let mode = if interactive {
        let terminal = Terminal::make_raw().map_err(|errno| open_failure(errno as i32))?;
        Mode::interactive(terminal)
    } else {
        Mode::Piped
    };

    let mut stderr = io::stderr();
    let _ = write!(stderr, "Connected to {tty} (speed {CONSOLE_SPEED})\r\n");
    let _ = stderr.flush();

    let mut relay = Relay::new(&line, &daemon, &signals, mode);
    let end = match relay.show_output(&replay) {
        Ok(()) => relay.run(),
        Err(end) => end,
    };
    let ended = relay.ended.take();
    // Restores the user's terminal before the last line.
    drop(relay);

    let _ = write!(stderr, "\r\n[{}]\n", end.label());
    let _ = stderr.flush();
    match ended {
        // A VM that ended abnormally is a failure of the session: the
        // user learns how it ended and the exit status says so.
        Some((name, end)) => Err(Failure::msg(format!("vm {name} ended: {end}"))),
        None => Ok(()),
    }
}

/// The console of a VM that is not running: the output of its last run
/// and, if it ended abnormally, how. `None` when vmd has nothing to show
/// (the VM never ran).
pub fn history(target: VmRef) -> Result<Option<()>, Failure> {
    let daemon = Daemon::connect()?;
    daemon.request(&Request::ConsoleAttach { target })?;
    match daemon.reply()? {
        Response::ConsoleHistory { name, output, end } => {
            print_output(&output);
            if let Some(end) = end.filter(|end| end.abnormal()) {
                crate::output::warnx(format!("vm {name} ended: {end}"));
            }
            Ok(Some(()))
        }
        Response::ConsoleRefused(code) if code == proto::ErrorCode::ENOENT => Ok(None),
        Response::ConsoleRefused(code) => {
            Err(Failure::msg(format!("failed to open the console: {code}")))
        }
        _ => Err(Failure::unexpected_response()),
    }
}

/// Writes a stopped VM's last output as it was.
fn print_output(output: &[u8]) {
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(output);
    let _ = stdout.flush();
}
