//! vmd's modules depend on each other one way only: main on the daemon,
//! the daemon on its parts (start, transfer, ...), those on the registry,
//! events, network and the other leaves, never back up. A cycle means a
//! lower module reaches into a higher one (a type defined in the wrong
//! place), and every change to either must then consider both. How the
//! graph is read: [`testkit::module_graph`].

use std::path::Path;

use testkit::module_graph::crate_graph;

#[test]
fn vmd_modules_form_no_cycle() {
    let graph = crate_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // The reading sees the dependencies there are.
    graph.assert_sees(&[
        ("", "daemon"),
        ("daemon", "registry"),
        ("registry", "pty"),
        ("vmproc", "events"),
    ]);
    graph.assert_no_cycle();
}
