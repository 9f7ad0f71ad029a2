//! The user's terminal while a console session runs: raw (no echo, no
//! signal keys, no output processing) and restored on every way out.

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
    /// the answer without its newline; `None` at end of input.
    pub fn prompt(&mut self, question: &str) -> Option<String> {
        self.restore();
        let mut stderr = io::stderr();
        let _ = write!(stderr, "{question} ");
        let _ = stderr.flush();
        let answer = read_line();
        let _ = self.enter_raw();
        answer
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Reads one line from stdin byte by byte, so nothing beyond the newline
/// is taken from the descriptor the relay reads next.
fn read_line() -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(io::stdin(), &mut byte) {
            Ok(0) if line.is_empty() => return None,
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(nix::Error::EINTR) => continue,
            Err(_) => return None,
        }
    }
    Some(
        String::from_utf8_lossy(&line)
            .trim_end_matches('\r')
            .to_string(),
    )
}
