//! Everything the daemon's core reacts to, delivered through one queue so
//! that all state changes happen on one thread, in order.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use proto::control::Request;
use proto::vmchannel::FromVm;
use vmm::snapshot::{Header, StreamError};

use crate::client::{Client, RequestPermit};
use crate::incoming::Incoming;

pub enum Event {
    /// A client sent a request.
    Request {
        client: Arc<Client>,
        request: Request,
        fds: Vec<OwnedFd>,
        /// Held until the core has handled the request.
        permit: RequestPermit,
    },
    /// A client's connection closed.
    ClientGone(u64),
    /// A VM process sent a message; `run` identifies the process.
    FromVm {
        run: u64,
        message: FromVm,
        fds: Vec<OwnedFd>,
    },
    /// The header of a stream `vmctl receive` passed was read and checked
    /// (or not).
    Received {
        client: Arc<Client>,
        name: String,
        result: Result<(Header, Incoming), StreamError>,
    },
    /// A VM process's channel closed; with the reason when the process
    /// sent something that is not a valid message.
    VmChannelClosed { run: u64, malformed: Option<String> },
    /// SIGCHLD: some child may have exited.
    ChildExited,
    /// SIGTERM or SIGINT: terminate every VM and exit.
    Shutdown,
    /// SIGHUP: reload the configuration.
    Reload,
}
