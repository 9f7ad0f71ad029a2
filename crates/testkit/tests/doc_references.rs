//! Every document the repository's code and docs point to is in the
//! repository: a newcomer who follows a reference finds what it names.
//!
//! Checked in the sources, scripts, manifests, man pages and docs (not in
//! `vendor/` or build output):
//!
//! - every `name.md` named must exist: a path from the repository root or
//!   from the naming file's directory, or a bare name found at the root,
//!   next to the naming file or in `docs/`;
//! - every `docs/...` and `man/...` path must exist, unless it is another
//!   project's (`QEMU's docs/specs/fw_cfg.rst`);
//! - every `crates/...` path the pages in `docs/` name must exist;
//! - a citation of a section, `vmd(8), "Control socket"` or
//!   `docs/machine.md, "PCI devices"` (the style of docs/architecture.md's
//!   readers), must name a heading the man page (`.Sh`/`.Ss`) or the
//!   Markdown file (`#` lines) has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// File kinds that carry references.
const EXTENSIONS: &[&str] = &["rs", "md", "sh", "toml", "5", "8", "conf"];
/// Directories that are not the project's own text.
const SKIPPED_DIRS: &[&str] = &["vendor", "target", "node_modules"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// The files to check, relative to `root`, in a stable order.
fn files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !name.starts_with('.') && !SKIPPED_DIRS.contains(&name.as_str()) {
                    walk(root, &path, out);
                }
            } else if kind.is_file()
                && path
                    .extension()
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_string_lossy().as_ref()))
            {
                out.push(
                    path.strip_prefix(root)
                        .expect("under the root")
                        .to_path_buf(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/')
}

/// The path-like words of `text` (letters, digits, `_-./`), with the
/// punctuation that may end a sentence taken off, and the byte offset of
/// each. URLs are left out: they point outside on purpose.
fn words(text: &str) -> Vec<(usize, &str)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_path_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_path_byte(bytes[i]) {
            i += 1;
        }
        if text[i..].starts_with("://") || text[..start].ends_with("://") {
            // A URL: skip to its end.
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            continue;
        }
        let word = text[start..i].trim_end_matches(['.', '/']);
        out.push((start, word));
    }
    out
}

/// Whether a path follows another project's name (`QEMU's docs/...`).
fn other_project(before: &str) -> bool {
    before.ends_with("'s ")
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// Does the `name.md` named in `file` exist?
fn markdown_exists(root: &Path, file: &Path, name: &str) -> bool {
    let dir = root.join(file.parent().unwrap_or(Path::new("")));
    if name.contains('/') {
        return root.join(name).is_file() || dir.join(name).is_file();
    }
    [root.to_path_buf(), dir, root.join("docs")]
        .iter()
        .any(|d| d.join(name).is_file())
}

/// The headings a document has: `.Sh`/`.Ss` lines of a man page, `#`
/// lines of Markdown.
fn headings(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let is_man = path.extension().is_some_and(|e| e == "5" || e == "8");
    text.lines()
        .filter_map(|line| {
            if is_man {
                line.strip_prefix(".Sh ")
                    .or_else(|| line.strip_prefix(".Ss "))
                    .map(|h| h.trim().trim_matches('"').to_string())
            } else if line.starts_with('#') {
                Some(line.trim_start_matches('#').trim().to_string())
            } else {
                None
            }
        })
        .collect()
}

/// The file a citation's document stands for: a man page by its name and
/// section, or a Markdown file by its path.
fn cited_document(root: &Path, doc: &str) -> Option<PathBuf> {
    let man = match doc {
        "vmd(8)" => Some("man/vmd.8"),
        "vmctl(8)" => Some("man/vmctl.8"),
        "vm.conf(5)" => Some("man/vm.conf.5"),
        _ => None,
    };
    match man {
        Some(path) => Some(root.join(path)),
        None if doc.ends_with(".md") => Some(root.join(doc)),
        None => None,
    }
}

/// `text` with comment leaders at the start of continuation lines taken
/// out, so that a citation broken over two comment lines reads as one.
fn joined(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let trimmed = line.trim_start();
        let body = ["//!", "///", "//", "#"]
            .iter()
            .find_map(|leader| trimmed.strip_prefix(leader))
            .unwrap_or(line);
        out.push_str(body.trim_start());
    }
    out
}

