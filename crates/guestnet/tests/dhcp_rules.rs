//! The responder's rules (docs/machine.md, "The network device"), one at a time: which frames are
//! answered, and every byte of what is answered.

use std::net::Ipv4Addr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use guestnet::dhcp::reply::{ACK, DISCOVER, NAK, OFFER, REQUEST};
use guestnet::dhcp::request::{self, Identity, Kind, NotAnswered};
use guestnet::dhcp::request_frame::RequestFrame;
use guestnet::dhcp::{self, Lease};

const VM_MAC: [u8; 6] = [0xfe, 0xe1, 0xbb, 0xd1, 0x22, 0xff];
const HOST_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const HOST: Ipv4Addr = Ipv4Addr::new(100, 64, 7, 2);
const GUEST: Ipv4Addr = Ipv4Addr::new(100, 64, 7, 3);

fn lease(net_boot: bool) -> Lease {
    Lease {
        vm_mac: VM_MAC,
        host_mac: HOST_MAC,
        host: HOST,
        guest: GUEST,
        net_boot,
        vm_name: "installer".into(),
    }
}

fn who() -> Identity {
    Identity {
        vm_mac: VM_MAC,
        host_mac: HOST_MAC,
    }
}

fn discover() -> RequestFrame {
    RequestFrame::discover(VM_MAC, 0x1234_5678)
}

/// The reply's layers, checked for what every reply has in common;
/// returns the BOOTP message.
fn bootp_of(frame: &[u8]) -> Vec<u8> {
    let packet = SlicedPacket::from_ethernet(frame).expect("reply parses");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = &packet.link else {
        panic!("not Ethernet II");
    };
    assert_eq!(eth.destination(), VM_MAC);
    assert_eq!(
        eth.source(),
        [0xfe, 0xe1, 0xbb, 0xd1, 0x22, 0x00],
        "VM MAC + 1, wrapping"
    );
    let Some(NetSlice::Ipv4(ip)) = &packet.net else {
        panic!("not IPv4");
    };
    assert_eq!(ip.header().source_addr(), HOST);
    assert_eq!(ip.header().destination_addr(), GUEST);
    let Some(TransportSlice::Udp(udp)) = &packet.transport else {
        panic!("not UDP");
    };
    assert_eq!((udp.source_port(), udp.destination_port()), (67, 68));
    let message = udp.payload().to_vec();
    assert!(message.len() >= 300, "padded to the BOOTP minimum");
    assert_eq!(message[0], 2, "BOOTREPLY");
    assert_eq!(&message[1..3], &[1, 6]);
    assert_eq!(&message[4..8], &0x1234_5678u32.to_be_bytes());
    assert_eq!(&message[16..20], &GUEST.octets(), "yiaddr");
    assert_eq!(&message[20..24], &HOST.octets(), "siaddr");
    assert_eq!(&message[28..34], &VM_MAC, "chaddr");
    message
}

/// The options up to and including the end option.
fn options_of(message: &[u8]) -> Vec<u8> {
    assert_eq!(&message[236..240], &[99, 130, 83, 99]);
    let options = &message[240..];
    let mut at = 0;
    while options[at] != 255 {
        at += 2 + usize::from(options[at + 1]);
    }
    let rest = &options[at + 1..];
    assert!(rest.iter().all(|&b| b == 0), "only padding after the end");
    options[..=at].to_vec()
}

fn common_options() -> Vec<u8> {
    let mut o = vec![1, 4, 255, 255, 255, 254, 3, 4];
    o.extend_from_slice(&HOST.octets());
    o.extend_from_slice(&[6, 4]);
    o.extend_from_slice(&HOST.octets());
    o
}

fn dhcp_options(message_type: u8) -> Vec<u8> {
    let mut o = vec![53, 1, message_type, 51, 4, 0xff, 0xff, 0xff, 0xff, 54, 4];
    o.extend_from_slice(&HOST.octets());
    o.extend(common_options());
    o
}

#[test]
fn discover_is_offered_with_exactly_the_specified_options() {
    let reply = lease(false).respond(&discover().frame()).expect("answered");
    let message = bootp_of(&reply);
    assert_eq!(message[108], 0, "no boot file without net boot");
    let mut expected = dhcp_options(OFFER);
    expected.push(255);
    assert_eq!(options_of(&message), expected);
}

#[test]
fn requests_are_acked_or_nacked() {
    let mut request = discover();
    request.message_type = Some(REQUEST);
    let ack =
        |r: &RequestFrame| options_of(&bootp_of(&lease(false).respond(&r.frame()).unwrap()))[2];
    assert_eq!(ack(&request), ACK, "no requested address");
    request.requested = Some(GUEST);
    assert_eq!(ack(&request), ACK, "the guest's own address");
    request.requested = Some(Ipv4Addr::new(192, 168, 1, 9));
    assert_eq!(ack(&request), NAK, "someone else's address");
    request.requested = None;
    for other in [4u8, 7, 8] {
        request.message_type = Some(other);
        assert_eq!(ack(&request), NAK, "message type {other}");
    }
    request.message_type = Some(DISCOVER);
    assert_eq!(ack(&request), OFFER);
}

