//! The relay loop: guest output to stdout, typed input (through the escape
//! reader when interactive) to the guest, until something ends the session.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use proto::control::{Response, VmEnd};

use super::escape::{EscapeReader, Typed};
use super::line::Line;
use super::signals::EndSignals;
use super::terminal::Terminal;
use crate::daemon::Daemon;

/// Typed input waiting for the guest beyond which stdin is not read.
const MAX_PENDING: usize = 64 * 1024;
const CHUNK: usize = 4096;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The user disconnected, the VM stopped, or the output went away.
    Closed,
    Signal(Signal),
}

impl End {
    /// The word of the session's last line (`[EOT]`, `[SIGTERM]`).
    pub fn label(self) -> &'static str {
        match self {
            End::Closed => "EOT",
            End::Signal(signal) => signal.as_str(),
        }
    }
}

/// Where typed input comes from.
pub enum Mode {
    /// A terminal in raw mode, with `~` escapes.
    Interactive {
        terminal: Terminal,
        escapes: EscapeReader,
    },
    /// A pipe or file: relayed as is; its end of file does not end the
    /// session.
    Piped,
}

impl Mode {
    pub fn interactive(terminal: Terminal) -> Mode {
        Mode::Interactive {
            terminal,
            escapes: EscapeReader::new(),
        }
    }
}

pub struct Relay<'a> {
    pub(super) line: &'a Line,
    pub(super) daemon: &'a Daemon,
    signals: &'a EndSignals,
    pub(super) mode: Mode,
    /// Typed bytes the guest has not taken yet.
    pub(super) to_guest: Vec<u8>,
    stdin_open: bool,
    /// `~R`: a copy of all guest output.
    pub(super) record: Option<File>,
    /// Keys read from the terminal and not processed yet; a prompt
    /// takes its answer from here first.
    pub(super) typed_ahead: VecDeque<u8>,
    /// The VM ended abnormally, as vmd said: its name and how.
    pub ended: Option<(String, VmEnd)>,
}

fn readable(flags: PollFlags) -> bool {
    flags.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
}

impl<'a> Relay<'a> {
    pub fn new(line: &'a Line, daemon: &'a Daemon, signals: &'a EndSignals, mode: Mode) -> Self {
        Relay {
            line,
            daemon,
            signals,
            mode,
            to_guest: Vec::new(),
            stdin_open: true,
            record: None,
            typed_ahead: VecDeque::new(),
            ended: None,
        }
    }