/// The quoted headings cited after each document in `text`:
/// `DOC, "A", "B"` gives (DOC, [A, B]).
fn citations(text: &str) -> Vec<(String, Vec<String>)> {
    let text = joined(text);
    let mut out = Vec::new();
    for doc_end in text.match_indices(", \"").map(|(i, _)| i) {
        let before = &text[..doc_end];
        let glued = |doc: &str| {
            before[..before.len() - doc.len()]
                .bytes()
                .next_back()
                .is_some_and(is_path_byte)
        };
        let man = ["vmd(8)", "vmctl(8)", "vm.conf(5)"]
            .into_iter()
            .find(|m| before.ends_with(m) && !glued(m));
        let doc = match man {
            Some(m) => m,
            None => {
                let start = before
                    .rfind(|c: char| c.is_whitespace() || matches!(c, '(' | '`' | ';'))
                    .map_or(0, |i| i + 1);
                let doc = &before[start..];
                if !doc.ends_with(".md") || doc.len() <= 3 {
                    continue;
                }
                doc
            }
        };
        let mut rest = &text[doc_end..];
        let mut cited = Vec::new();
        while let Some(after) = rest.strip_prefix(", \"") {
            let Some(end) = after.find('"') else {
                break;
            };
            cited.push(after[..end].to_string());
            rest = &after[end + 1..];
        }
        out.push((doc.to_string(), cited));
    }
    out
}

#[test]
fn references_name_documents_that_exist() {
    let root = repo_root();
    let this_file = Path::new(file!())
        .file_name()
        .expect("a file name")
        .to_os_string();
    let mut broken = Vec::new();
    for file in files(&root) {
        if file.file_name() == Some(&this_file) && file.starts_with("crates/testkit") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            continue;
        };
        let in_docs = file.starts_with("docs");
        for (offset, word) in words(&text) {
            let missing = if word.ends_with(".md") && word.len() > 3 {
                !markdown_exists(&root, &file, word)
            } else if word.starts_with("docs/")
                || word.starts_with("man/")
                || (in_docs && word.starts_with("crates/"))
            {
                // A word glued to the path from the front (`/usr/share/man/`)
                // is not a repository path.
                let glued = offset > 0 && is_path_byte(text.as_bytes()[offset - 1]);
                !glued && !other_project(&text[..offset]) && !root.join(word).exists()
            } else {
                false
            };
            if missing {
                broken.push(format!(
                    "{}:{}: {word} does not exist",
                    file.display(),
                    line_of(&text, offset)
                ));
            }
        }
        for (doc, cited) in citations(&text) {
            let Some(path) = cited_document(&root, &doc) else {
                continue;
            };
            if !path.is_file() {
                // Reported above as a missing file.
                continue;
            }
            let have = headings(&path);
            for heading in cited {
                if !have.contains(&heading) {
                    broken.push(format!(
                        "{}: {doc} has no section \"{heading}\"",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "references to documents that are not in the repository \
         (cite man/ or docs/ instead):\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    let words: Vec<&str> = words("see notes.md, docs/x.md. https://a.b/c.md /usr/share/man/x")
        .into_iter()
        .map(|(_, w)| w)
        .collect();
    assert_eq!(words, ["see", "notes.md", "docs/x.md", "/usr/share/man/x"]);
    let cited = citations("(vm.conf(5),\n    /// \"VMs\", \"Instances\"; docs/a.md, \"B\")");
    assert_eq!(
        cited,
        [
            (
                "vm.conf(5)".to_string(),
                vec!["VMs".to_string(), "Instances".to_string()]
            ),
            ("docs/a.md".to_string(), vec!["B".to_string()]),
        ]
    );
}
