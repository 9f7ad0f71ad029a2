//! `status [-r] [id]` and its alias `show` (vmctl(8), status), plus the Linux
//! extensions `-j`: the same facts as JSON ([`json`]), and `-v`: each
//! VM's details after the table, or as more JSON members ([`verbose`]).

mod json;
mod table;
mod verbose;

pub use table::{Accounts, SystemAccounts, header, owner_label, row};

use std::io::Write;

use proto::control::{VmDetails, VmInfo, VmRef};

use crate::args::parse_id;
use crate::cli::{self, CommandId};
use crate::daemon::list_vms;
use crate::failure::{CmdResult, Failure};
use crate::getopt::Opt;

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

/// A parsed `status` command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusArgs {
    pub filter: Filter,
    /// `-j`: JSON instead of the table.
    pub json: bool,
    /// `-v`: each VM's details too.
    pub verbose: bool,
}

pub fn parse(args: &[String], id: CommandId) -> Result<StatusArgs, Failure> {
    let mut getopt = cli::command(id).getopt(args);
    let mut parsed = StatusArgs::default();
    for opt in getopt.by_ref() {
        match opt {
            Opt::Found('r', _) => parsed.filter.running_only = true,
            Opt::Found('j', _) => parsed.json = true,
            Opt::Found('v', _) => parsed.verbose = true,
            _ => return Err(Failure::Usage(id)),
        }
    }
    match getopt.operands() {
        [] => {}
        [word] => parsed.filter.target = Some(parse_id(Some(word), false)?),
        _ => return Err(Failure::Usage(id)),
    }
    Ok(parsed)
}

/// The lines to print for a VM list, and whether any VM passed `-r`
/// (the exit status is 1 when none did, even though the header, or an
/// empty JSON array, prints).
pub fn render(vms: &[VmInfo], args: &StatusArgs, accounts: &dyn Accounts) -> (Vec<String>, bool) {
    let vms: Vec<(VmInfo, Option<VmDetails>)> = vms.iter().map(|vm| (vm.clone(), None)).collect();
    render_with_details(&vms, args, accounts)
}

/// [`render`] for VMs that may come with their details (`-v`): the
/// table's lines are the same, and each VM with details gets its block
/// after the table, or its members in its JSON object.
pub fn render_with_details(
    vms: &[(VmInfo, Option<VmDetails>)],
    args: &StatusArgs,
    accounts: &dyn Accounts,
) -> (Vec<String>, bool) {
    let filter = &args.filter;
    let selected = vms.iter().filter(|(vm, _)| filter.selects(vm));
    let lines = if args.json {
        vec![json::render(
            selected.map(|(vm, details)| (vm, details.as_ref())),
            accounts,
        )]
    } else {
        let selected: Vec<_> = selected.collect();
        let mut lines = vec![header()];
        lines.extend(
            selected
                .iter()
                .map(|(vm, _)| row(vm, &owner_label(vm.owner_uid, vm.owner_gid, accounts))),
        );
        for (vm, details) in &selected {
            if let Some(details) = details {
                lines.extend(verbose::block(vm, details));
            }
        }
        lines
    };
    let vms: Vec<&VmInfo> = vms.iter().map(|(vm, _)| vm).collect();
    let any = vms.iter().any(|vm| filter.passes_running(vm));
    (lines, any)
}

pub fn run(args: &[String], id: CommandId) -> CmdResult {
    let args = parse(args, id)?;
    let (lines, any) = if args.verbose {
        render_with_details(&verbose::list()?, &args, &SystemAccounts)
    } else {
        render(&list_vms()?, &args, &SystemAccounts)
    };
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

    fn table(filter: Filter) -> StatusArgs {
        StatusArgs {
            filter,
            json: false,
            verbose: false,
        }
    }

    #[test]
    fn parsing() {
        assert_eq!(parse(&[], CommandId::Status), Ok(StatusArgs::default()));
        assert_eq!(
            parse(&words("-r web"), CommandId::Show),
            Ok(table(Filter {
                running_only: true,
                target: Some(VmRef::Name("web".into()))
            }))
        );
        assert_eq!(
            parse(&words("-jr 3"), CommandId::Status),
            Ok(StatusArgs {
                filter: Filter {
                    running_only: true,
                    target: Some(VmRef::Id(3))
                },
                json: true,
                verbose: false,
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

        let (lines, any) = render(&vms, &StatusArgs::default(), &NoAccounts);
        assert_eq!(names(&lines), ["a", "b", "c"]);
        assert!(any);

        let running = Filter {
            running_only: true,
            target: None,
        };
        let (lines, any) = render(&vms, &table(running.clone()), &NoAccounts);
        assert_eq!(names(&lines), ["a", "c"]);
        assert!(any);

        let by_id = Filter {
            running_only: false,
            target: Some(VmRef::Id(2)),
        };
        assert_eq!(names(&render(&vms, &table(by_id), &NoAccounts).0), ["b"]);

        // An id that matches nothing still exits 0; id 0 never matches.
        for target in [VmRef::Name("zzz".into()), VmRef::Id(0)] {
            let filter = Filter {
                running_only: false,
                target: Some(target),
            };
            let (lines, any) = render(&vms, &table(filter), &NoAccounts);
            assert_eq!(lines, [header()]);
            assert!(any);
        }

        // Nothing passes -r: header only, exit 1.
        let stopped = [vm(2, "b", false)];
        let (lines, any) = render(&stopped, &table(running.clone()), &NoAccounts);
        assert_eq!(lines, [header()]);
        assert!(!any);
        let (lines, any) = render(&[], &StatusArgs::default(), &NoAccounts);
        assert_eq!(lines.len(), 1);
        assert!(!any);

        // -j: the same selection and exit status, as one JSON line.
        let json = StatusArgs {
            filter: running,
            json: true,
            verbose: false,
        };
        let (lines, any) = render(&vms, &json, &NoAccounts);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("[{\"id\":1,") && lines[0].contains("},{\"id\":3,"));
        assert!(any);
        assert_eq!(
            render(&stopped, &json, &NoAccounts),
            (vec!["[]".to_string()], false)
        );
    }
}
