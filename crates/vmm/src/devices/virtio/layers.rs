//! The virtio modules keep the layers the parent module lists: each uses
//! only modules of layers below its own, so no two of them use each other,
//! directly or around a longer loop.
//!
//! The check reads the sources: every `use` of a virtio module (through
//! `super::` or `crate::devices::virtio::`, braces expanded) and every
//! path through `crate::devices::virtio::` in the code, outside comments
//! and the `#[cfg(test)]` tests module at the end of a file (tests may reach
//! anywhere; they are not part of the program whose data flow this is).
//! A device directory (`blk/`, ...) counts as one module; its files among
//! themselves are the device's own business.

use std::collections::BTreeSet;
use std::path::Path;

/// The layers, bottom first; the parent module's comment says why each
/// module is where it is.
const LAYERS: &[&[&str]] = &[
    &["device"],
    &["guest", "used"],
    &["queue"],
    &["avail", "buffers"],
    &["serve", "worker", "driver"],
    &["pci"],
    &["blk", "net", "scsi", "rng"],
    &["mod"],
];

/// The test itself, which names paths in strings only.
const NOT_CHECKED: &[&str] = &["layers"];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The virtio module a source file belongs to, from its path below
/// `virtio/`: `queue.rs` is `queue`, `mod.rs` is `mod`, `blk/handler.rs`
/// is `blk`.
fn module_of(path: &str) -> String {
    match path.split_once('/') {
        Some((dir, _)) => dir.to_string(),
        None => path.trim_end_matches(".rs").to_string(),
    }
}

/// The code of a file as the check sees it: comments and the test part
/// at the end left out.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        // The tests module, which ends the file by custom.
        if line.starts_with("#[cfg(test)]") && lines.peek().is_some_and(|l| l.starts_with("mod ")) {
            break;
        }
        let line = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The first name of each path a `use` tree names: `{a::b, c}` gives a
/// and c, `x::y` gives x.
fn first_names(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(inner) = tree.strip_prefix('{') else {
        let name: String = tree
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '*')
            .collect();
        return vec![name];
    };
    let inner = inner.strip_suffix('}').unwrap_or(inner);
    let mut names = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (at, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.extend(first_names(&inner[start..at]));
                start = at + 1;
            }
            _ => {}
        }
    }
    names.extend(first_names(&inner[start..]));
    names.retain(|n| !n.is_empty());
    names
}

/// The virtio modules the file `path` (below `virtio/`) uses. A name that
/// is not a module (an item the parent module names, `self`, `*`) is a
/// use of the parent module.
fn used_modules(path: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let depth = path.matches('/').count();
    let is_mod = path == "mod.rs";
    // Prefixes that name the virtio module from this file.
    let mut prefixes = vec!["crate::devices::virtio::".to_string()];
    if is_mod {
        prefixes.push("self::".to_string());
    } else if path.ends_with("/mod.rs") || depth == 0 {
        prefixes.push("super::".to_string());
    } else {
        prefixes.push("super::super::".to_string());
    }
    let code = code(text);
    let mut trees = Vec::new();
    for statement in code.split(';') {
        // The `use` keyword: at the start of the statement or after a
        // space, brace or attribute, not the end of a word (`pause `).
        let Some((at, _)) = statement.match_indices("use ").find(|(at, _)| {
            statement[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| c.is_whitespace() || c == '{' || c == ']')
        }) else {
            continue;
        };
        let path = statement[at + 4..].trim();
        if let Some(rest) = prefixes.iter().find_map(|p| path.strip_prefix(p.as_str())) {
            trees.push(rest.to_string());
        } else if is_mod && !path.starts_with("crate::") && !path.starts_with("std::") {
            // `pub use device::...` in the parent names a child.
            trees.push(path.to_string());
        }
    }
    // Paths in the code itself.
    for (at, _) in code.match_indices("crate::devices::virtio::") {
        trees.push(code[at + "crate::devices::virtio::".len()..].to_string());
    }
    let mut used = BTreeSet::new();
    for tree in trees {
        for name in first_names(&tree) {
            if modules.contains(&name) {
                used.insert(name);
            } else {
                used.insert("mod".to_string());
            }
        }
    }
    used.remove(&module_of(path));
    used
}

/// Every use of a module that is not in a lower layer, as
/// "user -> used", given the files below `virtio/` as (path, text).
fn violations(files: &[(String, String)]) -> Vec<String> {
    let modules: BTreeSet<String> = files.iter().map(|(path, _)| module_of(path)).collect();
    let mut found = Vec::new();
    for (path, text) in files {
        let user = module_of(path);
        if NOT_CHECKED.contains(&user.as_str()) {
            continue;
        }
        let Some(user_layer) = layer(&user) else {
            found.push(format!("{path}: module {user} is in no layer"));
            continue;
        };
        for used in used_modules(path, text, &modules) {
            match layer(&used) {
                Some(l) if l < user_layer => {}
                _ => found.push(format!("{path}: {user} -> {used}")),
            }
        }
    }
    found.sort();
    found
}

fn sources(dir: &Path, below: &str, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for entry in entries {
        let name = entry.file_name().unwrap().to_str().unwrap();
        let path = format!("{below}{name}");
        if entry.is_dir() {
            sources(&entry, &format!("{path}/"), out);
        } else if name.ends_with(".rs") {
            out.push((path, std::fs::read_to_string(&entry).unwrap()));
        }
    }
}

#[test]
fn the_modules_keep_their_layers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/devices/virtio");
    let mut files = Vec::new();
    sources(&dir, "", &mut files);
    assert!(files.len() > 20, "read {} files", files.len());
    let found = violations(&files);
    assert!(
        found.is_empty(),
        "uses against the layers:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_use_upwards_or_of_the_parent_is_found() {
    let file = |path: &str, text: &str| (path.to_string(), text.to_string());
    let files = vec![
        file(
            "mod.rs",
            "pub mod queue;\npub use device::{Interrupt, DeviceBroken};\n",
        ),
        file("device.rs", "pub trait Interrupt {}\n"),
        // The walk using the serving loop above it: the cycle this
        // layering removed.
        file(
            "queue.rs",
            "use super::serve::Served;\nuse super::{device::Interrupt, guest};\n",
        ),
        file("guest.rs", "// use super::queue::Chain; (a comment)\n"),
        file(
            "serve.rs",
            "use super::queue::{self, Chain};\nfn f() { crate::devices::virtio::blk::x(); }\n",
        ),
        file(
            "used.rs",
            "use super::DeviceBroken;\n#[cfg(test)]\nmod tests { use super::super::serve; }\n",
        ),
        file(
            "blk/handler.rs",
            "use super::request;\nuse crate::devices::virtio::{\n    serve::Requests,\n    queue::Chain,\n};\n",
        ),
        file("blk/mod.rs", "use super::worker::Flusher;\n"),
        file(
            "worker.rs",
            "use crate::devices::virtio::device::QueueHandler;\n",
        ),
        file("extra.rs", ""),
    ];
    assert_eq!(
        violations(&files),
        [
            "extra.rs: module extra is in no layer",
            "queue.rs: queue -> serve",
            "serve.rs: serve -> blk",
            "used.rs: used -> mod",
        ]
    );
}
