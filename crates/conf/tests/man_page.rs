//! man/vm.conf.5 against the grammar: the words the page marks up as
//! keywords (`Ic`) are exactly the parser's reserved words and extension
//! words and each extension is documented as one. (The page's example is
//! run through `vmd -n` by crates/vmd/tests/examples.rs; testkit's mdoc
//! tests run `mandoc -Tlint`.)

use std::collections::BTreeSet;

use testkit::mdoc::{Item, Page};

const PAGE: &str = "vm.conf.5";

#[test]
fn keywords_are_the_grammars() {
    let page = Page::read(PAGE);
    let marked = page.all_arguments("Ic");
    let grammar: BTreeSet<String> = conf::RESERVED_WORDS
        .iter()
        .chain(conf::EXTENSION_WORDS)
        .map(|w| w.to_string())
        .collect();
    let missing: Vec<&String> = grammar.difference(&marked).collect();
    let unknown: Vec<&String> = marked.difference(&grammar).collect();
    assert!(
        missing.is_empty(),
        "keywords {PAGE} does not mention: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "{PAGE} marks words the grammar lacks: {unknown:?}"
    );
}

fn all_items(items: &mut dyn Iterator<Item = &Item>, out: &mut Vec<(String, String)>) {
    for item in items {
        if item.kind() == Some("Ic") {
            out.push((
                item.name().unwrap_or_default().to_string(),
                item.body.clone(),
            ));
        }
        all_items(&mut item.nested_items(), out);
    }
}

#[test]
fn extensions_are_marked() {
    let page = Page::read(PAGE);
    let mut entries = Vec::new();
    for section in &page.sections {
        all_items(&mut section.items(), &mut entries);
    }
    for word in conf::EXTENSION_WORDS {
        let bodies: Vec<&String> = entries
            .iter()
            .filter(|(name, _)| name == word)
            .map(|(_, body)| body)
            .collect();
        assert!(!bodies.is_empty(), "no entry for `{word}` in {PAGE}");
        for body in bodies {
            assert!(
                body.contains("Linux extension"),
                "the entry for `{word}` is not marked as a Linux extension: {body}"
            );
        }
    }
    // And nothing of the reference is.
    for (name, body) in &entries {
        if conf::RESERVED_WORDS.contains(&name.as_str()) {
            assert!(
                !body.contains("Linux extension"),
                "`{name}` is the reference's, not an extension"
            );
        }
    }
}
