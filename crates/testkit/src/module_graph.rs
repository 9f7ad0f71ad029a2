//! Whether a crate's modules depend on each other one way only, read
//! from its sources. A cycle means a lower module reaches into a higher
//! one (a type defined in the wrong place), and every change to either
//! must then consider both.
//!
//! The graph is read from the sources: a module depends on another when
//! it names it in a path (`use crate::registry::Registry;`,
//! `super::Daemon`, `transfer::describe(..)`). Declaring a child
//! (`mod start;`) is not a use of it: a child that adds `impl Daemon`
//! blocks is part of the daemon, reached by its methods, and depends on
//! its parent through `super::Daemon`. Nor is re-exporting a descendant's
//! item (`pub use device::Net;` in `net`): the module names it for the
//! rest of the crate, its own code does not use it for that, and a path
//! through the re-export (`super::Net`, `crate::net::Net`) names the
//! module the item is in.
//!
//! It reads tokens, not Rust's grammar: enough for the paths of `use`
//! trees and expressions, with comments and literals left out. A test
//! builds the graph ([`crate_graph`], [`Graph::within`] for a part of the
//! crate), checks that it sees edges it knows of ([`Graph::assert_sees`]:
//! a reading that sees nothing finds no cycle either), and asserts
//! [`Graph::assert_no_cycle`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module, as its path below the crate root (`[]` is main.rs or lib.rs).
pub type Module = Vec<String>;

/// Replaces comments, string and character literals with spaces, so that
/// braces and paths are only seen in code. Lifetimes (`'a`) stay.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || c == 'b')
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && raw_string_start(&chars[i..]).is_some()
        {
            let (skip, hashes) = raw_string_start(&chars[i..]).expect("checked");
            for _ in 0..skip {
                out.push(' ');
            }
            i += skip;
            // Up to the closing quote followed by as many hashes.
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime.
            let literal_end = if next == Some('\\') {
                (i + 2..chars.len()).find(|&k| chars[k] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match literal_end {
                Some(end) => {
                    for _ in i..=end {
                        out.push(' ');
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `r"`, `r#"`, `br##"`...: how many characters open it and how many
/// hashes close it.
fn raw_string_start(chars: &[char]) -> Option<(usize, usize)> {
    let mut i = 0;
    if chars.first() == Some(&'b') {
        i += 1;
    }
    if chars.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let hashes = chars[i..].iter().take_while(|&&c| c == '#').count();
    i += hashes;
    (chars.get(i) == Some(&'"')).then_some((i + 1, hashes))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token::PathSep);
            i += 2;
        } else if c == '\'' {
            // A lifetime: its name is no path.
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else {
            if !c.is_whitespace() {
                out.push(Token::Punct(c));
            }
            i += 1;
        }
    }
    out
}

/// One source file: where it sits and its code.
pub struct Source {
    pub module: Module,
    pub code: String,
}

/// Every module of the crate (files and inline `mod x { }` blocks), with
/// the modules each one names.
#[derive(Debug, Default)]
pub struct Graph {
    pub modules: BTreeSet<Module>,
    pub edges: BTreeMap<Module, BTreeSet<Module>>,
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token::Ident(s)) => Some(s),
        _ => None,
    }
}

/// Inline modules of a file (found by `mod name {`), each with the
/// token range of its body, and the declared children (`mod name;`).
fn scan_modules(module: &Module, toks: &[Token], modules: &mut BTreeSet<Module>) {
    let mut stack: Vec<(Module, usize)> = vec![(module.clone(), 0)];
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth -= 1;
                if stack.len() > 1 && stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                }
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some(name), Some(after)) = (ident(toks.get(i + 1)), toks.get(i + 2)) {
                    let mut child = stack.last().expect("root").0.clone();
                    child.push(name.to_string());
                    if *after == Token::Punct('{') {
                        stack.push((child.clone(), depth));
                    }
                    modules.insert(child);
                }
            }
            _ => {}
        }
    }
}

/// What modules re-export (`pub use device::{Net, NetConfig};` in `net`):
/// by the module and the name it gives, the item's full path.
type ReExports = BTreeMap<(Module, String), Vec<String>>;

/// Re-exports followed one after the other at most, so that two that
/// name each other end.
const MAX_HOPS: usize = 8;

