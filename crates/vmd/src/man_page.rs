//! man/vmd.8 against vmd's option string: the synopsis and the option
//! list name exactly the flags vmd parses, the ones its reference usage
//! lacks are marked as Linux extensions. (testkit's mdoc tests run
//! `mandoc -Tlint`.)

use std::collections::BTreeSet;

use testkit::mdoc::{Page, flags, getopt_flags, usage_flags};

use crate::{OPTIONS, USAGE};

const PAGE: &str = "vmd.8";

#[test]
fn synopsis_and_options_match_the_program() {
    let page = Page::read(PAGE);
    let parsed = getopt_flags(OPTIONS, &[]);
    assert_eq!(page.synopsis_flags(), parsed, "SYNOPSIS of {PAGE}");
    let reference = usage_flags(USAGE);
    let mut described = BTreeSet::new();
    for item in page.section("DESCRIPTION").items() {
        if item.kind() != Some("Fl") {
            continue;
        }
        for flag in flags(&item.head) {
            assert_eq!(
                item.body.contains("Linux extension"),
                !reference.contains(&flag),
                "{flag}: marked as a Linux extension exactly when the usage lacks it"
            );
            assert!(described.insert(flag.clone()), "{flag} described twice");
        }
    }
    assert_eq!(described, parsed, "options described in {PAGE}");
    let unknown: Vec<String> = page.all_flags().difference(&parsed).cloned().collect();
    assert!(
        unknown.is_empty(),
        "{PAGE} names flags vmd lacks: {unknown:?}"
    );
}
