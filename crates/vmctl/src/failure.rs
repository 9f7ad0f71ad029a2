//! How a command fails: what the user is told before vmctl exits 1.

use crate::cli::{self, CommandId};
use crate::output;

/// A failed command. Every variant ends in exit status 1 (vmctl.md §2).
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
