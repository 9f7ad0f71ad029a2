//! Every vmctl command line the documentation shows is one vmctl
//! accepts: the examples in README.md, docs/*.md and the manual pages
//! under man/ are collected and each is run through the built vmctl,
//! against a fake vmd, in a scratch directory where the files it names
//! exist. An example passes when vmctl got as far as asking the daemon
//! (or, for `create` and `help`, which need none, when it succeeded);
//! a parse error, a usage message or an unknown command fails it.
//!
//! What counts as an example: every command line in a code block (fenced
//! or indented Markdown, `.Bd -literal` or `.Dl` in a page), and every
//! inline code span (Markdown backquotes, `.Ql`) that is a whole command
//! line. A span that only names a command or an option (`vmctl console`,
//! `vmctl stop -w`) is prose, not an example; so is a synopsis, which
//! has `[`, `…`, `|`-alternatives or upper-case placeholders (`KERNEL`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{FakeVmd, TempDir, wait_exit};
use testkit::mdoc::{repo_root, unescape};

/// One vmctl command line found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Example {
    /// The document, relative to the repository.
    source: String,
    /// The arguments after `vmctl`.
    args: Vec<String>,
}

// ----- collecting -----

/// Shell words and operators of a command line: quotes and backslashes
/// resolved; `|`, `&`, `;`, `<`, `>` (and runs of them) are operator
/// tokens of their own.
fn shell_tokens(line: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    let mut word = String::new();
    let mut in_word = false;
    let flush = |word: &mut String, in_word: &mut bool, out: &mut Vec<(bool, String)>| {
        if *in_word {
            out.push((false, std::mem::take(word)));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            '|' | '&' | ';' | '<' | '>' => {
                flush(&mut word, &mut in_word, &mut out);
                let mut op = c.to_string();
                while let Some(&next) = chars.peek() {
                    if !"|&;<>".contains(next) {
                        break;
                    }
                    op.push(next);
                    chars.next();
                }
                out.push((true, op));
            }
            c if c.is_whitespace() => flush(&mut word, &mut in_word, &mut out),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    flush(&mut word, &mut in_word, &mut out);
    out
}

/// Whether a word belongs to a synopsis rather than a command line.
fn is_synopsis_word(word: &str) -> bool {
    let placeholder = word.len() >= 2
        && word.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        && !word.starts_with('-');
    placeholder || word.contains('[') || word.contains('…') || word.contains("...")
}

/// The vmctl invocations in one shell command line: the words after each
/// `vmctl` (or `…/vmctl`) up to the next operator or redirection. A
/// prompt (`$ `, `# `) and a trailing comment are left out.
fn invocations(line: &str) -> Vec<Vec<String>> {
    let line = line.trim_start();
    let line = line
        .strip_prefix("$ ")
        .or_else(|| line.strip_prefix("# "))
        .unwrap_or(line);
    let mut tokens = shell_tokens(line);
    if let Some(comment) = tokens
        .iter()
        .position(|(op, word)| !op && word.starts_with('#'))
    {
        tokens.truncate(comment);
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (op, word) = &tokens[i];
        i += 1;
        if *op || !(word == "vmctl" || word.ends_with("/vmctl")) {
            continue;
        }
        let mut args = Vec::new();
        while let Some((false, word)) = tokens.get(i) {
            args.push(word.clone());
            i += 1;
        }
        out.push(args);
    }
    out
}

/// Whether a code line is part of a drawing (box-drawing characters,
/// arrows) rather than a command line.
fn is_drawing(line: &str) -> bool {
    line.chars().any(|c| ('\u{2500}'..='\u{25ff}').contains(&c))
}

/// A code line's invocations, synopses and drawings left out.
fn code_examples(line: &str) -> Vec<Vec<String>> {
    if is_drawing(line) {
        return Vec::new();
    }
    invocations(line)
        .into_iter()
        .filter(|args| !args.iter().any(|w| is_synopsis_word(w)))
        .collect()
}

/// An inline span's invocations, when it is a whole command line: not a
/// synopsis, and with more than a command word and options (those name a
/// command or an option in prose). A span without `vmctl` at its start
/// is not a command line at all.
fn span_examples(span: &str) -> Vec<Vec<String>> {
    let first = span.split_whitespace().next().unwrap_or("");
    if !(first == "vmctl" || first.ends_with("/vmctl")) || span.contains("/-") {
        return Vec::new();
    }
    let all = invocations(span);
    if all.iter().any(|args| {
        args.iter().any(|w| is_synopsis_word(w))
            || args.len() < 2
            || args.last().is_some_and(|w| w.starts_with('-'))
    }) {
        return Vec::new();
    }
    all
}

/// Joins lines ending in a backslash with the next one.
fn join_continuations(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in lines {
        match line.trim_end().strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    if !pending.is_empty() {
        out.push(pending);
    }
    out
}

/// The examples of a Markdown text.
fn markdown_examples(text: &str) -> Vec<Vec<String>> {
    let mut code = Vec::new();
    let mut prose = String::new();
    let mut fenced = false;
    let mut previous_blank_or_code = true;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            previous_blank_or_code = true;
            continue;
        }
        let indented = line.starts_with("    ") || line.starts_with('\t');
        if fenced || (indented && previous_blank_or_code && !trimmed.is_empty()) {
            code.push(line.to_string());
            previous_blank_or_code = true;
            continue;
        }
        previous_blank_or_code = trimmed.is_empty();
        // Spans may run across a line break within a paragraph.
        prose.push_str(if trimmed.is_empty() { "\n\n" } else { line });
        prose.push(' ');
    }
    let mut out: Vec<Vec<String>> = join_continuations(&code)
        .iter()
        .flat_map(|l| code_examples(l))
        .collect();
    for paragraph in prose.split("\n\n") {
        // Odd pieces between backquotes are the spans.
        for span in paragraph.split('`').skip(1).step_by(2) {
            out.extend(span_examples(span));
        }
    }
    out
}

/// Whether an mdoc word is a macro name (`Ar`, `Fl`, `Ns`, …).
fn is_macro(word: &str) -> bool {
    let mut chars = word.chars();
    word.len() == 2
        && chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
}

/// The examples of a manual page.
fn mdoc_examples(text: &str) -> Vec<Vec<String>> {
    let mut code = Vec::new();
    let mut out = Vec::new();
    let mut literal = false;
    for line in text.lines() {
        if line.starts_with(".Bd") {
            literal = line.contains("-literal") || line.contains("-unfilled");
        } else if line.starts_with(".Ed") {
            literal = false;
        } else if literal && !line.starts_with(".\\\"") {
            code.push(unescape(line));
        } else if let Some(rest) = line.strip_prefix(".Dl ") {
            code.push(unescape(rest));
        } else if let Some(rest) = line.strip_prefix(".Ql ") {
            // `.Ql vmctl stop -a -w ,`: trailing punctuation is mdoc's;
            // a span with other macros in it is a synopsis.
            let words: Vec<&str> = rest.split_whitespace().collect();
            let end = words
                .iter()
                .rposition(|w| !(w.len() == 1 && ".,:;)".contains(*w)))
                .map_or(0, |i| i + 1);
            if words[..end].iter().any(|w| is_macro(w)) {
                continue;
            }
            out.extend(span_examples(&unescape(&words[..end].join(" "))));
        }
    }
    out.extend(
        join_continuations(&code)
            .iter()
            .flat_map(|l| code_examples(l)),
    );
    out
}

/// The documents with examples: README.md, docs/*.md, man/*.
fn documents() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "man"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if dir == "docs" {
                    name.ends_with(".md")
                } else {
                    name.ends_with(".5") || name.ends_with(".8")
                }
            })
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