/// The module a path names: its longest prefix that is a module, or the
/// module an item a module re-exports is in, when the path goes on
/// through the re-export.
fn resolve(
    base: &Module,
    rest: &[String],
    modules: &BTreeSet<Module>,
    re_exports: &ReExports,
) -> Module {
    let mut target = base.clone();
    let mut rest = rest.to_vec();
    let mut at = 0;
    let mut hops = 0;
    while let Some(segment) = rest.get(at) {
        let mut longer = target.clone();
        longer.push(segment.clone());
        if modules.contains(&longer) {
            target = longer;
            at += 1;
            continue;
        }
        match re_exports.get(&(target.clone(), segment.clone())) {
            Some(item) if hops < MAX_HOPS => {
                hops += 1;
                let mut path = item.clone();
                path.extend_from_slice(&rest[at + 1..]);
                rest = path;
                target = Vec::new();
                at = 0;
            }
            _ => break,
        }
    }
    target
}

/// Where a path that starts with `first` starts from, seen from `scope`:
/// `crate`, `super`, `self`, or a child module of the scope.
fn path_base(scope: &Module, first: &str, modules: &BTreeSet<Module>) -> Option<Module> {
    match first {
        "crate" => Some(Vec::new()),
        "self" => Some(scope.clone()),
        "super" => {
            let mut parent = scope.clone();
            parent.pop()?;
            Some(parent)
        }
        name => {
            let mut child = scope.clone();
            child.push(name.to_string());
            modules.contains(&child).then_some(child)
        }
    }
}

/// One path of a use tree, and the name it gives the item in the module
/// that has the `use` (none for a glob or `as _`).
struct UsePath {
    path: Vec<String>,
    name: Option<String>,
}

/// The full paths of a use tree (`a::{b, c::{self, D as E}}`), from the
/// token after `use` to its `;`.
fn use_paths(toks: &[Token]) -> Vec<UsePath> {
    fn walk(toks: &[Token], i: &mut usize, prefix: Vec<String>, out: &mut Vec<UsePath>) {
        let mut path = prefix;
        let mut name: Option<String> = None;
        let mut named = false;
        loop {
            match toks.get(*i) {
                Some(Token::Ident(s)) if s == "as" => {
                    name = ident(toks.get(*i + 1))
                        .filter(|n| *n != "_")
                        .map(String::from);
                    named = true;
                    *i += 2;
                }
                Some(Token::Ident(s)) => {
                    path.push(s.clone());
                    *i += 1;
                }
                Some(Token::PathSep) => *i += 1,
                Some(Token::Punct('*')) => {
                    named = true;
                    *i += 1;
                }
                Some(Token::Punct('{')) => {
                    *i += 1;
                    loop {
                        walk(toks, i, path.clone(), out);
                        match toks.get(*i) {
                            Some(Token::Punct(',')) => *i += 1,
                            Some(Token::Punct('}')) => {
                                *i += 1;
                                break;
                            }
                            _ => return,
                        }
                        if toks.get(*i) == Some(&Token::Punct('}')) {
                            *i += 1;
                            break;
                        }
                    }
                    return;
                }
                _ => break,
            }
        }
        if !named {
            // `b::{self}` names `b`.
            let last = path.iter().rev().find(|s| *s != "self");
            name = last.cloned();
        }
        out.push(UsePath { path, name });
    }
    let mut out = Vec::new();
    let mut i = 0;
    walk(toks, &mut i, Vec::new(), &mut out);
    out
}

/// Whether the `use` at `toks[at]` is public (`pub`, `pub(crate)`, ...).
fn is_pub_use(toks: &[Token], at: usize) -> bool {
    let Some(before) = at.checked_sub(1) else {
        return false;
    };
    match &toks[before] {
        Token::Ident(kw) => kw == "pub",
        Token::Punct(')') => toks[..before]
            .iter()
            .rposition(|t| *t == Token::Punct('('))
            .and_then(|open| open.checked_sub(1))
            .is_some_and(|kw| toks[kw] == Token::Ident("pub".to_string())),
        _ => false,
    }
}

/// A path a module names: in a `use` (whether public, and the name it
/// gives) or in code.
struct Named {
    scope: Module,
    base: Module,
    rest: Vec<String>,
    /// `pub use`: the name it gives.
    re_export: Option<Option<String>>,
}

