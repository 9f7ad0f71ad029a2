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
//! frames.

pub mod descriptions;
pub mod dhcp;
pub mod groups;
pub mod host_nic;
pub mod local_addr;
pub mod mac_lock;
pub mod rtnl;
pub mod switch;
pub mod tap;
pub mod vrf;