fn all_examples() -> Vec<Example> {
    let root = repo_root();
    let mut out = Vec::new();
    for path in documents() {
        let text = std::fs::read_to_string(&path).unwrap();
        let source = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let found = if source.ends_with(".md") {
            markdown_examples(&text)
        } else {
            mdoc_examples(&text)
        };
        out.extend(found.into_iter().map(|args| Example {
            source: source.clone(),
            args,
        }));
    }
    out
}

// ----- running -----

/// Which of a command's options take an argument, and which of those
/// arguments are files that must exist (vmctl(8)).
fn options_of(command: &str) -> (&'static str, &'static str) {
    match command {
        "start" => ("Bbdimnprt", "bdr"),
        "create" => ("bis", "bi"),
        _ => ("", ""),
    }
}

/// The full command name of a command word (vmctl takes unambiguous
/// prefixes), for the commands whose files the scratch directory needs.
fn command_name(word: &str) -> &str {
    ["create", "load", "start"]
        .into_iter()
        .find(|name| !word.is_empty() && name.starts_with(word))
        .unwrap_or(word)
}

/// Where a path an example names is, in `scratch`: absolute paths are
/// moved under it, relative ones are taken from it (vmctl runs there).
fn in_scratch(scratch: &Path, path: &str) -> String {
    match path.strip_prefix('/') {
        Some(relative) => scratch.join(relative).to_string_lossy().into_owned(),
        None => path.to_string(),
    }
}

/// Makes an input file an example names: an image for `create`'s `-b`
/// and `-i` (made by vmctl itself), an empty file otherwise.
fn provide(scratch: &Path, path: &str, image: bool) {
    let full = scratch.join(path);
    if full.exists() {
        return;
    }
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    if image {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_vmctl"))
            .args(["create", "-s", "1M"])
            .arg(&full)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "could not make {path}");
    } else {
        std::fs::write(&full, b"").unwrap();
    }
}

