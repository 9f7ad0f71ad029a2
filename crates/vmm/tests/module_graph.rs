//! The virtio core's modules depend on each other one way only: a
//! device's handler on its queues' paths, those on the device's shared
//! state and on the core's leaves (the rings, guest memory views), never
//! back up. A cycle means a lower module reaches into a higher one (a
//! type defined in the wrong place), and every change to either must then
//! consider both. Uses of modules outside `devices::virtio` are left out:
//! this checks the subtree among itself. How the graph is read:
//! [`testkit::module_graph`].

use std::path::Path;

use testkit::module_graph::{crate_graph, module};

#[test]
fn virtio_modules_form_no_cycle() {
    let graph = crate_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .within(&module("devices::virtio"));
    // The reading sees the dependencies there are, written each way the
    // subtree writes them: `super::`, `crate::devices::virtio::...`,
    // grouped uses, and through a re-export (`super::Net`).
    let net = |m: &str| format!("devices::virtio::net::{m}");
    graph.assert_sees(&[
        (&net("driver"), &net("device")),
        (&net("handler"), &net("rx")),
        (&net("rx"), &net("frame")),
        (&net("rx"), &net("state")),
        (&net("rx"), "devices::virtio::avail"),
        (&net("persist"), &net("device")),
        ("devices::virtio::blk::handler", "devices::virtio::serve"),
        ("devices::virtio::worker", "devices::virtio::device"),
    ]);
    graph.assert_no_cycle();
}
