//! The command table: names, usage strings, the options each command
//! parses, and command-word matching by unambiguous prefix (vmctl(8), "DESCRIPTION").
//!
//! The option strings here are what the commands hand to getopt, so this
//! table is also what the manual page and the shell completions are
//! checked against.

use crate::getopt::{Getopt, LongOpt};

/// vmctl's own options, before the command word.
pub const GLOBAL_OPTIONS: &str = "v";

/// Keys under which getopt reports `start`'s long options; not short
/// options.
pub const KEY_CMDLINE: char = '\u{1}';
pub const KEY_INITRD: char = '\u{2}';
pub const KEY_USER_DATA: char = '\u{3}';
pub const KEY_SSH_KEY: char = '\u{4}';

/// Every vmctl command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandId {
    Console,
    Create,
    Help,
    Load,
    Log,
    Pause,
    Receive,
    Reload,
    Reset,
    Send,
    Show,
    Start,
    Status,
    Stop,
    Unpause,
    Wait,
}

/// A command word, the usage text printed after it and its options.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    pub id: CommandId,
    pub name: &'static str,
    /// The usage text printed after `vmctl [-v] <name>`: every option the
    /// command accepts, the Linux extensions included.
    pub usage: &'static str,
    /// The reference's usage text, which lacks the Linux extensions;
    /// `None` for a command the reference does not have. What `usage`
    /// has beyond it is marked as an extension in vmctl(8).
    pub reference_usage: Option<&'static str>,
    /// What the command does, in one line of `vmctl help`.
    pub summary: &'static str,
    /// The getopt option string.
    pub options: &'static str,
    pub long_options: &'static [LongOpt],
}

impl Command {
    /// A getopt over the command's arguments with the command's options.
    pub fn getopt<'a>(&'a self, args: &'a [String]) -> Getopt<'a> {
        Getopt::new(args, self.options).with_long_options(self.long_options)
    }
}

const NO_LONG_OPTIONS: &[LongOpt] = &[];

/// `--cmdline STRING` and `--initrd PATH` (docs/direct-boot.md),
/// `--user-data FILE` and `--ssh-key FILE` (docs/cloud-init.md).
const START_LONG_OPTIONS: &[LongOpt] = &[
    LongOpt {
        name: "cmdline",
        has_arg: true,
        key: KEY_CMDLINE,
    },
    LongOpt {
        name: "initrd",
        has_arg: true,
        key: KEY_INITRD,
    },
    LongOpt {
        name: "ssh-key",
        has_arg: true,
        key: KEY_SSH_KEY,
    },
    LongOpt {
        name: "user-data",
        has_arg: true,
        key: KEY_USER_DATA,
    },
];

