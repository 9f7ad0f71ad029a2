//! The reply frame to an answerable request (docs/machine.md, "The network device"): a BOOTREPLY
//! that leases the guest its half of the /31, from a made-up server that
//! lives only inside the device.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use super::request::{Kind, Request};
use super::{
    BOOTP_FIXED_LEN, BOOTP_MIN_LEN, BOOTREPLY, CLIENT_PORT, HTYPE_ETHERNET, Lease, MAGIC_COOKIE,
    OPT_DNS, OPT_END, OPT_HOST_NAME, OPT_LEASE_TIME, OPT_MESSAGE_TYPE, OPT_ROUTER, OPT_SERVER_ID,
    OPT_SUBNET_MASK, SERVER_PORT,
};

/// DHCP message types (RFC 2132 §9.6).
pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// TTL of the reply's IPv4 header; it never leaves the link.
const TTL: u8 = 64;
/// The /31 mask.
const MASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 254);
/// The boot file offered with boot device `net` (autoinstall(8)).
pub const NET_BOOT_FILE: &[u8] = b"auto_install";

/// The DHCP answer to a message of type `asked`: DISCOVER is offered the
/// lease, REQUEST for nothing in particular or for the guest's address is
/// acknowledged, everything else is refused.
pub fn answer_type(asked: u8, requested: Option<Ipv4Addr>, guest: Ipv4Addr) -> u8 {
    match asked {
        DISCOVER => OFFER,
        REQUEST if requested.is_none_or(|addr| addr == guest) => ACK,
        _ => NAK,
    }
}

/// The whole Ethernet frame answering `request`.
pub fn build(request: &Request, lease: &Lease) -> Vec<u8> {
    let message = bootp_reply(request, lease);
    let mut server_mac = lease.vm_mac;
    server_mac[5] = server_mac[5].wrapping_add(1);
    let builder = PacketBuilder::ethernet2(server_mac, lease.vm_mac)
        .ipv4(lease.host.octets(), lease.guest.octets(), TTL)
        .udp(SERVER_PORT, CLIENT_PORT);
    let mut frame = Vec::with_capacity(builder.size(message.len()));
    builder
        .write(&mut frame, &message)
        .expect("a reply of a few hundred bytes fits every header's length field");
    frame
}

/// The BOOTP message: fixed part, cookie, options, padding.
fn bootp_reply(request: &Request, lease: &Lease) -> Vec<u8> {
    let mut m = vec![0u8; BOOTP_FIXED_LEN];
    m[0] = BOOTREPLY;
    m[1] = HTYPE_ETHERNET;
    m[2] = 6;
    m[4..8].copy_from_slice(&request.xid.to_be_bytes());
    m[16..20].copy_from_slice(&lease.guest.octets()); // yiaddr
    m[20..24].copy_from_slice(&lease.host.octets()); // siaddr
    m[28..34].copy_from_slice(&lease.vm_mac); // chaddr
    if lease.net_boot {
        m[108..108 + NET_BOOT_FILE.len()].copy_from_slice(NET_BOOT_FILE);
    }
    m.extend_from_slice(MAGIC_COOKIE);
    let mut option = |code: u8, value: &[u8]| {
        m.push(code);
        m.push(value.len() as u8);
        m.extend_from_slice(value);
    };
    if let Kind::Dhcp {
        message_type,
        requested,
    } = request.kind
    {
        option(
            OPT_MESSAGE_TYPE,
            &[answer_type(message_type, requested, lease.guest)],
        );
        option(OPT_LEASE_TIME, &u32::MAX.to_be_bytes());
        option(OPT_SERVER_ID, &lease.host.octets());
    }
    option(OPT_SUBNET_MASK, &MASK.octets());
    option(OPT_ROUTER, &lease.host.octets());
    option(OPT_DNS, &lease.host.octets());
    if let Some(name) = lease.host_name() {
        option(OPT_HOST_NAME, name.as_bytes());
    }
    m.push(OPT_END);
    if m.len() < BOOTP_MIN_LEN {
        m.resize(BOOTP_MIN_LEN, 0);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_answer() {
        let guest = Ipv4Addr::new(100, 64, 1, 3);
        assert_eq!(answer_type(DISCOVER, None, guest), OFFER);
        assert_eq!(
            answer_type(DISCOVER, Some(Ipv4Addr::LOCALHOST), guest),
            OFFER
        );
        assert_eq!(answer_type(REQUEST, None, guest), ACK);
        assert_eq!(answer_type(REQUEST, Some(guest), guest), ACK);
        assert_eq!(
            answer_type(REQUEST, Some(Ipv4Addr::new(10, 0, 0, 9)), guest),
            NAK
        );
        for other in [4, 7, 8, 0, 200] {
            assert_eq!(answer_type(other, None, guest), NAK, "type {other}");
        }
    }
}
