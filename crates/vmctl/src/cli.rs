//! The command table: names, usage strings, and command-word matching by
//! unambiguous prefix (vmctl.md §1.1).

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

/// A command word and the usage text printed after it.
#[derive(Debug, PartialEq, Eq)]
pub struct Command {
    pub id: CommandId,
    pub name: &'static str,
    pub usage: &'static str,
}

/// The table the command word is matched against, in alphabetical order.
pub const COMMANDS: &[Command] = &[
    Command {
        id: CommandId::Console,
        name: "console",
        usage: "id",
    },
    Command {
        id: CommandId::Create,
        name: "create",
        usage: "[-b base | -i disk] [-s size] disk",
    },
    Command {
        id: CommandId::Load,
        name: "load",
        usage: "filename",
    },
    Command {
        id: CommandId::Log,
        name: "log",
        usage: "[brief | verbose]",
    },
    Command {
        id: CommandId::Pause,
        name: "pause",
        usage: "id",
    },
    Command {
        id: CommandId::Receive,
        name: "receive",
        usage: "name",
    },
    Command {
        id: CommandId::Reload,
        name: "reload",
        usage: "",
    },
    Command {
        id: CommandId::Reset,
        name: "reset",
        usage: "[all | switches | vms]",
    },
    Command {
        id: CommandId::Send,
        name: "send",
        usage: "id",
    },
    Command {
        id: CommandId::Show,
        name: "show",
        usage: "[id]",
    },
    Command {
        id: CommandId::Start,
        name: "start",
        usage: "[-cL] [-B device] [-b path] [-d disk] [-i count]\n\
                \t\t[-m size] [-n switch] [-r path] [-t name] id | name",
    },
    Command {
        id: CommandId::Status,
        name: "status",
        usage: "[-r] [id]",
    },
    Command {
        id: CommandId::Stop,
        name: "stop",
        usage: "[-fw] [id | -a]",
    },
    Command {
        id: CommandId::Unpause,
        name: "unpause",
        usage: "id",
    },
    Command {
        id: CommandId::Wait,
        name: "wait",
        usage: "id",
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
