//! DHCP/BOOTP request frames as a guest's client sends them, every field
//! settable, so tests, the fuzz seeds and the device tests can play well
//! behaved and odd clients alike.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use super::{
    BOOTP_FIXED_LEN, BOOTP_MIN_LEN, BOOTREQUEST, CLIENT_PORT, HTYPE_ETHERNET, MAGIC_COOKIE,
    OPT_END, OPT_MESSAGE_TYPE, OPT_REQUESTED_ADDRESS, SERVER_PORT,
};

/// One request; [`RequestFrame::discover`] gives a typical DISCOVER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub src_port: u16,
    pub dst_port: u16,
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub ciaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub file: Vec<u8>,
    /// Vendor area with the DHCP cookie.
    pub cookie: bool,
    pub message_type: Option<u8>,
    pub requested: Option<Ipv4Addr>,
    /// Raw bytes appended after the known options (before the end
    /// option).
    pub extra_options: Vec<u8>,
    /// BOOTP message padded to this many bytes.
    pub min_len: usize,
}

impl RequestFrame {
    /// A broadcast DISCOVER from `mac`.
    pub fn discover(mac: [u8; 6], xid: u32) -> RequestFrame {
        RequestFrame {
            eth_src: mac,
            eth_dst: [0xff; 6],
            src_port: CLIENT_PORT,
            dst_port: SERVER_PORT,
            op: BOOTREQUEST,
            htype: HTYPE_ETHERNET,
            hlen: 6,
            hops: 0,
            xid,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            file: Vec::new(),
            cookie: true,
            message_type: Some(super::reply::DISCOVER),
            requested: None,
            extra_options: Vec::new(),
            min_len: BOOTP_MIN_LEN,
        }
    }

    /// The BOOTP message.
    pub fn message(&self) -> Vec<u8> {
        let mut m = vec![0u8; BOOTP_FIXED_LEN];
        m[0] = self.op;
        m[1] = self.htype;
        m[2] = self.hlen;
        m[3] = self.hops;
        m[4..8].copy_from_slice(&self.xid.to_be_bytes());
        m[12..16].copy_from_slice(&self.ciaddr.octets());
        m[28..34].copy_from_slice(&self.chaddr);
        let file = &self.file[..self.file.len().min(128)];
        m[108..108 + file.len()].copy_from_slice(file);
        if self.cookie {
            m.extend_from_slice(MAGIC_COOKIE);
            if let Some(t) = self.message_type {
                m.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, t]);
            }
            if let Some(addr) = self.requested {
                m.extend_from_slice(&[OPT_REQUESTED_ADDRESS, 4]);
                m.extend_from_slice(&addr.octets());
            }
            m.extend_from_slice(&self.extra_options);
            m.push(OPT_END);
        }
        if m.len() < self.min_len {
            m.resize(self.min_len, 0);
        }
        m
    }

    /// The whole Ethernet frame, from 0.0.0.0 to the broadcast address.
    pub fn frame(&self) -> Vec<u8> {
        let message = self.message();
        let builder = PacketBuilder::ethernet2(self.eth_src, self.eth_dst)
            .ipv4([0; 4], [255; 4], 64)
            .udp(self.src_port, self.dst_port);
        let mut frame = Vec::with_capacity(builder.size(message.len()));
        builder
            .write(&mut frame, &message)
            .expect("a request fits every header's length field");
        frame
    }
}
