//! The network device's frame rules on arbitrary bytes: a virtio-net
//! header and a frame as a guest (transmit) or a peer on the tap
//! (receive) could send them, under every combination of negotiated
//! offloads, MAC locking and DHCP responder. Nothing may panic, and what
//! passes must keep the rules: inside the size limits, only offloads the
//! driver took, a checksum position inside the frame, the locked source.

#![no_main]

use std::net::Ipv4Addr;

use guestnet::dhcp::Lease;
use guestnet::mac_lock::MacLock;
use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::net::frame::{
    self, HEADER_LEN, Header, MAX_FRAME, MIN_FRAME, Offloads, TxPolicy, TxVerdict,
};

const MAC: [u8; 6] = [0xfe, 0xe1, 0xbb, 0xd1, 0, 1];

fn offloads(bits: u8) -> Offloads {
    Offloads {
        csum: bits & 1 != 0,
        tso4: bits & 2 != 0,
        tso6: bits & 4 != 0,
        ecn: bits & 8 != 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((header, frame)) = rest.split_first_chunk::<HEADER_LEN>() else {
        return;
    };
    let header = Header::parse(header);
    assert_eq!(Header::parse(&header.to_bytes()), header);
    let lock = (selector & 0x10 != 0).then_some(MacLock { mac: MAC });
    let policy = TxPolicy {
        offloads: offloads(selector),
        lock,
        lease: (selector & 0x20 != 0).then(|| Lease {
            vm_mac: frame.get(6..12).map_or(MAC, |m| m.try_into().unwrap()),
            host_mac: [2, 0, 0, 0, 0, 1],
            host: Ipv4Addr::new(100, 64, 1, 2),
            guest: Ipv4Addr::new(100, 64, 1, 3),
            net_boot: selector & 0x40 != 0,
            vm_name: "fuzz".into(),
        }),
    };
    let start = &frame[..frame.len().min(frame::PEEK_LEN)];
    let seen = if frame::wants_whole_frame(&policy, frame.len(), start) {
        frame
    } else {
        start
    };
    match frame::inspect_tx(&header, frame.len(), seen, &policy) {
        TxVerdict::Send => {
            assert!((MIN_FRAME..=MAX_FRAME).contains(&frame.len()));
            if header.flags & 1 != 0 {
                assert!(policy.offloads.csum);
                assert!(
                    usize::from(header.csum_start) + usize::from(header.csum_offset) + 2
                        <= frame.len()
                );
            }
            if let Some(lock) = lock {
                assert!(lock.guest_may_send(frame));
            }
        }
        TxVerdict::Reply(reply) => {
            assert!(policy.lease.is_some());
            assert!(reply.len() <= 1514);
        }
        TxVerdict::Drop(_) => {}
    }
    let guest = offloads(selector >> 4);
    if let Ok(out) = frame::inspect_rx(&header, frame, &guest, lock.as_ref()) {
        assert!(frame.len() >= MIN_FRAME);
        if !guest.csum {
            assert_eq!(
                out.flags & 2,
                0,
                "DATA_VALID only for a driver that takes checksums"
            );
        }
    }
});
