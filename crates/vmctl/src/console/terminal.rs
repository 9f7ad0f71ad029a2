//! The user's terminal while a console session runs: raw (no echo, no
//! signal keys, no output processing) and restored on every way out.

use std::collections::VecDeque;
use std::io::{self, Write};

use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};

/// The terminal on stdin in raw mode; the saved settings come back on
/// [`Terminal::restore`] and on drop.
pub struct Terminal {
    saved: Termios,
    raw: bool,
}

impl Terminal {
    /// Puts the terminal on stdin in raw mode.
    pub fn make_raw() -> nix::Result<Terminal> {
        let saved = tcgetattr(io::stdin())?;
        let mut terminal = Terminal { saved, raw: false };
        terminal.enter_raw()?;
        Ok(terminal)
    }

    pub fn enter_raw(&mut self) -> nix::Result<()> {
        let mut raw = self.saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(io::stdin(), SetArg::TCSADRAIN, &raw)?;
        self.raw = true;
        Ok(())
    }

    /// Back to the user's own settings (for a prompt, a local program, a
    /// suspension, or the end of the session).
    pub fn restore(&mut self) {
        if self.raw {
            let _ = tcsetattr(io::stdin(), SetArg::TCSADRAIN, &self.saved);
            self.raw = false;
        }
    }

    /// Asks a question with the terminal in its normal mode and returns
    /// the answer without its newline; `None` at end of input. Keys typed
    /// ahead (read with the escape, not yet used) answer first.
    pub fn prompt(&mut self, question: &str, typed_ahead: &mut VecDeque<u8>) -> Option<String> {
        self.restore();
        let mut stderr = io::stderr();
        let _ = write!(stderr, "{question} ");
        let _ = stderr.flush();
        let answer = match take_line(typed_ahead) {
            Some(line) => Some(line),
            None => {
                let mut line: Vec<u8> = typed_ahead.drain(..).collect();
                read_line(&mut line).then_some(line)
            }
        };
        let _ = self.enter_raw();
        answer.map(|line| String::from_utf8_lossy(&line).into_owned())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.restore();
    }
}

/// A whole line typed ahead in raw mode (ended by CR or LF), if there is
/// one; it is removed from `typed_ahead` with its end.
fn take_line(typed_ahead: &mut VecDeque<u8>) -> Option<Vec<u8>> {
    let end = typed_ahead.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let line: Vec<u8> = typed_ahead.drain(..end).collect();
    typed_ahead.pop_front();
    Some(line)
}

/// Completes `line` from stdin byte by byte, so nothing beyond the
/// newline is taken from the descriptor the relay reads next. False at
/// end of input with nothing typed.
fn read_line(line: &mut Vec<u8>) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(io::stdin(), &mut byte) {
            Ok(0) => return !line.is_empty(),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(nix::Error::EINTR) => continue,
            Err(_) => return false,
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_ahead_lines() {
        let mut ahead: VecDeque<u8> = b"file.txt\rmore".iter().copied().collect();
        assert_eq!(take_line(&mut ahead).as_deref(), Some(&b"file.txt"[..]));
        assert_eq!(ahead.iter().copied().collect::<Vec<_>>(), b"more");
        assert_eq!(take_line(&mut ahead), None);
        let mut ahead: VecDeque<u8> = b"\nx".iter().copied().collect();
        assert_eq!(take_line(&mut ahead).as_deref(), Some(&b""[..]));
        assert_eq!(ahead.len(), 1);
    }
}
