//! Reading the project's manual pages (mdoc, in man/) in tests: their
//! sections, tagged lists and the flags and keywords they mark up, so
//! that the pages can be compared with the programs' own option tables;
//! and `mandoc -Tlint` on them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// `man/<name>` in the repository.
pub fn page_path(name: &str) -> PathBuf {
    repo_root().join("man").join(name)
}

/// Macros that may be called inside a line: a flag's arguments end at
/// the next of them.
const CALLABLE: &[&str] = &[
    "Ad", "An", "Ao", "Ac", "Aq", "Ar", "Bo", "Bc", "Bq", "Brq", "Bro", "Brc", "Cm", "Dq", "Do",
    "Dc", "Dv", "Em", "Er", "Ev", "Fa", "Fl", "Fn", "Ic", "Li", "Ms", "Nm", "No", "Ns", "Oc", "Oo",
    "Op", "Pa", "Pc", "Pf", "Po", "Pq", "Ql", "Qq", "Qo", "Qc", "Sq", "So", "Sc", "Sx", "Sy", "Va",
    "Xc", "Xo", "Xr", "Ox", "Ux",
];

fn is_macro(token: &str) -> bool {
    CALLABLE.contains(&token)
}

/// Text as the reader sees it: mdoc escapes resolved.
pub fn unescape(text: &str) -> String {
    text.replace("\\&", "")
        .replace("\\-", "-")
        .replace("\\(dq", "\"")
        .replace("\\e", "\\")
}

/// The words of a macro line (without its leading dot), quotes honoured
/// and escapes resolved.
pub fn tokens(line: &str) -> Vec<String> {
    let line = line.strip_prefix('.').unwrap_or(line);
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return out;
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                word.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(unescape(&word));
    }
}

/// Whether a word is an mdoc delimiter such as `|` or `,`.
fn is_punctuation(word: &str) -> bool {
    word.len() == 1 && "([|)].,:;?!{}".contains(word)
}

/// The arguments each `name` macro takes in `tokens`: the words after it
/// up to the next macro, punctuation left out.
pub fn macro_arguments(tokens: &[String], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for token in tokens {
        if is_macro(token) {
            inside = token == name;
        } else if inside && !is_punctuation(token) {
            out.push(token.clone());
        }
    }
    out
}

/// The flags written with `Fl` in `tokens`, as the program's user types
/// them: `Fl cL` is `-c` and `-L`, `Fl \-initrd` is `--initrd`.
pub fn flags(tokens: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in macro_arguments(tokens, "Fl") {
        match word.strip_prefix('-') {
            Some(long) => {
                out.insert(format!("--{long}"));
            }
            None => out.extend(word.chars().map(|c| format!("-{c}"))),
        }
    }
    out
}

/// The flags of a getopt option string (`"B:b:c"`) and long option names.
pub fn getopt_flags(options: &str, long_options: &[&str]) -> BTreeSet<String> {
    options
        .chars()
        .filter(|&c| c != ':')
        .map(|c| format!("-{c}"))
        .chain(long_options.iter().map(|name| format!("--{name}")))
        .collect()
}

/// The flags in a usage text such as `[-fw] [id | -a]`.
pub fn usage_flags(usage: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in usage.split(|c: char| c.is_whitespace() || "[]|".contains(c)) {
        if let Some(long) = word.strip_prefix("--") {
            out.insert(format!("--{long}"));
        } else if let Some(short) = word.strip_prefix('-') {
            out.extend(short.chars().map(|c| format!("-{c}")));
        }
    }
    out
}

/// One `.It` of a tagged list.
#[derive(Debug, Default)]
pub struct Item {
    /// The words of the head (several lines with `Xo` … `Xc`).
    pub head: Vec<String>,
    /// The text of the body, nested lists included, as one string.
    pub body: String,
    /// Lists nested in the body.
    pub lists: Vec<List>,
}

impl Item {
    /// The first macro of the head, `Xo` skipped (`Cm`, `Fl`, `Ic` …).
    pub fn kind(&self) -> Option<&str> {
        self.head
            .iter()
            .map(String::as_str)
            .find(|t| *t != "It" && *t != "Xo")
    }

    /// The first argument of the head's first macro (`start` of
    /// `.It Cm start`).
    pub fn name(&self) -> Option<&str> {
        let kind = self.kind()?;
        self.head
            .iter()
            .skip_while(|t| t.as_str() != kind)
            .nth(1)
            .map(String::as_str)
    }