    /// Writes guest output to stdout (and the recording); a stdout that
    /// is gone ends the session.
    pub fn show_output(&mut self, bytes: &[u8]) -> Result<(), End> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .map_err(|_| End::Closed)?;
        if let Some(record) = &mut self.record {
            let _ = record.write_all(bytes);
        }
        Ok(())
    }

    /// Relays until the session ends.
    pub fn run(&mut self) -> End {
        loop {
            if let Err(end) = self.step() {
                return end;
            }
        }
    }

    /// One poll round: signals first, then guest output, then vmd, then
    /// guest input and typed input.
    fn step(&mut self) -> Result<(), End> {
        let read_stdin = self.stdin_open && self.to_guest.len() < MAX_PENDING;
        let mut line_events = PollFlags::POLLIN;
        if !self.to_guest.is_empty() {
            line_events |= PollFlags::POLLOUT;
        }
        let stdin = io::stdin();
        let mut fds = vec![
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.line.as_fd(), line_events),
            PollFd::new(self.daemon.as_fd(), PollFlags::POLLIN),
        ];
        if read_stdin {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => return Err(End::Closed),
        }
        let events: Vec<PollFlags> = fds
            .iter()
            .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);

        if !events[0].is_empty()
            && let Some(signal) = self.signals.take()
        {
            return Err(End::Signal(signal));
        }
        if readable(events[1]) {
            self.guest_output()?;
        }
        if events[1].contains(PollFlags::POLLOUT) {
            self.guest_input()?;
        }
        if readable(events[2]) {
            self.daemon_message()?;
        }
        if read_stdin && !events[3].is_empty() {
            self.typed_input()?;
        }
        Ok(())
    }

    /// Reads what the guest wrote; `Ok(false)` when nothing was waiting.
    /// End of file or EIO on the tty means the VM side is gone.
    fn guest_output(&mut self) -> Result<bool, End> {
        let mut buf = [0u8; CHUNK];
        match nix::unistd::read(self.line.as_fd(), &mut buf) {
            Ok(n) if n > 0 => self.show_output(&buf[..n]).map(|()| true),
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => Ok(false),
            Ok(_) | Err(_) => {
                self.last_word();
                Err(End::Closed)
            }
        }
    }

    /// The tty went away with its VM. vmd says how the VM ended before
    /// it lets go of the tty, so its word is already on the way, but the
    /// same poll round may see the tty's end first: take it now.
    fn last_word(&mut self) {
        if self.ended.is_some() {
            return;
        }
        let mut fds = [PollFd::new(self.daemon.as_fd(), PollFlags::POLLIN)];
        if matches!(poll(&mut fds, PollTimeout::from(1000u16)), Ok(n) if n > 0)
            && let Ok(Response::ConsoleEnded { name, end }) = self.daemon.reply()
        {
            self.ended = Some((name, end));
        }
    }

    /// Passes pending typed input to the guest as far as it takes it.
    fn guest_input(&mut self) -> Result<(), End> {
        match nix::unistd::write(self.line.as_fd(), &self.to_guest) {
            Ok(n) => {
                self.to_guest.drain(..n);
                Ok(())
            }
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => Ok(()),
            Err(_) => Err(End::Closed),
        }
    }

    /// Writes all pending input to the guest before a local command
    /// talks to the line itself.
    pub(super) fn flush_guest_input(&mut self) -> Result<(), End> {
        while !self.to_guest.is_empty() {
            let mut fds = [PollFd::new(self.line.as_fd(), PollFlags::POLLOUT)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(_) => return Err(End::Closed),
            }
            self.guest_input()?;
        }
        Ok(())
    }

    /// vmd speaks on the attach connection only to say the VM stopped,
    /// and how if not cleanly (or by closing it); the output still queued
    /// on the tty is shown first.
    fn daemon_message(&mut self) -> Result<(), End> {
        let reply = self.daemon.reply();
        if let Ok(Response::ConsoleEnded { name, end }) = &reply {
            self.ended = Some((name.clone(), end.clone()));
        }
        match reply {
            Ok(Response::ConsoleClosed | Response::ConsoleEnded { .. }) | Err(_) => {
                while let Ok(true) = self.guest_output() {}
                Err(End::Closed)
            }
            Ok(_) => Ok(()),
        }
    }

    fn typed_input(&mut self) -> Result<(), End> {
        let mut buf = [0u8; CHUNK];
        let n = match nix::unistd::read(io::stdin(), &mut buf) {
            Ok(n) => n,
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => return Ok(()),
            Err(_) => 0,
        };
        if n == 0 {
            // Guest output keeps flowing after the input ends.
            self.stdin_open = false;
            return Ok(());
        }
        let typed = &buf[..n];
        if matches!(self.mode, Mode::Piped) {
            self.to_guest.extend_from_slice(typed);
            return Ok(());
        }
        self.typed_ahead.extend(typed);
        while let Some(byte) = self.typed_ahead.pop_front() {
            let Mode::Interactive { escapes, .. } = &mut self.mode else {
                unreachable!("checked above");
            };
            match escapes.feed(byte) {
                Typed::Send(byte) => self.to_guest.push(byte),
                Typed::Swallowed => {}
                Typed::Escape(escape) => self.perform(escape)?,
            }
        }
        Ok(())
    }
}
