//! Which guest frames are DHCP/BOOTP requests the responder answers
//! (docs/machine.md, "The network device"), and what they ask. The only code of the responder that
//! reads guest-controlled bytes, and the fuzz target.
//!
//! Every condition is checked before anything is answered; a frame that
//! fails one is not the responder's business and goes to the tap like any
//! other frame. Nothing here trusts a length field it did not check
//! against the frame.

use std::net::Ipv4Addr;

use etherparse::{EtherType, LinkSlice, NetSlice, SlicedPacket, TransportSlice};

use super::{
    BOOTP_FIXED_LEN, BOOTREQUEST, CLIENT_PORT, HTYPE_ETHERNET, MAGIC_COOKIE, OPT_END,
    OPT_MESSAGE_TYPE, OPT_PAD, OPT_REQUESTED_ADDRESS, SERVER_PORT,
};

/// Smallest frame looked at: an Ethernet header and a minimal BOOTP
/// message's worth of bytes.
pub const MIN_FRAME: usize = 14 + 300;
/// Largest: a full untagged Ethernet frame without FCS.
pub const MAX_FRAME: usize = 1514;

/// Offsets into the BOOTP message.
const OP: usize = 0;
const HTYPE: usize = 1;
const HLEN: usize = 2;
const HOPS: usize = 3;
const XID: std::ops::Range<usize> = 4..8;
const CIADDR: std::ops::Range<usize> = 12..16;
const CHADDR: std::ops::Range<usize> = 28..34;
const FILE: usize = 108;
const COOKIE: std::ops::Range<usize> = 236..240;

/// Who the guest is and who it may address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The VM NIC's MAC: the frame's source and the BOOTP client address.
    pub vm_mac: [u8; 6],
    /// The tap's MAC: a request may be sent to it instead of broadcast.
    pub host_mac: [u8; 6],
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// BOOTP, or DHCP options without a message type.
    Bootp,
    /// A DHCP message of this type (option 53), with the address of
    /// option 50 if it came.
    Dhcp {
        message_type: u8,
        requested: Option<Ipv4Addr>,
    },
}

/// A request the responder answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub xid: u32,
    pub kind: Kind,
}

/// Why a frame is not an answerable request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAnswered {
    FrameSize,
    EthernetDestination,
    EthernetSource,
    NotIpv4Udp,
    Ports,
    NotBootRequest,
    HardwareType,
    ClientAddress,
    /// ciaddr set: a renewal (the lease never ends, so nothing to renew).
    Renewal,
    FileName,
    Hops,
    /// An option runs past the end of the message or has the wrong size.
    BadOptions,
}

/// Looks at one frame the guest transmitted (no virtio header).
pub fn parse(frame: &[u8], who: &Identity) -> Result<Request, NotAnswered> {
    if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
        return Err(NotAnswered::FrameSize);
    }
    let packet = SlicedPacket::from_ethernet(frame).map_err(|_| NotAnswered::NotIpv4Udp)?;
    let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
        return Err(NotAnswered::NotIpv4Udp);
    };
    let dst = eth.destination();
    if dst != [0xff; 6] && dst != who.host_mac {
        return Err(NotAnswered::EthernetDestination);
    }
    if eth.source() != who.vm_mac {
        return Err(NotAnswered::EthernetSource);
    }
    // Untagged IPv4 carrying a whole (unfragmented) UDP datagram.
    let udp = match (&packet.net, &packet.transport) {
        (Some(NetSlice::Ipv4(_)), Some(TransportSlice::Udp(udp)))
            if eth.ether_type() == EtherType::IPV4 && packet.link_exts.is_empty() =>
        {
            udp
        }
        _ => return Err(NotAnswered::NotIpv4Udp),
    };
    if udp.source_port() != CLIENT_PORT || udp.destination_port() != SERVER_PORT {
        return Err(NotAnswered::Ports);
    }
    parse_bootp(udp.payload(), who)
}

