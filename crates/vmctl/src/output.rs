//! How vmctl talks to its user: `vmctl: message` on stderr (warnx style),
//! `vmctl: message: strerror` (warn style), and the usage lines.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

static PROGNAME: OnceLock<String> = OnceLock::new();

/// How many times the global `-v` was given.
static VERBOSITY: AtomicU32 = AtomicU32::new(0);

/// Records the global `-v` count.
pub fn set_verbosity(level: u32) {
    VERBOSITY.store(level, Ordering::Relaxed);
}

pub fn verbosity() -> u32 {
    VERBOSITY.load(Ordering::Relaxed)
}

/// `vmctl: <message>` on stderr, only with `-v` (debug messages such as
/// the per-chunk progress of `create -i`).
pub fn debug(message: impl std::fmt::Display) {
    if verbosity() > 0 {
        warnx(message);
    }
}

/// Records argv[0]'s basename; messages are prefixed with it.
pub fn set_progname(argv0: &str) {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    let name = if base.is_empty() { "vmctl" } else { base };
    let _ = PROGNAME.set(name.to_string());
}

pub fn progname() -> &'static str {
    PROGNAME.get().map(String::as_str).unwrap_or("vmctl")
}

/// `vmctl: <message>` on stderr.
pub fn warnx(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{}: {message}", progname());
}

/// Text on stderr with no prefix and no newline added.
pub fn eprint_raw(text: impl std::fmt::Display) {
    let mut err = std::io::stderr();
    let _ = write!(err, "{text}");
    let _ = err.flush();
}

/// What follows the program name in the global usage line.
pub const GLOBAL_USAGE: &str = "[-v] command [arg ...]";

/// The global usage line: `usage:\tvmctl [-v] command [arg ...]`.
pub fn global_usage_line() -> String {
    format!("usage:\t{} {GLOBAL_USAGE}\n", progname())
}

/// A command's usage line: `usage:\tvmctl [-v] <command> <usage>`.
pub fn command_usage_line(command: &str, usage: &str) -> String {
    format!("usage:\t{} [-v] {command} {usage}\n", progname())
}

/// The commands, one line each with what they do, and how to see the
/// options of one (the reference prints no such list; vmctl(8)
/// documents it).
pub fn command_list() -> String {
    let mut text = String::from("commands:\n");
    for command in crate::cli::COMMANDS {
        text.push_str(&format!("  {:<9}{}\n", command.name, command.summary));
    }
    text.push_str(&format!(
        "Type `{} help command` for the options of a command.\n",
        progname()
    ));
    text
}

/// The global usage line on stderr.
pub fn global_usage() {
    let _ = std::io::stderr().write_all(global_usage_line().as_bytes());
}

/// A command's usage line on stderr.
pub fn command_usage(command: &str, usage: &str) {
    let _ = std::io::stderr().write_all(command_usage_line(command, usage).as_bytes());
}
