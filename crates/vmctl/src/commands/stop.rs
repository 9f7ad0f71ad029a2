//! `stop [-fw] [id | -a]` and `wait id` (vmctl(8), stop, wait).
//!
//! Both print a lead-in without the `vmctl:` prefix and without a newline
//! (`stopping vm web: `), then the completion text once vmd answers.

use proto::control::{Request, Response, VmRef};
use proto::error::ErrorCode;

use super::single_operand;
use crate::args::parse_id;
use crate::cli::{self, CommandId};
use crate::daemon::{Daemon, list_vms};
use crate::failure::{CmdResult, Failure};
use crate::getopt::Opt;
use crate::output;

/// What `stop` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopArgs {
    pub force: bool,
    pub wait: bool,
    /// `None` for `-a`.
    pub target: Option<VmRef>,
}

pub fn parse_stop(args: &[String]) -> Result<StopArgs, Failure> {
    let mut getopt = cli::command(CommandId::Stop).getopt(args);
    let (mut force, mut wait, mut all) = (false, false, false);
    for opt in getopt.by_ref() {
        match opt {
            Opt::Found('f', _) => force = true,
            Opt::Found('w', _) => wait = true,
            Opt::Found('a', _) => all = true,
            _ => return Err(Failure::Usage(CommandId::Stop)),
        }
    }
    let target = match (all, getopt.operands()) {
        (true, []) => None,
        (false, [word]) => Some(parse_id(Some(word), false)?),
        _ => return Err(Failure::Usage(CommandId::Stop)),
    };
    Ok(StopArgs {
        force,
        wait,
        target,
    })
}

/// The lead-in printed once the request is on its way.
pub fn lead_in(verb: &str, target: &VmRef) -> String {
    match target {
        VmRef::Name(name) => format!("{verb} vm {name}: "),
        VmRef::Id(_) => format!("{verb} vm: "),
    }
}

/// The completion text for a refused stop or wait.
pub fn failure_text(code: ErrorCode) -> String {
    match code {
        ErrorCode::ENOENT => "vm not found".to_string(),
        ErrorCode::STOP_INVALID => "cannot stop vm that is not running".to_string(),
        ErrorCode::EINTR => "interrupted call".to_string(),
        other => format!("failed: {other}"),
    }
}

/// Sends a stop or wait request and reports its outcome on stderr.
/// `waiting` is true when the answer is the VM's termination (`-w`,
/// `wait`), false when it is the acceptance of the request.
fn request_and_report(verb: &str, request: Request, target: &VmRef, waiting: bool) -> CmdResult {
    let daemon = Daemon::connect()?;
    daemon.request(&request)?;
    output::eprint_raw(lead_in(verb, target));
    loop {
        match daemon.reply()? {
            Response::Terminate { id, result: Ok(()) } if !waiting => {
                output::eprint_raw(format_args!("requested to shutdown vm {id}\n"));
                return Ok(());
            }
            // The acceptance of a waiting stop: the termination follows.
            Response::Terminate { result: Ok(()), .. } => continue,
            Response::Terminate {
                result: Err(code), ..
            } => {
                output::eprint_raw(format_args!("{}\n", failure_text(code)));
                return Err(Failure::Reported);
            }
            Response::Terminated { id } => {
                output::eprint_raw(format_args!("terminated vm {id}\n"));
                return Ok(());
            }
            _ => return Err(Failure::unexpected_response()),
        }
    }
}

fn stop_one(target: VmRef, force: bool, wait: bool) -> CmdResult {
    let request = Request::Terminate {
        target: target.clone(),
        force,
        wait,
    };
    request_and_report("stopping", request, &target, wait)
}

pub fn run_stop(args: &[String]) -> CmdResult {
    let StopArgs {
        force,
        wait,
        target,
    } = parse_stop(args)?;
    match target {
        Some(target) => stop_one(target, force, wait),
        None => {
            // Each running VM in list order, by name; individual failures
            // are reported but leave the exit status at 0, as upstream.
            for vm in list_vms()?.into_iter().filter(|vm| vm.running()) {
                if let Err(failure) = stop_one(VmRef::Name(vm.name), force, wait) {
                    failure.report();
                }
            }
            Ok(())
        }
    }
}

pub fn run_wait(args: &[String]) -> CmdResult {
    let word = single_operand(args, CommandId::Wait)?;
    let target = parse_id(Some(word), false)?;
    let request = Request::Wait {
        target: target.clone(),
    };
    request_and_report("waiting for", request, &target, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn stop_arguments() {
        assert_eq!(
            parse_stop(&words("-fw web")),
            Ok(StopArgs {
                force: true,
                wait: true,
                target: Some(VmRef::Name("web".into()))
            })
        );
        assert_eq!(
            parse_stop(&words("-a -w")),
            Ok(StopArgs {
                force: false,
                wait: true,
                target: None
            })
        );
        assert_eq!(
            parse_stop(&words("3")).map(|a| a.target),
            Ok(Some(VmRef::Id(3)))
        );
        for bad in ["", "-a web", "a b", "-x web", "web -a"] {
            assert_eq!(
                parse_stop(&words(bad)),
                Err(Failure::Usage(CommandId::Stop)),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_stop(&words("-- -a")),
            Err(Failure::msg("invalid id: -a"))
        );
    }

    #[test]
    fn texts() {
        assert_eq!(
            lead_in("stopping", &VmRef::Name("web".into())),
            "stopping vm web: "
        );
        assert_eq!(lead_in("stopping", &VmRef::Id(4)), "stopping vm: ");
        assert_eq!(lead_in("waiting for", &VmRef::Id(4)), "waiting for vm: ");
        assert_eq!(
            lead_in("waiting for", &VmRef::Name("x".into())),
            "waiting for vm x: "
        );
        assert_eq!(failure_text(ErrorCode::ENOENT), "vm not found");
        assert_eq!(failure_text(ErrorCode::EINVAL), "failed: Invalid argument");
        assert_eq!(
            failure_text(ErrorCode::EALREADY),
            "failed: Operation already in progress"
        );
        assert_eq!(
            failure_text(ErrorCode::EPERM),
            "failed: Operation not permitted"
        );
        assert_eq!(
            failure_text(ErrorCode::STOP_INVALID),
            "cannot stop vm that is not running"
        );
        assert_eq!(failure_text(ErrorCode::EINTR), "interrupted call");
        assert_eq!(failure_text(ErrorCode::EIO), "failed: Input/output error");
    }
}
