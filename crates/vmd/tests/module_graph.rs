//! vmd's modules depend on each other one way only: main on the daemon,
//! the daemon on its parts (start, transfer, ...), those on the registry,
//! events, network and the other leaves, never back up. A cycle means a
//! lower module reaches into a higher one (a type defined in the wrong
//! place), and every change to either must then consider both.
//!
//! The graph is read from the sources: a module depends on another when
//! it names it in a path (`use crate::registry::Registry;`,
//! `super::Daemon`, `transfer::describe(..)`). Declaring a child
//! (`mod start;`) is not a use of it: a child that adds `impl Daemon`
//! blocks is part of the daemon, reached by its methods, and depends on
//! its parent through `super::Daemon`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module, as its path below the crate root (`[]` is main.rs).
type Module = Vec<String>;

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
struct Source {
    module: Module,
    code: String,
}

/// Every module of the crate (files and inline `mod x { }` blocks), with
/// the modules each one names.
#[derive(Debug, Default)]
struct Graph {
    modules: BTreeSet<Module>,
    edges: BTreeMap<Module, BTreeSet<Module>>,
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

/// The module a path names: its longest prefix that is a module.
fn resolve(base: &Module, rest: &[String], modules: &BTreeSet<Module>) -> Module {
    let mut target = base.clone();
    for segment in rest {
        let mut longer = target.clone();
        longer.push(segment.clone());
        if !modules.contains(&longer) {
            break;
        }
        target = longer;
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

/// The full paths of a use tree (`a::{b, c::{self, D}}`), from the token
/// after `use` to its `;`.
fn use_paths(toks: &[Token]) -> Vec<Vec<String>> {
    fn walk(toks: &[Token], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        loop {
            match toks.get(*i) {
                Some(Token::Ident(s)) if s == "as" => {
                    *i += 2;
                }
                Some(Token::Ident(s)) => {
                    path.push(s.clone());
                    *i += 1;
                }
                Some(Token::PathSep) => *i += 1,
                Some(Token::Punct('*')) => *i += 1,
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
        out.push(path);
    }
    let mut out = Vec::new();
    let mut i = 0;
    walk(toks, &mut i, Vec::new(), &mut out);
    out
}

fn graph_of(sources: &[Source]) -> Graph {
    let mut graph = Graph::default();
    let all: Vec<(Module, Vec<Token>)> = sources
        .iter()
        .map(|s| (s.module.clone(), tokens(&code_only(&s.code))))
        .collect();
    for (module, toks) in &all {
        graph.modules.insert(module.clone());
        scan_modules(module, toks, &mut graph.modules);
    }
    for (module, toks) in &all {
        let mut stack: Vec<(Module, usize)> = vec![(module.clone(), 0)];
        let mut depth = 0usize;
        let mut i = 0;
        while i < toks.len() {
            let scope = stack.last().expect("root").0.clone();
            let mut add = |target: Module| {
                if target != scope {
                    graph.edges.entry(scope.clone()).or_default().insert(target);
                }
            };
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
                    let end = (i..toks.len())
                        .find(|&k| toks[k] == Token::Punct(';'))
                        .unwrap_or(toks.len());
                    for path in use_paths(&toks[i + 1..end]) {
                        if let Some((first, rest)) = path.split_first()
                            && let Some(base) = path_base(&scope, first, &graph.modules)
                        {
                            add(resolve(&base, rest, &graph.modules));
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
                    if let Some(base) = path_base(&scope, first, &graph.modules) {
                        add(resolve(&base, &rest, &graph.modules));
                    }
                    i = k;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
    graph
}

/// A cycle of the graph, if it has one: the modules along it, the first
/// again at the end.
fn find_cycle(graph: &Graph) -> Option<Vec<Module>> {
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
fn tangles(graph: &Graph) -> Vec<Vec<String>> {
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

fn name(module: &Module) -> String {
    if module.is_empty() {
        "main".to_string()
    } else {
        module.join("::")
    }
}

fn read_sources(dir: &Path, module: &Module, out: &mut Vec<Source>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
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
            if !(module.is_empty() && stem == "main") && stem != "mod" {
                this.push(stem);
            }
            out.push(Source {
                module: this,
                code: std::fs::read_to_string(&path).unwrap(),
            });
        }
    }
}

fn source(module: &str, code: &str) -> Source {
    Source {
        module: module
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        code: code.to_string(),
    }
}

fn m(path: &str) -> Module {
    source(path, "").module
}

#[test]
fn vmd_modules_form_no_cycle() {
    let mut sources = Vec::new();
    read_sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &Vec::new(),
        &mut sources,
    );
    let graph = graph_of(&sources);
    // The reading sees the dependencies there are.
    for (from, to) in [
        ("", "daemon"),
        ("daemon", "registry"),
        ("registry", "pty"),
        ("vmproc", "events"),
    ] {
        assert!(
            graph
                .edges
                .get(&m(from))
                .is_some_and(|e| e.contains(&m(to))),
            "{} -> {} not seen: {:?}",
            name(&m(from)),
            name(&m(to)),
            graph.edges
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        let names: Vec<String> = cycle.iter().map(name).collect();
        panic!(
            "modules depend on each other: {} (all tangles: {:?})",
            names.join(" -> "),
            tangles(&graph)
        );
    }
}

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
    assert!(graph.edges[&m("a::tests")].contains(&m("a")));
}
