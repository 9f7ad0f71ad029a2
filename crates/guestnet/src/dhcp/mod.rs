//! The built-in DHCP/BOOTP responder of local interfaces (docs/machine.md, "The network device").
//!
//! The virtio-net device hands it every frame the guest transmits on a
//! local interface. A DHCP or BOOTP request from the guest is answered at
//! once with a reply frame for the guest's receive queue and goes no
//! further; anything else is not the responder's business and the device
//! sends it to the tap. The responder never touches the host network.
//!
//! [`request`] decides what a frame is; [`reply`] writes the answer;
//! [`request_frame`] plays the guest's client for tests.

pub mod reply;
pub mod request;
pub mod request_frame;

use std::net::Ipv4Addr;

pub use request::{Identity, Kind, NotAnswered, Request};

/// BOOTP ports.
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// BOOTP `op` values.
pub const BOOTREQUEST: u8 = 1;
pub const BOOTREPLY: u8 = 2;
/// `htype` of Ethernet.
pub const HTYPE_ETHERNET: u8 = 1;
/// The fixed part of a BOOTP message, up to the vendor area.
pub const BOOTP_FIXED_LEN: usize = 236;
/// The smallest BOOTP message (RFC 951's 64-byte vendor area).
pub const BOOTP_MIN_LEN: usize = 300;
/// Marks the vendor area as DHCP options (RFC 2131 §3).
pub const MAGIC_COOKIE: &[u8; 4] = &[99, 130, 83, 99];

/// Option codes (RFC 2132).
pub const OPT_PAD: u8 = 0;
pub const OPT_SUBNET_MASK: u8 = 1;
pub const OPT_ROUTER: u8 = 3;
pub const OPT_DNS: u8 = 6;
pub const OPT_HOST_NAME: u8 = 12;
pub const OPT_REQUESTED_ADDRESS: u8 = 50;
pub const OPT_LEASE_TIME: u8 = 51;
pub const OPT_MESSAGE_TYPE: u8 = 53;
pub const OPT_SERVER_ID: u8 = 54;
pub const OPT_END: u8 = 255;

/// What the responder of one local interface leases, and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub vm_mac: [u8; 6],
    /// The tap's MAC.
    pub host_mac: [u8; 6],
    /// The host side of the /31: server, router and DNS server.
    pub host: Ipv4Addr,
    /// The guest side: the leased address.
    pub guest: Ipv4Addr,
    /// Boot device `net`: offer the boot file and the host name.
    pub net_boot: bool,
    pub vm_name: String,
}

impl Lease {
    fn identity(&self) -> Identity {
        Identity {
            vm_mac: self.vm_mac,
            host_mac: self.host_mac,
        }
    }

    /// The host name option's value: the VM's name, offered only for a
    /// network boot and only if it is a host name of two characters or
    /// more.
    pub fn host_name(&self) -> Option<&str> {
        (self.net_boot && self.vm_name.len() > 1 && is_host_name(&self.vm_name))
            .then_some(self.vm_name.as_str())
    }

    /// The reply frame if `frame` is a request this responder answers.
    pub fn respond(&self, frame: &[u8]) -> Option<Vec<u8>> {
        request::parse(frame, &self.identity())
            .ok()
            .map(|request| reply::build(&request, self))
    }
}

/// Dot-separated labels of letters, digits, `-` and `_`, none empty and
/// none starting or ending with `-`, 253 characters at most (RFC 1123 host
/// names, with the underscore many hosts are named with).
pub fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        for good in ["vm1", "web-01", "a.b.c", "db_primary", "x1"] {
            assert!(is_host_name(good), "{good}");
        }
        for bad in [
            "",
            "-vm",
            "vm-",
            "a..b",
            "a b",
            "vm!",
            ".vm",
            &"a".repeat(64),
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_host_name_only_for_net_boot_and_real_names() {
        let mut lease = Lease {
            vm_mac: [0xfe, 0xe1, 0xbb, 0xd1, 0, 1],
            host_mac: [2, 0, 0, 0, 0, 1],
            host: Ipv4Addr::new(100, 64, 1, 2),
            guest: Ipv4Addr::new(100, 64, 1, 3),
            net_boot: false,
            vm_name: "web".into(),
        };
        assert_eq!(lease.host_name(), None);
        lease.net_boot = true;
        assert_eq!(lease.host_name(), Some("web"));
        lease.vm_name = "w".into();
        assert_eq!(lease.host_name(), None, "one character is not enough");
        lease.vm_name = "not valid".into();
        assert_eq!(lease.host_name(), None);
    }
}
