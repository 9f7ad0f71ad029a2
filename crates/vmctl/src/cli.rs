//! The command table: names, usage strings, the options each command
//! parses, and command-word matching by unambiguous prefix (vmctl.md §1.1).
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

/// Every vmctl command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandId {
    Console,
    Create,
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
    /// The reference's usage text; options the reference lacks (the Linux
    /// extensions) are in `options` but not here.
    pub usage: &'static str,
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

/// `--cmdline STRING` and `--initrd PATH` (interface.md).
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
];

/// The table the command word is matched against, in alphabetical order.
pub const COMMANDS: &[Command] = &[
    Command {
        id: CommandId::Console,
        name: "console",
        usage: "id",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Create,
        name: "create",
        usage: "[-b base | -i disk] [-s size] disk",
        options: "b:i:s:",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Load,
        name: "load",
        usage: "filename",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Log,
        name: "log",
        usage: "[brief | verbose]",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Pause,
        name: "pause",
        usage: "id",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Receive,
        name: "receive",
        usage: "name",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Reload,
        name: "reload",
        usage: "",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Reset,
        name: "reset",
        usage: "[all | switches | vms]",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Send,
        name: "send",
        usage: "id",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Show,
        name: "show",
        usage: "[id]",
        options: "jr",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Start,
        name: "start",
        usage: "[-cL] [-B device] [-b path] [-d disk] [-i count]\n\
                \t\t[-m size] [-n switch] [-r path] [-t name] id | name",
        options: "B:b:cd:i:Lm:n:p:r:t:",
        long_options: START_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Status,
        name: "status",
        usage: "[-r] [id]",
        options: "jr",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Stop,
        name: "stop",
        usage: "[-fw] [id | -a]",
        options: "afw",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Unpause,
        name: "unpause",
        usage: "id",
        options: "",
        long_options: NO_LONG_OPTIONS,
    },
    Command {
        id: CommandId::Wait,
        name: "wait",
        usage: "id",
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
    use super::*;

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
    fn usage_strings_match_the_spec_table() {
        let expected = [
            ("console", "id"),
            ("create", "[-b base | -i disk] [-s size] disk"),
            ("load", "filename"),
            ("log", "[brief | verbose]"),
            ("pause", "id"),
            ("receive", "name"),
            ("reload", ""),
            ("reset", "[all | switches | vms]"),
            ("send", "id"),
            ("show", "[id]"),
            (
                "start",
                "[-cL] [-B device] [-b path] [-d disk] [-i count]\n\t\t\
                 [-m size] [-n switch] [-r path] [-t name] id | name",
            ),
            ("status", "[-r] [id]"),
            ("stop", "[-fw] [id | -a]"),
            ("unpause", "id"),
            ("wait", "id"),
        ];
        assert_eq!(COMMANDS.len(), expected.len());
        for (entry, (name, usage)) in COMMANDS.iter().zip(expected) {
            assert_eq!(entry.name, name);
            assert_eq!(entry.usage, usage, "usage of {name}");
            assert_eq!(command(entry.id).name, name);
        }
    }
}