    /// The items of the lists nested in this one's body.
    pub fn nested_items(&self) -> impl Iterator<Item = &Item> {
        self.lists.iter().flat_map(|l| l.items.iter())
    }
}

#[derive(Debug, Default)]
pub struct List {
    pub items: Vec<Item>,
}

/// One `.Sh` section.
#[derive(Debug, Default)]
pub struct Section {
    pub name: String,
    /// Every line of the section, as written.
    pub lines: Vec<String>,
    /// The lists at the section's top level.
    pub lists: Vec<List>,
}

impl Section {
    /// The items of the section's top-level lists.
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.lists.iter().flat_map(|l| l.items.iter())
    }
}

/// A manual page, parsed far enough for the checks.
#[derive(Debug)]
pub struct Page {
    pub path: PathBuf,
    pub sections: Vec<Section>,
}

impl Page {
    pub fn read(name: &str) -> Page {
        let path = page_path(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Page::parse(path, &text)
    }

    pub fn parse(path: PathBuf, text: &str) -> Page {
        let mut sections: Vec<Section> = Vec::new();
        // Open lists, innermost last.
        let mut open: Vec<List> = Vec::new();
        // Inside an `.It Xo` head until `.Xc`.
        let mut in_head = false;
        for line in text.lines() {
            if line.starts_with(".\\\"") {
                continue;
            }
            let words = tokens(line);
            let first = words.first().map(String::as_str);
            if line.starts_with('.') && first == Some("Sh") {
                sections.push(Section {
                    name: words[1..].join(" "),
                    ..Section::default()
                });
                continue;
            }
            let Some(section) = sections.last_mut() else {
                continue;
            };
            section.lines.push(line.to_string());
            if in_head {
                let item = open
                    .last_mut()
                    .and_then(|l| l.items.last_mut())
                    .expect("an item whose head continues");
                item.head.extend(words.iter().cloned());
                in_head = !(line.starts_with('.') && first == Some("Xc"));
                continue;
            }
            match (line.starts_with('.'), first) {
                (true, Some("Bl")) => open.push(List::default()),
                (true, Some("El")) => {
                    let list = open.pop().expect(".El without .Bl");
                    match open.last_mut().and_then(|l| l.items.last_mut()) {
                        Some(item) => item.lists.push(list),
                        None => section.lists.push(list),
                    }
                }
                (true, Some("It")) => {
                    let list = open.last_mut().expect(".It outside a list");
                    in_head = words.iter().any(|w| w == "Xo");
                    list.items.push(Item {
                        head: words,
                        ..Item::default()
                    });
                }
                _ => {
                    // Body text belongs to the open item of every level.
                    let text = words.join(" ");
                    for list in open.iter_mut() {
                        if let Some(item) = list.items.last_mut() {
                            item.body.push_str(&text);
                            item.body.push(' ');
                        }
                    }
                }
            }
        }
        assert!(open.is_empty(), "{}: a list is not closed", path.display());
        Page { path, sections }
    }

    pub fn section(&self, name: &str) -> &Section {
        self.sections
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{}: no section {name}", self.path.display()))
    }

    /// Every flag written with `Fl` anywhere in the page.
    pub fn all_flags(&self) -> BTreeSet<String> {
        self.macro_lines().flat_map(|t| flags(&t)).collect()
    }

    /// Every argument of the macro `name` anywhere in the page.
    pub fn all_arguments(&self, name: &str) -> BTreeSet<String> {
        self.macro_lines()
            .flat_map(|t| macro_arguments(&t, name))
            .collect()
    }

    /// The flags in the SYNOPSIS.
    pub fn synopsis_flags(&self) -> BTreeSet<String> {
        self.section("SYNOPSIS")
            .lines
            .iter()
            .flat_map(|l| flags(&tokens(l)))
            .collect()
    }

    /// The literal displays (`.Bd -literal` … `.Ed`) of a section, with
    /// escapes resolved.
    pub fn literal_blocks(&self, section: &str) -> Vec<String> {
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in &self.section(section).lines {
            if line.starts_with(".Bd") && line.contains("-literal") {
                current = Some(String::new());
            } else if line.starts_with(".Ed") {
                blocks.extend(current.take());
            } else if let Some(block) = current.as_mut() {
                block.push_str(&unescape(line));
                block.push('\n');
            }
        }
        blocks
    }

    fn macro_lines(&self) -> impl Iterator<Item = Vec<String>> + '_ {
        self.sections
            .iter()
            .flat_map(|s| s.lines.iter())
            .filter(|l| l.starts_with('.'))
            .map(|l| tokens(l))
    }
}

