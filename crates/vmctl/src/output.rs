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

/// The global usage line: `usage:\tvmctl [-v] command [arg ...]`.
pub fn global_usage() {
    let _ = writeln!(
        std::io::stderr(),
        "usage:\t{} [-v] command [arg ...]",
        progname()
    );
}

/// A command's usage line: `usage:\tvmctl [-v] <command> <usage>`.
pub fn command_usage(command: &str, usage: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "usage:\t{} [-v] {command} {usage}",
        progname()
    );
}
