//! One module per command; [`run`] dispatches a matched command word.

pub mod console;
pub mod ctl;
pub mod help;
pub mod pause;
pub mod receive;
pub mod send;
pub mod start;
pub mod status;
pub mod stop;
pub mod stream_pump;

use crate::cli::{self, Command, CommandId, Lookup};
use crate::create;
use crate::failure::{CmdResult, Failure};

/// Runs a command with the words after the command word; returns the exit
/// status.
pub fn run(id: CommandId, args: &[String]) -> i32 {
    let result: CmdResult = match id {
        CommandId::Create => return create::run(args),
        CommandId::Console => console::run(args),
        CommandId::Help => help::run(args),
        CommandId::Load => ctl::run_load(args),
        CommandId::Log => ctl::run_log(args),
        CommandId::Reload => ctl::run_reload(args),
        CommandId::Reset => ctl::run_reset(args),
        CommandId::Pause => pause::run(args, pause::Action::Pause),
        CommandId::Unpause => pause::run(args, pause::Action::Unpause),
        CommandId::Receive => receive::run(args),
        CommandId::Send => send::run(args),
        CommandId::Show | CommandId::Status => status::run(args, id),
        CommandId::Start => start::run(args),
        CommandId::Stop => stop::run_stop(args),
        CommandId::Wait => stop::run_wait(args),
    };
    match result {
        Ok(()) => 0,
        Err(failure) => {
            failure.report();
            1
        }
    }
}

/// The only operand of a command that takes exactly one and no options;
/// anything else is the command's usage.
pub fn single_operand(args: &[String], id: CommandId) -> Result<&str, Failure> {
    match args {
        [word] => Ok(word),
        _ => Err(Failure::Usage(id)),
    }
}

/// The command a command word names, or the failure to report for it
/// (`unknown argument: <word>` or `ambiguous argument: <word>`).
pub fn command_named(word: &str) -> Result<&'static Command, Failure> {
    match cli::lookup(word) {
        Lookup::Found(command) => Ok(command),
        lookup => Err(Failure::CommandWord {
            word: word.to_string(),
            ambiguous: lookup == Lookup::Ambiguous,
        }),
    }
}
