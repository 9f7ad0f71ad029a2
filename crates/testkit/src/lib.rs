//! Test support shared by the crates' tests: tiny guests assembled in the
//! test (real-mode firmware images), GRUB boot disks and CDs, ISO images,
//! a private vmd per test, network namespaces, a real DHCP client, and what
//! a test needs from the machine (`needs!`: root, /dev/kvm, programs).

pub mod daemon;
pub mod fixtures;
pub mod grub;
pub mod guest;
pub mod iso;
pub mod mdoc;
pub mod needs;
pub mod netns;
pub mod tmp;
pub mod udhcpc;
pub mod users;
