//! How a command fails: what the user is told before vmctl exits 1.

use proto::error::Line;

use crate::cli::{self, CommandId};
use crate::output;

/// A failed command. Every variant ends in exit status 1 (vmctl(8), "EXIT STATUS").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The global usage line.
    GlobalUsage,
    /// No command word: the global usage line, then the list of commands
    /// (the list is a Linux extension).
    NoCommand,
    /// A command word that names no command (`unknown argument: <word>`)
    /// or several (`ambiguous argument: <word>`), then the global usage.
    CommandWord { word: String, ambiguous: bool },
    /// The command's own usage line.
    Usage(CommandId),
    /// `vmctl: <line>` for each line, in order.
    Messages(Vec<String>),
    /// Everything was already printed (stop's completion text, the status
    /// table); only the exit status is left.
    Reported,
}

impl Failure {
    /// One `vmctl: <text>` line.
    pub fn msg(text: impl Into<String>) -> Failure {
        Failure::Messages(vec![text.into()])
    }

    /// Several `vmctl: <text>` lines, e.g. `name too long` then
    /// `invalid id: <word>`.
    pub fn msgs<const N: usize>(lines: [String; N]) -> Failure {
        Failure::Messages(lines.into())
    }

    /// OpenBSD's message for a failure vmd reported, then the cause vmd
    /// found: its first line after `: ` on the same line, so the message
    /// still starts as OpenBSD's does, and any further lines (a
    /// configuration file's other errors) each as a line of its own.
    pub fn with_cause(message: impl Into<String>, cause: &[Line]) -> Failure {
        let mut first = message.into();
        let mut rest = cause.iter();
        if let Some(line) = rest.next() {
            first.push_str(": ");
            first.push_str(line.as_str());
        }
        let mut lines = vec![first];
        lines.extend(rest.map(|line| line.as_str().to_string()));
        Failure::Messages(lines)
    }

    /// The reply to anything vmd sends that the command cannot use.
    pub fn unexpected_response() -> Failure {
        Failure::msg("unexpected response received from vmd")
    }

    /// vmd closed the connection before the answer was complete.
    pub fn pipe_closed() -> Failure {
        Failure::msg("pipe closed")
    }

    /// Prints what the user must see on stderr.
    pub fn report(&self) {
        match self {
            Failure::GlobalUsage => output::global_usage(),
            Failure::NoCommand => {
                output::global_usage();
                output::eprint_raw(output::command_list());
            }
            Failure::CommandWord { word, ambiguous } => {
                let what = if *ambiguous { "ambiguous" } else { "unknown" };
                output::eprint_raw(format_args!("{what} argument: {word}\n"));
                output::global_usage();
            }
            Failure::Usage(id) => {
                let command = cli::command(*id);
                output::command_usage(command.name, command.usage);
            }
            Failure::Messages(lines) => lines.iter().for_each(output::warnx),
            Failure::Reported => {}
        }
    }
}

/// What every command returns; `Ok` is exit status 0.
pub type CmdResult = Result<(), Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_follows_the_message() {
        assert_eq!(
            Failure::with_cause("command failed", &[]),
            Failure::msg("command failed")
        );
        assert_eq!(
            Failure::with_cause(
                "command failed",
                &[
                    Line::new("/etc/a.conf:3: syntax error"),
                    Line::new("/etc/a.conf:9: x")
                ]
            ),
            Failure::msgs([
                "command failed: /etc/a.conf:3: syntax error".to_string(),
                "/etc/a.conf:9: x".to_string(),
            ])
        );
    }
}