/// Runs `mandoc -Tlint` (all messages, style ones included) on
/// `man/<name>` from inside man/, so that cross references between the
/// project's pages resolve. Returns the messages; an empty list means the
/// page is clean. Panics if mandoc is missing (scripts/install-deps.sh
/// installs it).
pub fn mandoc_lint(name: &str) -> Vec<String> {
    mandoc_lint_in(&repo_root().join("man"), name)
}

/// [`mandoc_lint`] on the page `name` in `dir`.
pub fn mandoc_lint_in(dir: &Path, name: &str) -> Vec<String> {
    let output = Command::new("mandoc")
        .args(["-Tlint", "-Wstyle", name])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run mandoc ({e}); scripts/install-deps.sh installs it"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let mut messages: Vec<String> = text
        .lines()
        // About the host's own database of installed pages, not this page.
        .filter(|l| !l.contains("outdated mandoc.db"))
        .map(str::to_string)
        .collect();
    if !output.status.success() && messages.is_empty() {
        messages.push(format!("mandoc exited with {}", output.status));
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The project's pages: everything in man/.
    fn pages() -> Vec<String> {
        let mut pages: Vec<String> = std::fs::read_dir(repo_root().join("man"))
            .expect("man/")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        pages
    }

    #[test]
    fn every_page_passes_mandoc_lint() {
        crate::needs!("mandoc");
        let pages = pages();
        assert_eq!(pages, ["vm.conf.5", "vmctl.8", "vmd.8"]);
        for page in pages {
            assert_eq!(mandoc_lint(&page), Vec::<String>::new(), "{page}");
        }
    }

    #[test]
    fn lint_finds_mistakes() {
        crate::needs!("mandoc");
        // The same check on a copy of a page with a mistake reports it.
        let dir = crate::tmp::TempDir::new("lint");
        let text = std::fs::read_to_string(page_path("vmd.8")).unwrap();
        let broken = text.replace(".Sh SEE ALSO", ".Sh SEE ALSO\n.Xr");
        std::fs::write(dir.join("bad.8"), broken).unwrap();
        assert!(!mandoc_lint_in(dir.path(), "bad.8").is_empty());
    }

    #[test]
    fn flags_from_markup() {
        let t = tokens(".Op Fl cL Ar x | Fl a");
        assert_eq!(
            flags(&t),
            ["-L", "-a", "-c"].map(String::from).into_iter().collect()
        );
        let t = tokens(r".Op Fl \-cmdline Ar string");
        assert_eq!(flags(&t), ["--cmdline".to_string()].into_iter().collect());
        let t = tokens(r#".It Ic ~.\& No or Ic "~^D""#);
        assert_eq!(macro_arguments(&t, "Ic"), ["~.", "~^D"]);
        assert_eq!(
            getopt_flags("B:b:c", &["initrd"]),
            ["--initrd", "-B", "-b", "-c"]
                .map(String::from)
                .into_iter()
                .collect()
        );
        assert_eq!(
            usage_flags("[-fw] [id | -a]"),
            ["-a", "-f", "-w"].map(String::from).into_iter().collect()
        );
    }

    #[test]
    fn lists_and_items() {
        let page = Page::parse(
            PathBuf::from("t.8"),
            ".Sh DESCRIPTION\n.Bl -tag\n.It Xo Cm start\n.Op Fl c\n.Xc\nStarts.\n\
             .Bl -tag\n.It Fl c\nConsole (Linux extension).\n.El\n.It Cm stop\nStops.\n.El\n",
        );
        let items: Vec<&Item> = page.section("DESCRIPTION").items().collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].name(), Some("start"));
        assert_eq!(items[0].kind(), Some("Cm"));
        assert_eq!(flags(&items[0].head).len(), 1);
        let nested: Vec<&Item> = items[0].nested_items().collect();
        assert_eq!(nested[0].name(), Some("c"));
        assert!(nested[0].body.contains("Linux extension"));
        assert!(items[0].body.contains("Starts."));
        assert_eq!(items[1].name(), Some("stop"));
    }
}
