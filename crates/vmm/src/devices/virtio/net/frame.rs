//! The virtio-net header and the rules a frame must follow to pass
//! (virtio 1.x §5.1.6; docs/machine.md, "The network device").
//!
//! Every frame between guest and tap carries a 12-byte
//! `virtio_net_hdr_v1` in front; the tap speaks the same header, so a
//! header the guest wrote goes to the tap as it is — once it is known to
//! ask only for offloads the driver negotiated and to point inside the
//! frame. This file is the only code that interprets guest-controlled
//! bytes of the network device, and the fuzz target.

use guestnet::dhcp::Lease;
use guestnet::mac_lock::MacLock;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};

/// `virtio_net_hdr_v1`: what every modern driver puts before a frame.
pub const HEADER_LEN: usize = 12;
/// An Ethernet header: the least a frame can be.
pub const MIN_FRAME: usize = 14;
/// A 64 KiB segmentation super-frame with its Ethernet and VLAN headers:
/// the most a frame can be.
pub const MAX_FRAME: usize = 65535 + 18;
/// Bytes of a frame looked at to decide what it is (Ethernet, IPv4 with
/// options, UDP).
pub const PEEK_LEN: usize = 14 + 60 + 8;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    /// Receive buffers a frame spans (mergeable receive buffers).
    pub num_buffers: u16,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Header {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        }
    }

    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
            self.num_buffers,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn gso_kind(&self) -> u8 {
        self.gso_type & !(VIRTIO_NET_HDR_GSO_ECN as u8)
    }
}

/// Offloads the driver accepted, in one direction: what the guest may
/// leave undone in frames it sends (`HOST_*`, `CSUM`), or what it can
/// take in frames it receives (`GUEST_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    pub csum: bool,
    pub tso4: bool,
    pub tso6: bool,
    pub ecn: bool,
}

impl Offloads {
    /// Whether a frame with `header` asks only for these offloads.
    fn allow(&self, header: &Header) -> Result<(), Refused> {
        if header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 != 0 && !self.csum {
            return Err(Refused::Checksum);
        }
        let allowed = match u32::from(header.gso_kind()) {
            VIRTIO_NET_HDR_GSO_NONE => true,
            VIRTIO_NET_HDR_GSO_TCPV4 => self.tso4,
            VIRTIO_NET_HDR_GSO_TCPV6 => self.tso6,
            _ => false,
        };
        let ecn = header.gso_type & VIRTIO_NET_HDR_GSO_ECN as u8 != 0;
        if !allowed || (ecn && !self.ecn) {
            return Err(Refused::Segmentation);
        }
        Ok(())
    }
}

/// Why a frame is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Shorter than an Ethernet header.
    Runt,
    /// Longer than any frame can be.
    Oversized,
    /// Checksum offload the driver did not negotiate.
    Checksum,
    /// A checksum position outside the frame.
    ChecksumOutside,
    /// Segmentation offload the driver did not negotiate, or an
    /// impossible one.
    Segmentation,
    /// `locked lladdr`: not the VM's own source (guest to host) or not
    /// addressed to it (host to guest).
    Locked,
}

/// What the device does with a frame the guest transmits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxVerdict {
    /// On to the tap as it is.
    Send,
    /// A DHCP request for the responder: this reply goes to the guest,
    /// and the request nowhere.
    Reply(Vec<u8>),
    Drop(Refused),
}

/// What a NIC's transmit path enforces.
#[derive(Debug, Clone)]
pub struct TxPolicy {
    /// Offloads the guest may ask of the host.
    pub offloads: Offloads,
    pub lock: Option<MacLock>,
    /// Local interface: its DHCP responder.
    pub lease: Option<Lease>,
}

/// Whether the device must copy the whole frame out before deciding: a
/// local interface's frame that may be a DHCP request (untagged IPv4 UDP
/// to port 67, no bigger than a request can be). `start` is the first
/// [`PEEK_LEN`] bytes of the frame, or all of it if shorter.
pub fn wants_whole_frame(policy: &TxPolicy, frame_len: usize, start: &[u8]) -> bool {
    if policy.lease.is_none()
        || !(guestnet::dhcp::request::MIN_FRAME..=guestnet::dhcp::request::MAX_FRAME)
            .contains(&frame_len)
    {
        return false;
    }
    let (Some(ethertype), Some(&version_ihl)) = (start.get(12..14), start.get(14)) else {
        return false;
    };
    let udp = 14 + usize::from(version_ihl & 0x0f) * 4;
    ethertype == [0x08, 0x00]
        && start.get(14 + 9) == Some(&17)
        && start.get(udp + 2..udp + 4) == Some(&guestnet::dhcp::SERVER_PORT.to_be_bytes()[..])
}

/// Whether [`inspect_tx`] needs to see the frame's bytes, not only its
/// header and length.
pub fn looks_inside(policy: &TxPolicy) -> bool {
    policy.lock.is_some() || policy.lease.is_some()
}

/// Decides a transmitted frame's fate; `frame_len` is its full length.
/// When [`looks_inside`] says so, `frame` holds its first bytes (at least
/// [`PEEK_LEN`] or the whole frame if shorter, and all of it when
/// [`wants_whole_frame`] says so); otherwise it may be empty.
pub fn inspect_tx(header: &Header, frame_len: usize, frame: &[u8], policy: &TxPolicy) -> TxVerdict {
    if frame_len < MIN_FRAME {
        return TxVerdict::Drop(Refused::Runt);
    }
    if frame_len > MAX_FRAME {
        return TxVerdict::Drop(Refused::Oversized);
    }
    if let Err(why) = policy.offloads.allow(header) {
        return TxVerdict::Drop(why);
    }
    if header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 != 0
        && usize::from(header.csum_start) + usize::from(header.csum_offset) + 2 > frame_len
    {
        return TxVerdict::Drop(Refused::ChecksumOutside);
    }
    if header.gso_kind() != VIRTIO_NET_HDR_GSO_NONE as u8
        && (header.gso_size == 0 || header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 == 0)
    {
        return TxVerdict::Drop(Refused::Segmentation);
    }
    if policy.lock.is_some_and(|lock| !lock.guest_may_send(frame)) {
        return TxVerdict::Drop(Refused::Locked);
    }
    if let Some(lease) = &policy.lease
        && frame.len() == frame_len
        && let Some(reply) = lease.respond(frame)
    {
        return TxVerdict::Reply(reply);
    }
    TxVerdict::Send
}

/// Checks a frame from the tap before the guest gets it, and returns the
/// header the guest should see. `guest` are the offloads the driver takes;
/// a frame needing others (left over from before a reset, say) is
/// dropped. `start` is the frame's first bytes (at least its Ethernet
/// header).
pub fn inspect_rx(
    header: &Header,
    start: &[u8],
    guest: &Offloads,
    lock: Option<&MacLock>,
) -> Result<Header, Refused> {
    if start.len() < MIN_FRAME {
        return Err(Refused::Runt);
    }
    guest.allow(header)?;
    if lock.is_some_and(|lock| !lock.guest_may_receive(start)) {
        return Err(Refused::Locked);
    }
    let mut out = *header;
    if !guest.csum {
        // DATA_VALID means something only to a driver that took checksums.
        out.flags &= !(VIRTIO_NET_HDR_F_DATA_VALID as u8);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            flags: 1,
            gso_type: 4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        assert_eq!(Header::parse(&h.to_bytes()), h);
        assert_eq!(h.to_bytes()[4..6], 1448u16.to_le_bytes());
    }
}