/// The arguments with the files they name made in `scratch` (absolute
/// paths moved there); `create`'s output is removed first.
fn prepare(scratch: &Path, args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut words = args.iter();
    // Global options, then the command word.
    for word in words.by_ref() {
        out.push(word.clone());
        if !word.starts_with('-') {
            break;
        }
    }
    let command = command_name(out.last().map_or("", String::as_str)).to_string();
    let (with_argument, files) = options_of(&command);
    let mut operands = Vec::new();
    let mut only_operands = false;
    while let Some(word) = words.next() {
        if only_operands || !word.starts_with('-') || word == "-" {
            operands.push(out.len());
            out.push(word.clone());
            continue;
        }
        if word == "--" {
            only_operands = true;
            out.push(word.clone());
            continue;
        }
        if let Some(long) = word.strip_prefix("--") {
            // --cmdline STRING, --initrd PATH, --user-data FILE,
            // --ssh-key FILE (or --name=value).
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (long, words.next().cloned()),
            };
            let value = value.unwrap_or_default();
            let value = match name {
                "initrd" => {
                    let path = in_scratch(scratch, &value);
                    provide(scratch, &path, false);
                    path
                }
                // vmctl reads these: they must hold what it accepts.
                "user-data" | "ssh-key" => {
                    let path = in_scratch(scratch, &value);
                    let full = scratch.join(&path);
                    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                    let contents = if name == "ssh-key" {
                        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 example\n"
                    } else {
                        "#cloud-config\n"
                    };
                    std::fs::write(&full, contents).unwrap();
                    path
                }
                _ => value,
            };
            out.push(format!("--{name}"));
            out.push(value);
            continue;
        }
        // A cluster of short options; the first that takes an argument
        // takes the rest of the word or the next word.
        let mut cluster = String::from("-");
        let mut chars = word[1..].chars();
        while let Some(c) = chars.next() {
            cluster.push(c);
            if !with_argument.contains(c) {
                continue;
            }
            let rest: String = chars.collect();
            let value = if rest.is_empty() {
                words.next().cloned().unwrap_or_default()
            } else {
                rest
            };
            out.push(std::mem::take(&mut cluster));
            if files.contains(c) {
                // `-d raw:PATH` names the format before the path.
                let (prefix, path) = match value.split_once(':') {
                    Some((format, path)) if format == "raw" || format == "qcow2" => {
                        (format!("{format}:"), path.to_string())
                    }
                    _ => (String::new(), value),
                };
                let path = in_scratch(scratch, &path);
                provide(scratch, &path, command == "create");
                out.push(format!("{prefix}{path}"));
            } else {
                out.push(value);
            }
            break;
        }
        if !cluster.is_empty() && cluster != "-" {
            out.push(cluster);
        }
    }
    match command.as_str() {
        "create" => {
            if let Some(&last) = operands.last() {
                out[last] = in_scratch(scratch, &out[last]);
                let _ = std::fs::remove_file(scratch.join(&out[last]));
                std::fs::create_dir_all(scratch.join(&out[last]).parent().unwrap()).unwrap();
            }
        }
        "load" => {
            for &i in &operands {
                out[i] = in_scratch(scratch, &out[i]);
                provide(scratch, &out[i], false);
            }
        }
        _ => {}
    }
    out
}

