//! `vmctl help`, `vmctl help command` and `vmctl` without a command word
//! (vmctl(8)), run as the built binary and compared with the manual page:
//! the list names every command the page documents, in its order, one line
//! each; the usage line of each command names every flag of the page's
//! synopsis of it (which src/man_page.rs holds equal to what the parser
//! accepts). Without a command word the reference's usage line comes first,
//! on stderr, with exit status 1, as before.

mod common;

use std::collections::BTreeSet;

use common::{no_daemon, outcome, run_vmctl};
use testkit::mdoc::{Item, Page, flags, usage_flags};

const GLOBAL_USAGE: &str = "usage:\tvmctl [-v] command [arg ...]\n";
const HINT: &str = "Type `vmctl help command` for the options of a command.";

fn run(args: &[&str]) -> (i32, String, String) {
    outcome(&run_vmctl(&no_daemon(), args))
}

/// The command entries of vmctl(8), in the page's order.
fn documented_commands(page: &Page) -> Vec<&Item> {
    page.section("DESCRIPTION")
        .items()
        .filter(|item| item.kind() == Some("Cm"))
        .collect()
}

/// Checks the command list (what follows the usage line) against the
/// manual page.
fn check_command_list(list: &str) {
    let page = Page::read("vmctl.8");
    let documented: Vec<&str> = documented_commands(&page)
        .iter()
        .filter_map(|item| item.name())
        .collect();
    let mut lines = list.lines();
    assert_eq!(lines.next(), Some("commands:"), "{list}");
    let mut listed = Vec::new();
    for line in lines.by_ref().take(documented.len()) {
        let entry = line
            .strip_prefix("  ")
            .unwrap_or_else(|| panic!("command line {line:?}"));
        let (name, summary) = entry
            .split_once(' ')
            .unwrap_or_else(|| panic!("command line {line:?} has no summary"));
        assert!(!summary.trim().is_empty(), "{line:?}");
        listed.push(name);
    }
    assert_eq!(listed, documented, "commands listed vs vmctl(8)");
    assert_eq!(lines.next(), Some(HINT));
    assert_eq!(lines.next(), None, "{list}");
}

#[test]
fn help_lists_the_commands_on_stdout() {
    for args in [&["help"][..], &["h"], &["-v", "help"], &["hel"]] {
        let (status, out, err) = run(args);
        assert_eq!((status, err.as_str()), (0, ""), "vmctl {args:?}");
        let list = out
            .strip_prefix(GLOBAL_USAGE)
            .unwrap_or_else(|| panic!("vmctl {args:?}: {out}"));
        check_command_list(list);
    }
}

#[test]
fn no_command_word_prints_the_usage_then_the_commands() {
    let (_, help, _) = run(&["help"]);
    for args in [&[][..], &["-v"], &["-vv"]] {
        let (status, out, err) = run(args);
        assert_eq!((status, out.as_str()), (1, ""), "vmctl {args:?}");
        // The same text as `help`, on stderr.
        assert_eq!(err, help, "vmctl {args:?}");
        check_command_list(err.strip_prefix(GLOBAL_USAGE).unwrap());
    }
}

#[test]
fn help_command_prints_a_usage_naming_every_documented_flag() {
    let page = Page::read("vmctl.8");
    for item in documented_commands(&page) {
        let name = item.name().unwrap();
        let (status, out, err) = run(&["help", name]);
        assert_eq!((status, err.as_str()), (0, ""), "vmctl help {name}");
        let prefix = format!("usage:\tvmctl [-v] {name} ");
        let usage = out
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("vmctl help {name}: {out:?}"));
        assert_eq!(
            usage_flags(usage),
            flags(&item.head),
            "vmctl help {name}: the flags of its usage vs the synopsis in vmctl(8)"
        );
    }
}

#[test]
fn extensions_are_in_the_usage_lines() {
    // The flags after the command word (the global `-v` left out).
    let usage = |name: &str| {
        let (_, out, _) = run(&["help", name]);
        let prefix = format!("usage:\tvmctl [-v] {name} ");
        usage_flags(out.strip_prefix(&prefix).unwrap())
    };
    let set = |flags: &[&str]| flags.iter().map(|f| f.to_string()).collect::<BTreeSet<_>>();
    assert!(usage("start").is_superset(&set(&["-p", "--cmdline", "--initrd"])));
    assert_eq!(usage("status"), set(&["-j", "-r", "-v"]));
    assert_eq!(usage("show"), set(&["-j", "-r", "-v"]));
    // The usage printed for a mistake is the same line, on stderr.
    let (status, out, err) = run(&["status", "-x"]);
    assert_eq!((status, out.as_str()), (1, ""));
    assert_eq!(err, run(&["help", "status"]).1);
}

#[test]
fn help_errors() {
    let cases: &[(&[&str], String)] = &[
        (
            &["help", "st"],
            format!("ambiguous argument: st\n{GLOBAL_USAGE}"),
        ),
        (
            &["help", "nope"],
            format!("unknown argument: nope\n{GLOBAL_USAGE}"),
        ),
        (
            &["help", "start", "status"],
            "usage:\tvmctl [-v] help [command]\n".into(),
        ),
        (
            &["help", "-x"],
            format!("unknown argument: -x\n{GLOBAL_USAGE}"),
        ),
    ];
    for (args, stderr) in cases {
        assert_eq!(
            run(args),
            (1, String::new(), stderr.clone()),
            "vmctl {args:?}"
        );
    }
}
