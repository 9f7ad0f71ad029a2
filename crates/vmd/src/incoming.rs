//! A stream `vmctl receive` passed (docs/send-stream.md), once its header
//! checked out: it waits in the registry for its VM's first launch.

use std::os::fd::OwnedFd;

/// A received stream whose header checked out, waiting for its VM.
pub struct Incoming {
    /// The preamble and header as read.
    pub header_bytes: Vec<u8>,
    /// The rest of the stream.
    pub stream: OwnedFd,
}
