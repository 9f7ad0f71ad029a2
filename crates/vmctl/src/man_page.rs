//! man/vmctl.8 against the command table: the page has an entry for every
//! command and no other, each entry's synopsis and option list name
//! exactly the flags the command parses, every flag the reference lacks
//! is marked as a Linux extension, the console escapes are vmctl's and
//! the examples parse. (testkit's mdoc tests run `mandoc -Tlint`.)

use std::collections::BTreeSet;

use testkit::mdoc::{Item, Page, flags, getopt_flags, usage_flags};

use crate::cli::{COMMANDS, Command, CommandId, GLOBAL_OPTIONS};

const PAGE: &str = "vmctl.8";

fn program_flags(command: &Command) -> BTreeSet<String> {
    let long: Vec<&str> = command.long_options.iter().map(|o| o.name).collect();
    getopt_flags(command.options, &long)
}

fn described_flags<'a>(items: impl Iterator<Item = &'a Item>) -> Vec<(String, &'a Item)> {
    items
        .filter(|item| item.kind() == Some("Fl"))
        .flat_map(|item| flags(&item.head).into_iter().map(move |f| (f, item)))
        .collect()
}

fn commands(page: &Page) -> Vec<&Item> {
    page.section("DESCRIPTION")
        .items()
        .filter(|item| item.kind() == Some("Cm"))
        .collect()
}

#[test]
fn one_entry_per_command() {
    let page = Page::read(PAGE);
    let documented: Vec<&str> = commands(&page).iter().filter_map(|i| i.name()).collect();
    let table: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
    assert_eq!(documented, table, "commands of {PAGE} vs the command table");
}

#[test]
fn each_command_documents_exactly_its_flags() {
    let page = Page::read(PAGE);
    for item in commands(&page) {
        let name = item.name().unwrap();
        let command = COMMANDS.iter().find(|c| c.name == name).unwrap();
        let parsed = program_flags(command);
        assert_eq!(
            flags(&item.head),
            parsed,
            "flags in the synopsis of `{name}` vs what it parses"
        );
        let described = described_flags(item.nested_items());
        let names: BTreeSet<String> = described.iter().map(|(f, _)| f.clone()).collect();
        assert_eq!(
            names, parsed,
            "flags described under `{name}` vs what it parses"
        );
        assert_eq!(names.len(), described.len(), "a flag of `{name}` twice");
        // What the reference's usage text lacks is an extension. `show`
        // is `status` under another name, whose text omits `-r`.
        let reference_flags = |c: &Command| c.reference_usage.map(usage_flags).unwrap_or_default();
        let mut reference = reference_flags(command);
        if command.id == CommandId::Show {
            reference.extend(reference_flags(crate::cli::command(CommandId::Status)));
        }
        for (flag, entry) in &described {
            let marked = entry.body.contains("Linux extension");
            assert_eq!(
                marked,
                !reference.contains(flag),
                "`{name} {flag}`: marked as a Linux extension exactly when the reference lacks it"
            );
        }
    }
}

#[test]
fn commands_the_reference_lacks_are_marked_as_extensions() {
    let page = Page::read(PAGE);
    for item in commands(&page) {
        let name = item.name().unwrap();
        let command = COMMANDS.iter().find(|c| c.name == name).unwrap();
        if command.reference_usage.is_some() {
            continue;
        }
        // The entry's own text says so, not only the entries of its
        // options (whose text is part of its body too).
        let marks = |body: &str| body.matches("Linux extension").count();
        let in_options: usize = item.nested_items().map(|i| marks(&i.body)).sum();
        assert!(
            marks(&item.body) > in_options,
            "`{name}` is a Linux extension and its entry must say so"
        );
    }
}

#[test]
fn global_flags() {
    let page = Page::read(PAGE);
    let global = getopt_flags(GLOBAL_OPTIONS, &[]);
    assert_eq!(page.synopsis_flags(), global);
    let described: BTreeSet<String> = described_flags(page.section("DESCRIPTION").items())
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(described, global);
}

#[test]
fn every_flag_in_the_page_exists() {
    let page = Page::read(PAGE);
    let mut known = getopt_flags(GLOBAL_OPTIONS, &[]);
    for command in COMMANDS {
        known.extend(program_flags(command));
    }
    let unknown: Vec<String> = page.all_flags().difference(&known).cloned().collect();
    assert!(
        unknown.is_empty(),
        "{PAGE} names flags vmctl lacks: {unknown:?}"
    );
}

/// The vmctl command lines in the EXAMPLES of a page: the words after
/// `vmctl`, up to a shell operator, continuation lines joined.
fn example_command_lines(page: &Page) -> Vec<Vec<String>> {
    let mut lines = Vec::new();
    for block in page.literal_blocks("EXAMPLES") {
        let joined = block.replace("\\\n", " ");
        for line in joined.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(start) = words.iter().position(|w| *w == "vmctl") else {
                continue;
            };
            let args: Vec<String> = words[start + 1..]
                .iter()
                .take_while(|w| !w.starts_with(['<', '>', '|']))
                .map(|w| w.trim_matches('"').to_string())
                .collect();
            lines.push(args);
        }
    }
    lines
}

#[test]
fn examples_use_real_commands_and_flags() {
    use crate::cli::{Lookup, lookup};
    use crate::getopt::Opt;

    let page = Page::read(PAGE);
    let examples = example_command_lines(&page);
    assert!(examples.len() >= 8, "{examples:?}");
    for args in examples {
        let (word, rest) = args.split_first().expect("a command word");
        let Lookup::Found(command) = lookup(word) else {
            panic!("example `vmctl {}`: no command {word}", args.join(" "));
        };
        let mut getopt = command.getopt(rest);
        for opt in getopt.by_ref() {
            assert!(
                matches!(opt, Opt::Found(..)),
                "example `vmctl {}`: {opt:?}",
                args.join(" ")
            );
        }
        let operands = getopt.operands().len();
        let allowed = if command.usage.is_empty() { 0 } else { 1 };
        assert!(
            operands <= allowed,
            "example `vmctl {}`: {operands} operands",
            args.join(" ")
        );
    }
}

#[test]
fn every_console_escape_is_documented() {
    use crate::console::escape::{Escape, EscapeReader, Typed};

    // What vmctl does with `~` followed by each byte.
    let mut implemented = BTreeSet::new();
    for byte in 0..=255u8 {
        let mut reader = EscapeReader::new();
        reader.feed(b'~');
        let known = match reader.feed(byte) {
            Typed::Escape(Escape::Ignored) => false,
            Typed::Escape(_) => true,
            Typed::Send(sent) => sent == b'~',
            Typed::Swallowed => false,
        };
        if known {
            let name = match byte {
                0..=31 => format!("~^{}", char::from(byte + 64)),
                _ => format!("~{}", char::from(byte)),
            };
            implemented.insert(name);
        }
    }
    let page = Page::read(PAGE);
    let console = commands(&page)
        .into_iter()
        .find(|item| item.name() == Some("console"))
        .expect("console entry");
    let documented: BTreeSet<String> = console
        .nested_items()
        .flat_map(|item| testkit::mdoc::macro_arguments(&item.head, "Ic"))
        .collect();
    assert_eq!(documented, implemented, "escapes in {PAGE} vs vmctl's");
}