/// Every path of the crate's code that starts from a module of the crate,
/// each seen from the module it is in.
fn named_paths(module: &Module, toks: &[Token], modules: &BTreeSet<Module>) -> Vec<Named> {
    let mut out = Vec::new();
    let mut stack: Vec<(Module, usize)> = vec![(module.clone(), 0)];
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let scope = stack.last().expect("root").0.clone();
        match &toks[i] {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth -= 1;
                if stack.len() > 1 && stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                }
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some(name), Some(Token::Punct('{'))) =
                    (ident(toks.get(i + 1)), toks.get(i + 2))
                {
                    let mut child = scope.clone();
                    child.push(name.to_string());
                    stack.push((child, depth));
                }
                i += 2;
                continue;
            }
            Token::Ident(kw) if kw == "use" => {
                let public = is_pub_use(toks, i);
                let end = (i..toks.len())
                    .find(|&k| toks[k] == Token::Punct(';'))
                    .unwrap_or(toks.len());
                for UsePath { path, name } in use_paths(&toks[i + 1..end]) {
                    if let Some((first, rest)) = path.split_first()
                        && let Some(base) = path_base(&scope, first, modules)
                    {
                        out.push(Named {
                            scope: scope.clone(),
                            base,
                            rest: rest.to_vec(),
                            re_export: public.then_some(name),
                        });
                    }
                }
                i = end;
                continue;
            }
            Token::Ident(first)
                if toks.get(i + 1) == Some(&Token::PathSep)
                    && (i == 0 || toks[i - 1] != Token::PathSep) =>
            {
                let mut rest = Vec::new();
                let mut k = i + 1;
                while toks.get(k) == Some(&Token::PathSep) {
                    match ident(toks.get(k + 1)) {
                        Some(segment) => rest.push(segment.to_string()),
                        None => break,
                    }
                    k += 2;
                }
                if let Some(base) = path_base(&scope, first, modules) {
                    out.push(Named {
                        scope,
                        base,
                        rest,
                        re_export: None,
                    });
                }
                i = k;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The modules of `sources` and the modules each one names.
pub fn graph_of(sources: &[Source]) -> Graph {
    let mut graph = Graph::default();
    let all: Vec<(Module, Vec<Token>)> = sources
        .iter()
        .map(|s| (s.module.clone(), tokens(&code_only(&s.code))))
        .collect();
    for (module, toks) in &all {
        graph.modules.insert(module.clone());
        scan_modules(module, toks, &mut graph.modules);
    }
    let named: Vec<Named> = all
        .iter()
        .flat_map(|(module, toks)| named_paths(module, toks, &graph.modules))
        .collect();
    let mut re_exports = ReExports::new();
    for n in &named {
        if let Some(Some(name)) = &n.re_export {
            let mut item = n.base.clone();
            item.extend_from_slice(&n.rest);
            re_exports.insert((n.scope.clone(), name.clone()), item);
        }
    }
    for n in named {
        let target = resolve(&n.base, &n.rest, &graph.modules, &re_exports);
        // A module that re-exports an item of one of its own modules
        // declares its interface, as `mod` does; its code does not use
        // the item for that.
        let declares = n.re_export.is_some() && target.len() > n.scope.len();
        if target != n.scope && !(declares && target.starts_with(&n.scope)) {
            graph.edges.entry(n.scope).or_default().insert(target);
        }
    }
    graph
}

/// A cycle of the graph, if it has one: the modules along it, the first
/// again at the end.
pub fn find_cycle(graph: &Graph) -> Option<Vec<Module>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &Module,
        marks: &mut BTreeMap<Module, Mark>,
        path: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        marks.insert(node.clone(), Mark::Open);
        path.push(node.clone());
        for next in graph.edges.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = path.iter().position(|m| m == next).expect("open");
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(graph, next, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in &graph.modules {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(cycle) = visit(graph, node, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// The groups of modules that all depend on each other, each named by
/// its members: every cycle there is, not only the first one found.
pub fn tangles(graph: &Graph) -> Vec<Vec<String>> {
    let reach = |from: &Module| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(node) = todo.pop() {
            for next in graph.edges.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&Module, BTreeSet<Module>> =
        graph.modules.iter().map(|m| (m, reach(m))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for (module, reached) in &reachable {
        if !reached.contains(*module) {
            continue;
        }
        let group: Vec<String> = reached
            .iter()
            .filter(|other| reachable[other].contains(*module))
            .map(name)
            .collect();
        if !out.contains(&group) {
            out.push(group);
        }
    }
    out
}

/// A module's path as Rust writes it; the root is `crate`.
pub fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

/// The sources of the files under `dir`, whose module is `module`: the
/// crate root (main.rs or lib.rs) when `dir` is a crate's `src` and
/// `module` is empty.
pub fn read_sources(dir: &Path, module: &Module, out: &mut Vec<Source>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        if path.is_dir() {
            let mut inner = module.clone();
            inner.push(stem);
            read_sources(&path, &inner, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut this = module.clone();
            let root = module.is_empty() && (stem == "main" || stem == "lib");
            if !root && stem != "mod" {
                this.push(stem);
            }
            out.push(Source {
                module: this,
                code: std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            });
        }
    }
}

/// The graph of the crate whose sources are under `src`.
pub fn crate_graph(src: &Path) -> Graph {
    let mut sources = Vec::new();
    read_sources(src, &Vec::new(), &mut sources);
    graph_of(&sources)
}

impl Graph {
    /// The modules at or below `top` and the edges among them: a part of
    /// a crate checked on its own, its uses of the rest left out.
    pub fn within(&self, top: &Module) -> Graph {
        let inside = |m: &Module| m.starts_with(top);
        Graph {
            modules: self.modules.iter().filter(|m| inside(m)).cloned().collect(),
            edges: self
                .edges
                .iter()
                .filter(|(from, _)| inside(from))
                .map(|(from, to)| {
                    (
                        from.clone(),
                        to.iter().filter(|m| inside(m)).cloned().collect(),
                    )
                })
                .filter(|(_, to): &(Module, BTreeSet<Module>)| !to.is_empty())
                .collect(),
        }
    }

    pub fn has_edge(&self, from: &Module, to: &Module) -> bool {
        self.edges.get(from).is_some_and(|e| e.contains(to))
    }

    /// Panics unless every one of `edges` (paths as [`module`] reads
    /// them) was seen: a reading that misses uses would miss cycles too.
    pub fn assert_sees(&self, edges: &[(&str, &str)]) {
        for (from, to) in edges {
            assert!(
                self.has_edge(&module(from), &module(to)),
                "{} -> {} not seen: {:?}",
                name(&module(from)),
                name(&module(to)),
                self.edges
            );
        }
    }

    /// Panics with a cycle named, and every group of modules that depend
    /// on each other, if the graph has one.
    pub fn assert_no_cycle(&self) {
        if let Some(cycle) = find_cycle(self) {
            let names: Vec<String> = cycle.iter().map(name).collect();
            panic!(
                "modules depend on each other: {} (all tangles: {:?})",
                names.join(" -> "),
                tangles(self)
            );
        }
    }
}

/// A source for tests of the reading: `code` as the file of `module`
/// (`"a::b"`, `""` for the root).
pub fn source(module: &str, code: &str) -> Source {
    Source {
        module: self::module(module),
        code: code.to_string(),
    }
}

/// The module of a path written `a::b` (`""` for the root).
pub fn module(path: &str) -> Module {
    path.split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_is_found_however_the_modules_are_named() {
        // Through a grouped use, and back through a child's `super::`.
        let graph = graph_of(&[
            source("", "mod a;\nmod b;\nuse crate::a::run;"),
            source("a", "use crate::{b::{self, Thing as T}};\nmod inner;"),
            source("a::inner", "pub fn f() { let _ = super::super::b::g(); }"),
            source("b", "pub fn g() { crate::a::inner::f() }"),
        ]);
        let cycle: Vec<String> = find_cycle(&graph).unwrap().iter().map(name).collect();
        assert!(
            cycle.contains(&"b".to_string()) && cycle.contains(&"a::inner".to_string()),
            "{cycle:?}"
        );

        // A child naming its parent is no cycle by itself; a parent naming
        // the child back is.
        let parent_and_child = |parent: &str| {
            graph_of(&[
                source("", "mod daemon;"),
                source("daemon", &format!("mod start;\n{parent}")),
                source("daemon::start", "use super::Daemon;"),
            ])
        };
        assert_eq!(find_cycle(&parent_and_child("struct Daemon;")), None);
        assert!(find_cycle(&parent_and_child("fn f() { start::open(); }")).is_some());

        // Test modules' `super` is their file; paths in comments, strings
        // and character literals are no uses.
        let graph = graph_of(&[
            source("", "mod a;\nmod b;"),
            source(
                "a",
                "// crate::b::x\nconst S: &str = \"crate::b::x\";\nconst C: char = '{';\n\
                 fn f<'a>(x: &'a str) {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n}",
            ),
            source("b", "use crate::a;"),
        ]);
        assert_eq!(find_cycle(&graph), None, "{:?}", graph.edges);
        assert!(graph.edges[&module("a::tests")].contains(&module("a")));
    }

    #[test]
    fn a_part_is_checked_among_itself() {
        // `a::x` and `b` depend on each other through `b`, outside `a`;
        // within `a`, `x` uses `y` by its full path and in a group, and
        // `y` uses nothing of `a`.
        let graph = graph_of(&[
            source("", "mod a;\nmod b;"),
            source("a", "mod x;\nmod y;"),
            source(
                "a::x",
                "use crate::b::f;\nuse crate::a::{y::{self, Y}, x as _};\n\
                 fn g() { crate::a::y::h(); }",
            ),
            source("a::y", "pub struct Y;\npub fn h() { crate::b::f(); }"),
            source("b", "pub fn f() { let _ = crate::a::x::g; }"),
        ]);
        assert!(find_cycle(&graph).is_some());
        let part = graph.within(&module("a"));
        assert_eq!(find_cycle(&part), None, "{:?}", part.edges);
        assert!(part.has_edge(&module("a::x"), &module("a::y")));
        assert!(!part.modules.contains(&module("b")));
        assert_eq!(part.edges.len(), 1, "{:?}", part.edges);

        // A cycle within the part is still found.
        let graph = graph_of(&[
            source("", "mod a;"),
            source("a", "mod x;\nmod y;"),
            source("a::x", "use super::y::Y;\npub struct X;"),
            source("a::y", "pub struct Y(crate::a::x::X);"),
        ]);
        let cycle: Vec<String> = find_cycle(&graph.within(&module("a")))
            .unwrap()
            .iter()
            .map(name)
            .collect();
        assert_eq!(cycle.len(), 3, "{cycle:?}");
    }

    #[test]
    fn a_re_export_is_the_parents_interface() {
        // `net` names its device's types for the rest of the crate and
        // holds the constants its modules use: no cycle.
        let net = |parent: &str| {
            graph_of(&[
                source("", "mod net;\nmod vm;"),
                source(
                    "net",
                    &format!("mod device;\nmod rx;\n{parent}\npub const RX: usize = 0;"),
                ),
                source(
                    "net::device",
                    "use super::RX;\npub struct Net;\npub struct NetConfig;",
                ),
                source("net::rx", "use super::{RX, Net as Device};"),
                source(
                    "vm",
                    "use crate::net::{self, NetConfig};\nfn f() { net::Net::new(); }",
                ),
            ])
        };
        for parent in [
            "pub use device::{Net, NetConfig};",
            "pub(crate) use self::device::Net;\npub use device::NetConfig;",
        ] {
            let graph = net(parent);
            assert_eq!(find_cycle(&graph), None, "{parent}: {:?}", graph.edges);
            // Paths through the re-export name the module the item is in.
            assert!(graph.has_edge(&module("net::rx"), &module("net::device")));
            assert!(graph.has_edge(&module("vm"), &module("net::device")));
            assert!(graph.has_edge(&module("vm"), &module("net")));
        }
        // A parent whose code uses the item depends on its module.
        assert!(find_cycle(&net("use device::Net;\nfn f() { Net::new(); }")).is_some());
        assert!(find_cycle(&net("fn f() { device::Net::new(); }")).is_some());
        // Re-exporting another module's item is a use of it.
        let graph = graph_of(&[
            source("", "mod a;\nmod b;"),
            source("a", "pub use crate::b::B;\npub struct A;"),
            source("b", "pub struct B(crate::a::A);"),
        ]);
        assert!(find_cycle(&graph).is_some());
        // Re-exports that name each other end.
        let graph = graph_of(&[
            source("", "mod a;\nmod b;"),
            source("a", "pub use crate::b::X;"),
            source("b", "pub use crate::a::X;"),
        ]);
        assert!(graph.has_edge(&module("a"), &module("b")));
    }
}
