//! `help [command]`, a Linux extension (vmctl(8)): on stdout, the global
//! usage line and the list of commands, or the usage line of one command
//! (which names every option it accepts). The command word may be
//! abbreviated as on the command line.

use std::io::Write;

use super::single_operand;
use crate::cli::CommandId;
use crate::daemon::error_text;
use crate::failure::{CmdResult, Failure};
use crate::output;

pub fn run(args: &[String]) -> CmdResult {
    let text = if args.is_empty() {
        output::global_usage_line() + &output::command_list()
    } else {
        let word = single_operand(args, CommandId::Help)?;
        let command = super::command_named(word)?;
        output::command_usage_line(command.name, command.usage)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|err| Failure::msg(format!("write: {}", error_text(&err))))
}