/// Runs one example's vmctl; `Err` says why it is not a command line
/// vmctl accepts.
fn check(fake: &FakeVmd, scratch: &Path, example: &[String]) -> Result<(), String> {
    let args = prepare(scratch, example);
    let command = args
        .iter()
        .find(|w| !w.starts_with('-'))
        .map_or("", |w| command_name(w));
    let asked_before = fake.requests().len();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vmctl"))
        .args(&args)
        .current_dir(scratch)
        .env("VMD_SOCKET", &fake.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let accepted = match command {
        // The commands that need no daemon.
        "create" | "help" => status == 0,
        _ => fake.requests().len() > asked_before,
    };
    if accepted {
        Ok(())
    } else {
        Err(format!(
            "vmctl {} (run as vmctl {}): exit {status}: {}",
            example.join(" "),
            args.join(" "),
            stderr.trim_end()
        ))
    }
}

/// A fake vmd that answers nothing: the connection closes once vmctl's
/// request is in.
fn silent_vmd() -> FakeVmd {
    FakeVmd::start(|_, _, _| {})
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

// ----- tests -----

#[test]
fn every_vmctl_example_in_the_documentation_is_accepted() {
    let examples = all_examples();
    // Each kind of document contributes: an extraction that finds nothing
    // would pass vacuously.
    for source in [
        "README.md",
        "docs/direct-boot.md",
        "docs/networking.md",
        "docs/send-stream.md",
        "man/vmctl.8",
    ] {
        assert!(
            examples.iter().any(|e| e.source == source),
            "no vmctl example found in {source}: {examples:#?}"
        );
    }
    let fake = silent_vmd();
    let mut failures = Vec::new();
    let mut source = String::new();
    let mut scratch = TempDir::new();
    for example in &examples {
        // One scratch directory per document: its examples may build on
        // each other (a disk made, then converted).
        if example.source != source {
            source = example.source.clone();
            scratch = TempDir::new();
        }
        if let Err(why) = check(&fake, &scratch.path, &example.args) {
            failures.push(format!("{}: {why}", example.source));
        }
    }
    assert!(
        failures.is_empty(),
        "examples vmctl refuses:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_documented_examples_are_found_whole() {
    let examples = all_examples();
    let has = |source: &str, line: &str| {
        examples
            .iter()
            .any(|e| e.source == source && e.args == words(line))
    };
    // A continued line in a page, a prompt and a quoted word.
    assert!(has(
        "man/vmctl.8",
        "start -m 512M -b /boot/vmlinuz --initrd /boot/initrd.img --cmdline console=ttyS0 tiny"
    ));
    // A pipe, a redirection and a command behind another.
    assert!(has("man/vmctl.8", "status -j"));
    assert!(has("man/vmctl.8", "console web"));
    assert!(has("docs/send-stream.md", "send web"));
    assert!(has("docs/send-stream.md", "receive web"));
    // An inline span naming vmctl by its path, and one spread over two
    // lines of a paragraph.
    assert!(has(
        "docs/networking.md",
        "start -c -B net -L -m 256M -b /usr/share/seabios/bios-256k.bin pxe"
    ));
    assert!(has("docs/networking.md", "stop -f pxe"));
    // Synopses and mentions are not examples.
    assert!(
        !examples
            .iter()
            .any(|e| e.args.iter().any(|w| w == "KERNEL"))
    );
    assert!(!examples.iter().any(|e| e.args == words("console")));
}

#[test]
fn collecting_tells_examples_from_prose() {
    let markdown = "Run `vmctl start -c -m 1G web`, see `vmctl console` and `vmctl stop -w`.\n\
        A span over `vmctl stop\n-f web` lines.\n\n\
        \x20   vmctl start -b KERNEL [-p CPUS] NAME\n\n\
        \x20   $ vmctl status -r | grep web    # a comment\n\
        \x20   vmctl start -m 1G \\\n\
        \x20       -d disk.img vm1\n\n\
        ```\n\
        timeout 30 vmctl console web </dev/null\n\
        ```\n";
    assert_eq!(
        markdown_examples(markdown),
        [
            words("status -r"),
            words("start -m 1G -d disk.img vm1"),
            words("console web"),
            words("start -c -m 1G web"),
            words("stop -f web"),
        ]
    );
    let page = ".Ql vmctl stop -a -w ,\n\
        .Ql vmctl start -n Ar name .\n\
        .Ql vmctl load /etc/other.conf .\n\
        .Bd -literal -offset indent\n\
        # vmctl start -m 512M -b /boot/vmlinuz \\e\n\
        \t--cmdline \"console=ttyS0 quiet\" tiny\n\
        .Ed\n\
        .Dl $ vmctl status\n";
    assert_eq!(
        mdoc_examples(page),
        [
            words("load /etc/other.conf"),
            vec![
                "start".to_string(),
                "-m".into(),
                "512M".into(),
                "-b".into(),
                "/boot/vmlinuz".into(),
                "--cmdline".into(),
                "console=ttyS0 quiet".into(),
                "tiny".into(),
            ],
            words("status"),
        ]
    );
}

/// The check has teeth: command lines vmctl refuses fail it, with the
/// reason vmctl gave; good ones in the same setting pass.
#[test]
fn an_example_vmctl_refuses_fails_the_check() {
    let fake = silent_vmd();
    let scratch = TempDir::new();
    for bad in [
        // A network boot of a new VM with nothing to boot it with.
        "start -B net -L -m 1G web",
        "start -B floppy -L -m 1G web",
        "start -m 1G",
        "stop",
        "stop -x web",
        "frobnicate web",
        "status -r -r -q",
        "create -s lots disk.img",
        "start -m 1G -d disk.img web extra",
    ] {
        let result = check(&fake, &scratch.path, &words(bad));
        assert!(result.is_err(), "`vmctl {bad}` passed the check");
    }
    for good in [
        "start -B net -L -m 1G -d disk.qcow2 web",
        "start -m 512M -b /boot/vmlinuz --initrd /boot/initrd.img tiny",
        "create -s 4.5G disk.img",
        "create -i disk.img disk.qcow2",
        "stop -fa",
        "help",
    ] {
        if let Err(why) = check(&fake, &scratch.path, &words(good)) {
            panic!("`vmctl {good}` failed the check: {why}");
        }
    }
}
