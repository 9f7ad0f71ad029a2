//! Test support shared by the crates' tests: tiny guests assembled in the
//! test (real-mode firmware images), GRUB boot disks and CDs, ISO images,
//! and a private vmd per test.

pub mod daemon;
pub mod fixtures;
pub mod grub;
pub mod guest;
pub mod iso;
pub mod mdoc;
pub mod tmp;
