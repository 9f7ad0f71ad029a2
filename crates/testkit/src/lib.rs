//! Test support shared by the crates' tests: tiny guests assembled in the
//! test (real-mode firmware images), and a private vmd per test.

pub mod daemon;
pub mod fixtures;
pub mod guest;
pub mod tmp;
