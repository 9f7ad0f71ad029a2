//! The `~` escapes typed on an interactive console (vmctl(8), console).
//!
//! `~` starts an escape only as the first character of the session or right
//! after a typed carriage return; the `~` and the character after it are
//! both consumed, whatever that character is.

/// A local command asked for with `~<char>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `~.` or `~^D`: leave the session (the VM keeps running).
    Disconnect,
    /// `~#`: BREAK on the VM's serial port.
    Break,
    /// `~^Z`: suspend the client.
    Suspend,
    /// `~?`: list the escapes.
    Help,
    /// `~$`: run a local command, its output goes to the VM.
    PipeCommand,
    /// `~>`: send a local file.
    SendFile,
    /// `~C`: run a local program with its stdin and stdout on the console.
    ConnectProgram,
    /// `~D`: drop DTR briefly.
    DropDtr,
    /// `~R`: record the console output to a file.
    Record,
    /// `~S`: change the line speed.
    SetSpeed,
    /// `~X`: send a file with XMODEM.
    Xmodem,
    /// `~` and anything else: both characters dropped.
    Ignored,
}

/// What one typed byte amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typed {
    /// Send this byte to the VM.
    Send(u8),
    /// The byte was swallowed (the `~` that may start an escape).
    Swallowed,
    Escape(Escape),
}

pub const ESCAPE_CHAR: u8 = b'~';
const CTRL_D: u8 = 0x04;
const CTRL_Z: u8 = 0x1a;

/// The help `~?` prints, each line ended by CR LF.
pub const HELP: &[&str] = &[
    "~#      send break",
    "~$      pipe local command to remote host",
    "~>      send file to remote host",
    "~C      connect program to remote host",
    "~D      de-assert DTR line briefly",
    "~R      start recording to file",
    "~S      set speed",
    "~X      send file with XMODEM",
    "~?      get this summary",
];

/// Tracks where the user is in a line of typed input.
#[derive(Debug)]
pub struct EscapeReader {
    at_line_start: bool,
    after_escape_char: bool,
}

impl Default for EscapeReader {
    fn default() -> Self {
        Self::new()
    }
}

impl EscapeReader {
    /// A reader at the start of the session, where `~` is recognised.
    pub fn new() -> EscapeReader {
        EscapeReader {
            at_line_start: true,
            after_escape_char: false,
        }
    }

    pub fn feed(&mut self, byte: u8) -> Typed {
        if self.after_escape_char {
            self.after_escape_char = false;
            self.at_line_start = false;
            return match byte {
                ESCAPE_CHAR => Typed::Send(ESCAPE_CHAR),
                other => Typed::Escape(escape_for(other)),
            };
        }
        if self.at_line_start && byte == ESCAPE_CHAR {
            self.after_escape_char = true;
            return Typed::Swallowed;
        }
        self.at_line_start = byte == b'\r';
        Typed::Send(byte)
    }
}

fn escape_for(byte: u8) -> Escape {
    match byte {
        b'.' | CTRL_D => Escape::Disconnect,
        b'#' => Escape::Break,
        CTRL_Z => Escape::Suspend,
        b'?' => Escape::Help,
        b'$' => Escape::PipeCommand,
        b'>' => Escape::SendFile,
        b'C' => Escape::ConnectProgram,
        b'D' => Escape::DropDtr,
        b'R' => Escape::Record,
        b'S' => Escape::SetSpeed,
        b'X' => Escape::Xmodem,
        _ => Escape::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(input: &[u8]) -> Vec<Typed> {
        let mut reader = EscapeReader::new();
        input.iter().map(|&b| reader.feed(b)).collect()
    }

    fn sent(input: &[u8]) -> Vec<u8> {
        feed_all(input)
            .into_iter()
            .filter_map(|t| match t {
                Typed::Send(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    fn escapes(input: &[u8]) -> Vec<Escape> {
        feed_all(input)
            .into_iter()
            .filter_map(|t| match t {
                Typed::Escape(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn escape_at_session_start() {
        assert_eq!(
            feed_all(b"~."),
            [Typed::Swallowed, Typed::Escape(Escape::Disconnect)]
        );
        assert_eq!(escapes(b"~\x04"), [Escape::Disconnect]);
        assert_eq!(escapes(b"~#"), [Escape::Break]);
        assert_eq!(escapes(b"~\x1a"), [Escape::Suspend]);
        assert_eq!(escapes(b"~?"), [Escape::Help]);
        assert_eq!(escapes(b"~$"), [Escape::PipeCommand]);
        assert_eq!(escapes(b"~>"), [Escape::SendFile]);
        assert_eq!(escapes(b"~C"), [Escape::ConnectProgram]);
        assert_eq!(escapes(b"~D"), [Escape::DropDtr]);
        assert_eq!(escapes(b"~R"), [Escape::Record]);
        assert_eq!(escapes(b"~S"), [Escape::SetSpeed]);
        assert_eq!(escapes(b"~X"), [Escape::Xmodem]);
    }

    #[test]
    fn escape_only_after_carriage_return() {
        assert_eq!(sent(b"ls\r~."), b"ls\r");
        assert_eq!(escapes(b"ls\r~."), [Escape::Disconnect]);
        // LF does not count, nor does the middle of a line.
        assert_eq!(sent(b"ls\n~."), b"ls\n~.");
        assert_eq!(sent(b"a~."), b"a~.");
        assert!(escapes(b"a~.").is_empty());
    }

    #[test]
    fn tilde_tilde_sends_one_tilde() {
        assert_eq!(sent(b"~~"), b"~");
        assert_eq!(sent(b"\r~~x"), b"\r~x");
        // After `~~` the line is no longer at its start.
        assert_eq!(sent(b"~~~."), b"~~.");
    }

    #[test]
    fn unknown_escapes_drop_both_characters() {
        assert_eq!(escapes(b"~q"), [Escape::Ignored]);
        assert_eq!(sent(b"~qabc"), b"abc");
        assert_eq!(sent(b"~\rx"), b"x");
        assert_eq!(escapes(b"~c"), [Escape::Ignored]);
    }

    #[test]
    fn escape_char_again_after_each_carriage_return() {
        let input = b"~#a\r~?\r\r~.";
        assert_eq!(
            escapes(input),
            [Escape::Break, Escape::Help, Escape::Disconnect]
        );
        assert_eq!(sent(input), b"a\r\r\r");
    }

    #[test]
    fn help_lines() {
        assert_eq!(HELP.len(), 9);
        for line in HELP {
            assert_eq!(&line[3..8], "     ", "{line}");
        }
    }
}