/// The table the command word is matched against, in alphabetical order.
pub const COMMANDS: &[Command] = &[
    Command {
        id: CommandId::Console,
        name: "console",
        usage: "id",
        reference_usage: Some("id"),
        summary: "attach to the serial console of a running VM",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Create,
        name: "create",
        usage: "[-b base | -i disk] [-s size] disk",
        reference_usage: Some("[-b base | -i disk] [-s size] disk"),
        summary: "make a raw or qcow2 disk image",
        options: "b:i:s:",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Help,
        name: "help",
        usage: "[command]",
        reference_usage: None,
        summary: "list the commands, or print the usage of one",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Load,
        name: "load",
        usage: "filename",
        reference_usage: Some("filename"),
        summary: "read another configuration file",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Log,
        name: "log",
        usage: "[brief | verbose]",
        reference_usage: Some("[brief | verbose]"),
        summary: "set how much vmd logs",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Pause,
        name: "pause",
        usage: "id",
        reference_usage: Some("id"),
        summary: "pause a running VM",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Receive,
        name: "receive",
        usage: "name",
        reference_usage: Some("name"),
        summary: "run a VM whose state send wrote, read from standard input",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Reload,
        name: "reload",
        usage: "",
        reference_usage: Some(""),
        summary: "forget the stopped VMs and read the configuration again",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Reset,
        name: "reset",
        usage: "[all | switches | vms]",
        reference_usage: Some("[all | switches | vms]"),
        summary: "forget VMs, switches or both",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Send,
        name: "send",
        usage: "id",
        reference_usage: Some("id"),
        summary: "write the state of a running VM to standard output",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Show,
        name: "show",
        usage: "[-jrv] [id]",
        reference_usage: Some("[id]"),
        summary: "the same as status",
        options: "jrv",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Start,
        name: "start",
        usage: "[-cL] [-B device] [-b path] [-d disk] [-i count]\n\
                \t\t[-m size] [-n switch] [-p count] [-r path] [-t name]\n\
                \t\t[--cmdline string] [--initrd path] [--ssh-key file]\n\
                \t\t[--user-data file] id | name",
        reference_usage: Some(
            "[-cL] [-B device] [-b path] [-d disk] [-i count]\n\
             \t\t[-m size] [-n switch] [-r path] [-t name] id | name",
        ),
        summary: "start a VM, new or defined in vm.conf",
        options: "B:b:cd:i:Lm:n:p:r:t:",
        long_options: START_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Status,
        name: "status",
        usage: "[-jrv] [id]",
        reference_usage: Some("[-r] [id]"),
        summary: "list the VMs",
        options: "jrv",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Stop,
        name: "stop",
        usage: "[-fw] [id | -a]",
        reference_usage: Some("[-fw] [id | -a]"),
        summary: "stop a running VM, or all of them",
        options: "afw",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Unpause,
        name: "unpause",
        usage: "id",
        reference_usage: Some("id"),
        summary: "let a paused VM run again",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Wait,
        name: "wait",
        usage: "id",
        reference_usage: Some("id"),
        summary: "wait until a running VM stops",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
];

/// The table entry of a command.
pub fn command(id: CommandId) -> &'static Command {
    COMMANDS
        .iter()
        .find(|c| c.id == id)
        .expect("every CommandId has a table entry")
}

/// What a typed command word designates.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(&'static Command),
    /// The word is a prefix of several commands (the empty word included).
    Ambiguous,
    /// The word is a prefix of no command.
    Unknown,
}

