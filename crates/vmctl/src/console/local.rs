//! What the `~` escapes do on the client's side: leave, BREAK, suspend,
//! help, and the prompted local commands (`~$ ~> ~C ~R ~S ~X`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, raise};
use proto::control::Request;

use super::escape::{Escape, HELP};
use super::relay::{End, Mode, Relay};
use super::terminal::Terminal;
use super::xmodem;
use crate::daemon::error_text;
use crate::output;

/// A message while the terminal is raw: prefixed, ended by CR LF.
fn say(text: impl std::fmt::Display) {
    let mut stderr = io::stderr();
    let _ = write!(stderr, "{}: {text}\r\n", output::progname());
    let _ = stderr.flush();
}

impl Relay<'_> {
    fn terminal(&mut self) -> &mut Terminal {
        match &mut self.mode {
            Mode::Interactive { terminal, .. } => terminal,
            Mode::Piped => unreachable!("escapes are read only from a terminal"),
        }
    }

    /// Asks a question; `None` for no answer or an empty one.
    fn ask(&mut self, question: &str) -> Option<String> {
        self.prompt(question).filter(|a| !a.is_empty())
    }

    fn prompt(&mut self, question: &str) -> Option<String> {
        let Mode::Interactive { terminal, .. } = &mut self.mode else {
            unreachable!("escapes are read only from a terminal");
        };
        terminal.prompt(question, &mut self.typed_ahead)
    }

    pub(super) fn perform(&mut self, escape: Escape) -> Result<(), End> {
        match escape {
            Escape::Disconnect => return Err(End::Closed),
            Escape::Break => {
                // Linux ptys carry no BREAK; vmd raises it on the UART.
                let _ = self.daemon.request(&Request::ConsoleBreak);
            }
            Escape::Suspend => {
                self.terminal().restore();
                let _ = raise(Signal::SIGTSTP);
                let _ = self.terminal().enter_raw();
            }
            Escape::Help => {
                let mut stderr = io::stderr();
                for line in HELP {
                    let _ = write!(stderr, "{line}\r\n");
                }
                let _ = stderr.flush();
            }
            Escape::PipeCommand => {
                if let Some(command) = self.ask("Local command?") {
                    self.pipe_command(&command)?;
                }
            }
            Escape::SendFile => {
                if let Some(path) = self.ask("Local file?") {
                    self.send_file(&path)?;
                }
            }
            Escape::ConnectProgram => {
                if let Some(command) = self.ask("Local command?") {
                    self.connect_program(&command)?;
                }
            }
            Escape::DropDtr => self.line.pulse_dtr(),
            Escape::Record => {
                let answer = self.prompt("Record file?");
                self.record_to(answer);
            }
            Escape::SetSpeed => {
                if let Some(answer) = self.ask("New speed?") {
                    let speed = answer.trim().parse::<u32>().ok();
                    if speed.is_none_or(|s| self.line.set_speed(s).is_err()) {
                        say(format_args!("invalid speed: {answer}"));
                    }
                }
            }
            Escape::Xmodem => {
                if let Some(path) = self.ask("Local file?") {
                    self.xmodem(&path)?;
                }
            }
            Escape::Ignored => {}
        }
        Ok(())
    }

    /// Writes bytes produced locally to the guest, waiting for room.
    fn send_to_guest(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.to_guest.extend_from_slice(bytes);
        self.flush_guest_input()
    }

    /// `~$`: runs `sh -c command`; what it prints goes to the guest.
    fn pipe_command(&mut self, command: &str) -> Result<(), End> {
        self.terminal().restore();
        let output = Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output();
        let _ = self.terminal().enter_raw();
        match output {
            Ok(output) => self.send_to_guest(&output.stdout),
            Err(err) => {
                say(format_args!("/bin/sh: {}", error_text(&err)));
                Ok(())
            }
        }
    }

    /// `~>`: sends a file's bytes unchanged.
    fn send_file(&mut self, path: &str) -> Result<(), End> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(err) => {
                say(format_args!("{path}: {}", error_text(&err)));
                return Ok(());
            }
        };
        let mut chunk = [0u8; 4096];
        loop {
            match file.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => self.send_to_guest(&chunk[..n])?,
                Err(err) => {
                    say(format_args!("{path}: {}", error_text(&err)));
                    return Ok(());
                }
            }
        }
    }

    /// `~C`: runs `sh -c command` with its stdin and stdout on the line.
    fn connect_program(&mut self, command: &str) -> Result<(), End> {
        self.flush_guest_input()?;
        let (input, output) = match (self.line.try_clone(), self.line.try_clone()) {
            (Ok(input), Ok(output)) => (input, output),
            (Err(err), _) | (_, Err(err)) => {
                say(format_args!("{}", error_text(&err)));
                return Ok(());
            }
        };
        self.terminal().restore();
        let _ = self.line.set_nonblocking(false);
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::from(input))
            .stdout(Stdio::from(output))
            .status();
        let _ = self.line.set_nonblocking(true);
        let _ = self.terminal().enter_raw();
        if let Err(err) = status {
            say(format_args!("/bin/sh: {}", error_text(&err)));
        }
        Ok(())
    }

    /// `~R`: starts (or, on an empty answer, stops) recording the output.
    fn record_to(&mut self, answer: Option<String>) {
        self.record = None;
        let Some(path) = answer.filter(|a| !a.is_empty()) else {
            return;
        };
        match File::options().append(true).create(true).open(&path) {
            Ok(file) => self.record = Some(file),
            Err(err) => say(format_args!("{path}: {}", error_text(&err))),
        }
    }

    /// `~X`: sends a file with XMODEM.
    fn xmodem(&mut self, path: &str) -> Result<(), End> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(err) => {
                say(format_args!("{path}: {}", error_text(&err)));
                return Ok(());
            }
        };
        self.flush_guest_input()?;
        match xmodem::send(
            self.line,
            io::BufReader::new(file),
            xmodem::Timeouts::default(),
        ) {
            Ok(1) => say("xmodem: sent 1 block"),
            Ok(blocks) => say(format_args!("xmodem: sent {blocks} blocks")),
            Err(err) => say(format_args!("xmodem: {err}")),
        }
        Ok(())
    }
}
