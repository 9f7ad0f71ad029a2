//! Test support shared by the crates' tests: tiny guests assembled in the
//! test (real-mode firmware images), GRUB boot disks and CDs, ISO images,
//! a private vmd per test, network namespaces, a real DHCP client, what a
//! test needs from the machine (`needs!`: root, /dev/kvm, programs), and
//! the graph of a crate's modules, for tests that they form no cycle.

pub mod daemon;
pub mod fixtures;
pub mod grub;
pub mod guest;
pub mod iso;
pub mod mdoc;
pub mod module_graph;
pub mod needs;
pub mod netns;
pub mod tmp;
pub mod udhcpc;
pub mod users;
