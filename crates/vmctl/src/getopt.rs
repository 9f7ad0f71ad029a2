//! Option parsing for the commands: the shared getopt crate.

pub use getopt::*;