#[test]
fn plain_bootp_gets_no_dhcp_options() {
    let mut request = discover();
    request.message_type = None;
    let reply = lease(false).respond(&request.frame()).unwrap();
    let mut expected = common_options();
    expected.push(255);
    assert_eq!(options_of(&bootp_of(&reply)), expected);
    // Without the cookie (RFC 951 BOOTP) too.
    request.cookie = false;
    let reply = lease(false).respond(&request.frame()).unwrap();
    assert_eq!(options_of(&bootp_of(&reply)), expected);
}

#[test]
fn net_boot_adds_the_boot_file_and_the_host_name() {
    let reply = lease(true).respond(&discover().frame()).unwrap();
    let message = bootp_of(&reply);
    assert_eq!(&message[108..121], b"auto_install\0");
    let mut expected = dhcp_options(OFFER);
    expected.extend_from_slice(&[12, 9]);
    expected.extend_from_slice(b"installer");
    expected.push(255);
    assert_eq!(options_of(&message), expected);
}

#[test]
fn a_request_to_the_host_mac_is_answered() {
    let mut request = discover();
    request.eth_dst = HOST_MAC;
    assert!(lease(false).respond(&request.frame()).is_some());
}

/// A change that breaks one rule.
type Change = Box<dyn Fn(&mut RequestFrame)>;

/// Every rule, broken one at a time.
#[test]
fn frames_that_break_a_rule_are_not_answered() {
    let cases: Vec<(&str, Change, NotAnswered)> = vec![
        (
            "unicast to someone else",
            Box::new(|r| r.eth_dst = [2, 0, 0, 0, 0, 9]),
            NotAnswered::EthernetDestination,
        ),
        (
            "spoofed source",
            Box::new(|r| r.eth_src = [2, 0, 0, 0, 0, 9]),
            NotAnswered::EthernetSource,
        ),
        (
            "from port 67",
            Box::new(|r| r.src_port = 67),
            NotAnswered::Ports,
        ),
        (
            "to port 68",
            Box::new(|r| r.dst_port = 68),
            NotAnswered::Ports,
        ),
        (
            "a reply",
            Box::new(|r| r.op = 2),
            NotAnswered::NotBootRequest,
        ),
        (
            "token ring",
            Box::new(|r| r.htype = 6),
            NotAnswered::HardwareType,
        ),
        (
            "long hardware address",
            Box::new(|r| r.hlen = 16),
            NotAnswered::HardwareType,
        ),
        (
            "other client",
            Box::new(|r| r.chaddr = [2, 0, 0, 0, 0, 9]),
            NotAnswered::ClientAddress,
        ),
        (
            "renewal",
            Box::new(|r| r.ciaddr = GUEST),
            NotAnswered::Renewal,
        ),
        (
            "file name",
            Box::new(|r| r.file = b"pxelinux.0".to_vec()),
            NotAnswered::FileName,
        ),
        ("relayed", Box::new(|r| r.hops = 1), NotAnswered::Hops),
        (
            "runt",
            Box::new(|r| r.min_len = 240),
            NotAnswered::FrameSize,
        ),
        (
            "jumbo",
            Box::new(|r| r.min_len = 1500),
            NotAnswered::FrameSize,
        ),
        (
            "option past the end",
            Box::new(|r| {
                r.extra_options = vec![12, 200];
            }),
            NotAnswered::BadOptions,
        ),
        (
            "message type of two bytes",
            Box::new(|r| {
                r.message_type = None;
                r.extra_options = vec![53, 2, 1, 1];
            }),
            NotAnswered::BadOptions,
        ),
    ];
    for (what, change, why) in cases {
        let mut request = discover();
        change(&mut request);
        let frame = request.frame();
        assert_eq!(request::parse(&frame, &who()), Err(why), "{what}");
        assert_eq!(lease(false).respond(&frame), None, "{what}");
    }
}

#[test]
fn frames_that_are_not_ipv4_udp_are_not_answered() {
    let good = discover().frame();
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut tcp = good.clone();
    tcp[14 + 9] = 6;
    let mut fragment = good.clone();
    fragment[14 + 6] = 0x20; // more fragments
    let mut vlan = good[..12].to_vec();
    vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    vlan.extend_from_slice(&good[12..]);
    for (what, frame) in [
        ("arp", arp),
        ("tcp", tcp),
        ("fragment", fragment),
        ("vlan", vlan),
    ] {
        assert_eq!(
            request::parse(&frame, &who()),
            Err(NotAnswered::NotIpv4Udp),
            "{what}"
        );
    }
    assert_eq!(
        request::parse(&good[..100], &who()),
        Err(NotAnswered::FrameSize)
    );
    assert_eq!(request::parse(&[], &who()), Err(NotAnswered::FrameSize));
}

#[test]
fn what_a_request_asks_for() {
    let mut request = discover();
    request.message_type = Some(REQUEST);
    request.requested = Some(GUEST);
    request.extra_options = vec![0, 0, 12, 3, b'a', b'b', b'c', 55, 2, 1, 3];
    assert_eq!(
        request::parse(&request.frame(), &who()),
        Ok(dhcp::Request {
            xid: 0x1234_5678,
            kind: Kind::Dhcp {
                message_type: REQUEST,
                requested: Some(GUEST)
            }
        })
    );
}
