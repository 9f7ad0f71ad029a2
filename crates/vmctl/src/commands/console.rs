//! `console id` (vmctl.md §6.1): find the running VM's tty, then run the
//! built-in console client on it.

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
    let (id, tty) = vms
        .iter()
        .find_map(|vm| match vm.tty.as_deref() {
            Some(tty) if !tty.is_empty() && target.matches(vm.id, &vm.name) => {
                Some((vm.id, tty.to_string()))
            }
            _ => None,
        })
        .ok_or_else(|| Failure::msg("console not found"))?;
    session(VmRef::Id(id), &tty)
}