/// Matches a command word as a case-sensitive prefix of the command names;
/// exactly one match is required.
pub fn lookup(word: &str) -> Lookup {
    let mut matches = COMMANDS.iter().filter(|c| c.name.starts_with(word));
    match (matches.next(), matches.next()) {
        (Some(command), None) => Lookup::Found(command),
        (Some(_), Some(_)) => Lookup::Ambiguous,
        (None, _) => Lookup::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use testkit::mdoc::usage_flags;

    use super::*;
    use crate::getopt::Opt;

    fn found(word: &str) -> Option<&'static str> {
        match lookup(word) {
            Lookup::Found(c) => Some(c.name),
            _ => None,
        }
    }

    #[test]
    fn unambiguous_prefixes() {
        let cases = [
            ("w", "wait"),
            ("u", "unpause"),
            ("p", "pause"),
            ("cons", "console"),
            ("co", "console"),
            ("cr", "create"),
            ("sto", "stop"),
            ("stat", "status"),
            ("sh", "show"),
            ("star", "start"),
            ("loa", "load"),
            ("log", "log"),
            ("se", "send"),
            ("rec", "receive"),
            ("rel", "reload"),
            ("res", "reset"),
            ("h", "help"),
            ("status", "status"),
            ("console", "console"),
        ];
        for (word, name) in cases {
            assert_eq!(found(word), Some(name), "word {word:?}");
        }
    }

    #[test]
    fn ambiguous_prefixes() {
        for word in ["", "s", "st", "sta", "c", "l", "lo", "r", "re"] {
            assert_eq!(lookup(word), Lookup::Ambiguous, "word {word:?}");
        }
    }

    #[test]
    fn unknown_words() {
        for word in [
            "x", "stopp", "Start", "STATUS", "statuses", "-v", "console2",
        ] {
            assert_eq!(lookup(word), Lookup::Unknown, "word {word:?}");
        }
    }

    #[test]
    fn reference_usage_strings_match_the_spec_table() {
        let expected = [
            ("console", Some("id")),
            ("create", Some("[-b base | -i disk] [-s size] disk")),
            ("help", None),
            ("load", Some("filename")),
            ("log", Some("[brief | verbose]")),
            ("pause", Some("id")),
            ("receive", Some("name")),
            ("reload", Some("")),
            ("reset", Some("[all | switches | vms]")),
            ("send", Some("id")),
            ("show", Some("[id]")),
            (
                "start",
                Some(
                    "[-cL] [-B device] [-b path] [-d disk] [-i count]\n\t\t\
                     [-m size] [-n switch] [-r path] [-t name] id | name",
                ),
            ),
            ("status", Some("[-r] [id]")),
            ("stop", Some("[-fw] [id | -a]")),
            ("unpause", Some("id")),
            ("wait", Some("id")),
        ];
        assert_eq!(COMMANDS.len(), expected.len());
        for (entry, (name, usage)) in COMMANDS.iter().zip(expected) {
            assert_eq!(entry.name, name);
            assert_eq!(entry.reference_usage, usage, "reference usage of {name}");
            assert_eq!(command(entry.id).name, name);
        }
    }

    /// Every flag the command's getopt reports as found: each printable
    /// character tried as `-c arg`, each long option as `--name arg`.
    fn accepted_flags(command: &Command) -> BTreeSet<String> {
        let found = |args: &[String]| matches!(command.getopt(args).next(), Some(Opt::Found(..)));
        let mut accepted = BTreeSet::new();
        for c in ('!'..='~').filter(|&c| c != '-') {
            if found(&[format!("-{c}"), "arg".into()]) {
                accepted.insert(format!("-{c}"));
            }
        }
        for long in command.long_options {
            if found(&[format!("--{}", long.name), "arg".into()]) {
                accepted.insert(format!("--{}", long.name));
            }
        }
        // A long option the table lacks is refused, so the loop above saw
        // every long option there is.
        assert!(!found(&["--no-such-option".into(), "arg".into()]));
        accepted
    }

    #[test]
    fn each_usage_string_lists_every_accepted_flag() {
        for command in COMMANDS {
            assert_eq!(
                usage_flags(command.usage),
                accepted_flags(command),
                "flags in the usage of `{}` vs what its parser accepts",
                command.name
            );
        }
        // The options that go before the command word.
        let global: BTreeSet<String> = ('!'..='~')
            .filter(|&c| c != '-')
            .filter(|c| {
                let args = [format!("-{c}")];
                matches!(
                    Getopt::new(&args, GLOBAL_OPTIONS).next(),
                    Some(Opt::Found(..))
                )
            })
            .map(|c| format!("-{c}"))
            .collect();
        assert_eq!(usage_flags(crate::output::GLOBAL_USAGE), global);
    }

    #[test]
    fn extensions_lengthen_only_their_own_usage() {
        // The usage of a command the reference has is the reference's,
        // with the Linux extensions added, so the reference's flags are
        // all still there.
        for command in COMMANDS {
            if let Some(reference) = command.reference_usage {
                assert!(
                    usage_flags(reference).is_subset(&usage_flags(command.usage)),
                    "usage of `{}` lost a flag of the reference",
                    command.name
                );
            }
        }
    }

    #[test]
    fn summaries_are_one_short_line() {
        for command in COMMANDS {
            assert!(
                !command.summary.is_empty()
                    && !command.summary.contains('\n')
                    && command.summary.len() <= 60,
                "summary of `{}`: {:?}",
                command.name,
                command.summary
            );
        }
    }
}
