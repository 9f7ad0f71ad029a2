//! `status [-r] [id]` and its alias `show` (vmctl.md §6.9).

mod table;

pub use table::{Accounts, SystemAccounts, header, owner_label, row};

use std::io::Write;

use proto::control::{VmInfo, VmRef};

use crate::args::parse_id;
use crate::cli::CommandId;
use crate::daemon::list_vms;
use crate::failure::{CmdResult, Failure};
use crate::getopt::{Getopt, Opt};

/// Which rows to print.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// `-r`: running VMs only.
    pub running_only: bool,
    /// The `id` operand.
    pub target: Option<VmRef>,
}

impl Filter {
    fn passes_running(&self, vm: &VmInfo) -> bool {
        !self.running_only || vm.running()
    }

    fn selects(&self, vm: &VmInfo) -> bool {
        self.passes_running(vm)
            && self
                .target
                .as_ref()
                .is_none_or(|target| target.matches(vm.id, &vm.name))
    }
}

pub fn parse(args: &[String], id: CommandId) -> Result<Filter, Failure> {
    let mut getopt = Getopt::new(args, "r");
    let mut filter = Filter::default();
    for opt in getopt.by_ref() {
        match opt {
            Opt::Found('r', _) => filter.running_only = true,
            _ => return Err(Failure::Usage(id)),
        }
    }
    match getopt.operands() {
        [] => {}
        [word] => filter.target = Some(parse_id(Some(word), false)?),
        _ => return Err(Failure::Usage(id)),
    }
    Ok(filter)
}

/// The lines to print for a VM list, and whether any VM passed `-r`
/// (the exit status is 1 when none did, even though the header prints).
pub fn render(vms: &[VmInfo], filter: &Filter, accounts: &dyn Accounts) -> (Vec<String>, bool) {
    let mut lines = vec![header()];
    lines.extend(
        vms.iter()
            .filter(|vm| filter.selects(vm))
            .map(|vm| row(vm, &owner_label(vm.owner_uid, vm.owner_gid, accounts))),
    );
    let any = vms.iter().any(|vm| filter.passes_running(vm));
    (lines, any)
}

pub fn run(args: &[String], id: CommandId) -> CmdResult {
    let filter = parse(args, id)?;
    let vms = list_vms()?;
    let (lines, any) = render(&vms, &filter, &SystemAccounts);
    let mut stdout = std::io::stdout().lock();
    for line in &lines {
        // A closed stdout (e.g. `| head -1`) loses only the table.
        let _ = writeln!(stdout, "{line}");
    }
    let _ = stdout.flush();
    if any { Ok(()) } else { Err(Failure::Reported) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::control::state;

    struct NoAccounts;
    impl Accounts for NoAccounts {
        fn user_name(&self, _: u32) -> Option<String> {
            None
        }
        fn group_name(&self, _: u32) -> Option<String> {
            None
        }
    }

    fn vm(id: u32, name: &str, running: bool) -> VmInfo {
        VmInfo {
            id,
            name: name.into(),
            max_mem: 512 << 20,
            cur_mem: if running { 1 << 20 } else { 0 },
            vcpus: 1,
            pid: running.then_some(100 + id),
            tty: running.then(|| format!("/dev/pts/{id}")),
            owner_uid: 0,
            owner_gid: None,
            state: if running { state::RUNNING } else { 0 },
        }
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parsing() {
        assert_eq!(parse(&[], CommandId::Status), Ok(Filter::default()));
        assert_eq!(
            parse(&words("-r web"), CommandId::Show),
            Ok(Filter {
                running_only: true,
                target: Some(VmRef::Name("web".into()))
            })
        );
        assert_eq!(
            parse(&words("-x"), CommandId::Show),
            Err(Failure::Usage(CommandId::Show))
        );
        assert_eq!(
            parse(&words("a b"), CommandId::Status),
            Err(Failure::Usage(CommandId::Status))
        );
        assert_eq!(
            parse(&words("-- -a"), CommandId::Status),
            Err(Failure::msg("invalid id: -a"))
        );
    }

    #[test]
    fn filters_and_exit_status() {
        let vms = [vm(1, "a", true), vm(2, "b", false), vm(3, "c", true)];
        let names = |lines: &[String]| {
            lines[1..]
                .iter()
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
                .collect::<Vec<_>>()
        };

        let (lines, any) = render(&vms, &Filter::default(), &NoAccounts);
        assert_eq!(names(&lines), ["a", "b", "c"]);
        assert!(any);

        let running = Filter {
            running_only: true,
            target: None,
        };
        let (lines, any) = render(&vms, &running, &NoAccounts);
        assert_eq!(names(&lines), ["a", "c"]);
        assert!(any);

        let by_id = Filter {
            running_only: false,
            target: Some(VmRef::Id(2)),
        };
        assert_eq!(names(&render(&vms, &by_id, &NoAccounts).0), ["b"]);

        // An id that matches nothing still exits 0; id 0 never matches.
        for target in [VmRef::Name("zzz".into()), VmRef::Id(0)] {
            let filter = Filter {
                running_only: false,
                target: Some(target),
            };
            let (lines, any) = render(&vms, &filter, &NoAccounts);
            assert_eq!(lines, [header()]);
            assert!(any);
        }

        // Nothing passes -r: header only, exit 1.
        let stopped = [vm(2, "b", false)];
        let (lines, any) = render(&stopped, &running, &NoAccounts);
        assert_eq!(lines, [header()]);
        assert!(!any);
        let (lines, any) = render(&[], &Filter::default(), &NoAccounts);
        assert_eq!(lines.len(), 1);
        assert!(!any);
    }
}
