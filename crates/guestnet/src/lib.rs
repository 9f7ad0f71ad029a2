//! The part of networking the VM process needs (docs/networking.md,
//! docs/machine.md "The network device"), kept apart from the host-side
//! `net` crate so that the VM process links no netlink code.
//!
//! * [`tap`]: the tap descriptor. vmd creates it; the VM process reads and
//!   writes frames on it and sets its offloads.
//! * [`dhcp`]: the responder of local interfaces, a pure function from a
//!   frame the guest sent to the reply the guest receives.
//! * [`mac_lock`]: the `locked lladdr` filters, pure functions over frames.

pub mod dhcp;
pub mod mac_lock;
pub mod tap;
