//! vmctl: control the VMs run by vmd (vmctl(8)).
//!
//! `vmctl [-v] command [arg ...]`: global options, then a command word
//! matched by unambiguous prefix, then the command's own arguments.

mod args;
mod cli;
mod commands;
#[cfg(test)]
mod completion_tests;
mod console;
mod create;
mod daemon;
mod failure;
mod getopt;
#[cfg(test)]
mod man_page;
mod output;

use failure::Failure;
use getopt::{Getopt, Opt};

/// Parses the global options and runs the command; returns the exit status.
fn run(args: &[String]) -> i32 {
    let mut getopt = Getopt::new(args, cli::GLOBAL_OPTIONS);
    let mut verbosity = 0;
    for opt in getopt.by_ref() {
        match opt {
            Opt::Found('v', _) => verbosity += 1,
            _ => {
                Failure::GlobalUsage.report();
                return 1;
            }
        }
    }
    output::set_verbosity(verbosity);
    let Some((word, rest)) = getopt.operands().split_first() else {
        Failure::NoCommand.report();
        return 1;
    };
    match commands::command_named(word) {
        Ok(command) => commands::run(command.id, rest),
        Err(failure) => {
            failure.report();
            1
        }
    }
}

fn main() {
    // Arguments that are not UTF-8 are taken with replacement characters;
    // vmctl's operands are names, sizes and paths that are UTF-8 in practice.
    let argv: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    output::set_progname(argv.first().map(String::as_str).unwrap_or("vmctl"));
    let status = run(argv.get(1..).unwrap_or_default());
    std::process::exit(status);
}