/// The BOOTP message itself.
fn parse_bootp(msg: &[u8], who: &Identity) -> Result<Request, NotAnswered> {
    if msg.len() < BOOTP_FIXED_LEN || msg[OP] != BOOTREQUEST {
        return Err(NotAnswered::NotBootRequest);
    }
    if msg[HTYPE] != HTYPE_ETHERNET || msg[HLEN] != 6 {
        return Err(NotAnswered::HardwareType);
    }
    if msg[CHADDR] != who.vm_mac {
        return Err(NotAnswered::ClientAddress);
    }
    if msg[CIADDR] != [0; 4] {
        return Err(NotAnswered::Renewal);
    }
    if msg[FILE] != 0 {
        return Err(NotAnswered::FileName);
    }
    if msg[HOPS] != 0 {
        return Err(NotAnswered::Hops);
    }
    let xid = u32::from_be_bytes(msg[XID].try_into().expect("4 bytes"));
    let kind = match msg.get(COOKIE) {
        Some(cookie) if cookie == MAGIC_COOKIE => parse_options(&msg[COOKIE.end..])?,
        _ => Kind::Bootp,
    };
    Ok(Request { xid, kind })
}

/// Walks the options after the cookie up to the end option (or the end
/// of the message) and keeps the two the responder uses.
fn parse_options(mut options: &[u8]) -> Result<Kind, NotAnswered> {
    let mut message_type = None;
    let mut requested = None;
    while let Some((&code, rest)) = options.split_first() {
        match code {
            OPT_END => break,
            OPT_PAD => {
                options = rest;
                continue;
            }
            _ => {}
        }
        let (&len, rest) = rest.split_first().ok_or(NotAnswered::BadOptions)?;
        let value = rest
            .get(..usize::from(len))
            .ok_or(NotAnswered::BadOptions)?;
        match code {
            OPT_MESSAGE_TYPE => {
                let [t] = value else {
                    return Err(NotAnswered::BadOptions);
                };
                message_type = Some(*t);
            }
            OPT_REQUESTED_ADDRESS => {
                let addr: [u8; 4] = value.try_into().map_err(|_| NotAnswered::BadOptions)?;
                requested = Some(Ipv4Addr::from(addr));
            }
            _ => {}
        }
        options = &rest[usize::from(len)..];
    }
    Ok(match message_type {
        Some(message_type) => Kind::Dhcp {
            message_type,
            requested,
        },
        None => Kind::Bootp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_up_to_the_end_option() {
        let opts = [
            OPT_PAD,
            OPT_MESSAGE_TYPE,
            1,
            3,
            OPT_REQUESTED_ADDRESS,
            4,
            100,
            64,
            1,
            3,
            OPT_END,
            // Garbage after the end option is not looked at.
            0x99,
        ];
        assert_eq!(
            parse_options(&opts),
            Ok(Kind::Dhcp {
                message_type: 3,
                requested: Some(Ipv4Addr::new(100, 64, 1, 3))
            })
        );
    }

    #[test]
    fn options_without_a_message_type_are_bootp() {
        assert_eq!(
            parse_options(&[12, 2, b'h', b'i', OPT_END]),
            Ok(Kind::Bootp)
        );
        // No end option: the message's end ends them.
        assert_eq!(parse_options(&[12, 1, b'h']), Ok(Kind::Bootp));
        assert_eq!(parse_options(&[]), Ok(Kind::Bootp));
    }

    #[test]
    fn malformed_options() {
        // Length past the end.
        assert_eq!(
            parse_options(&[OPT_MESSAGE_TYPE, 5, 1]),
            Err(NotAnswered::BadOptions)
        );
        // Code without a length.
        assert_eq!(parse_options(&[12]), Err(NotAnswered::BadOptions));
        // Known options of the wrong size.
        assert_eq!(
            parse_options(&[OPT_MESSAGE_TYPE, 2, 1, 1, OPT_END]),
            Err(NotAnswered::BadOptions)
        );
        assert_eq!(
            parse_options(&[OPT_REQUESTED_ADDRESS, 3, 1, 2, 3, OPT_END]),
            Err(NotAnswered::BadOptions)
        );
    }
}
