//! Host networking for VMs (docs/networking.md).
//!
//! The daemon side (root): [`tap`] devices, [`switch`] bridges and
//! [`vrf`] routing domains, all configured over route netlink
//! ([`rtnl`]), with [`host_nic`] putting one NIC's host side together in
//! vmd's order, the [`descriptions`] vmd writes on them, [`groups`] and the
//! [`local_addr`] plan of local interfaces.
//!
//! The device side (the VM process): the [`dhcp`] responder of local
//! interfaces and the [`mac_lock`] filters, both pure functions over
//! frames, and the [`tap`] descriptor itself. They live in `guestnet`,
//! which has no netlink, so that the VM process does not link it; they
//! are re-exported here so vmd reaches all of networking through `net`.

pub mod descriptions;
pub mod groups;
pub mod host_nic;
pub mod local_addr;
pub mod rtnl;
pub mod switch;
pub mod vrf;

pub use guestnet::{dhcp, mac_lock, tap};
