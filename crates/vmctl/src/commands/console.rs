//! `console id` (vmctl(8), console): find the running VM's tty, then run the
//! built-in console client on it. A VM that is not running shows the
//! output of its last run instead, and how that run ended (a Linux
//! extension, vmctl(8)).

use proto::control::VmRef;

use super::single_operand;
use crate::args::parse_id;
use crate::cli::CommandId;
use crate::daemon::list_vms;
use crate::failure::{CmdResult, Failure};

pub use crate::console::session;

pub fn run(args: &[String]) -> CmdResult {
    let word = single_operand(args, CommandId::Console)?;
    let target = parse_id(Some(word), false)?;
    let vms = list_vms()?;
    let running = vms.iter().find_map(|vm| match vm.tty.as_deref() {
        Some(tty) if !tty.is_empty() && target.matches(vm.id, &vm.name) => {
            Some((vm.id, tty.to_string()))
        }
        _ => None,
    });
    if let Some((id, tty)) = running {
        return session(VmRef::Id(id), &tty);
    }
    let stopped = vms.iter().find(|vm| target.matches(vm.id, &vm.name));
    match stopped {
        Some(vm) => match crate::console::history(VmRef::Id(vm.id))? {
            Some(()) => Ok(()),
            None => Err(Failure::msg("console not found")),
        },
        None => Err(Failure::msg("console not found")),
    }
}
