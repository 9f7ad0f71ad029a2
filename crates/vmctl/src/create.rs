//! `vmctl create [-b base | -i disk] [-s size] disk` (vmctl.md §6.2).
//!
//! Placeholder until the disk crate lands: the command is parsed by the
//! disk work, which replaces this file.

use crate::output;

/// Runs `create` with the words after the command word; returns the exit
/// status.
pub fn run(_args: &[String]) -> i32 {
    output::warnx("create imagefile operation failed: Function not implemented");
    1
}
