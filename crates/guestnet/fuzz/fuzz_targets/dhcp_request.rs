//! The DHCP responder on arbitrary guest frames: it must never panic, and
//! whatever it answers must be a well-formed BOOTREPLY to that guest,
//! which the responder itself would not answer again.
//!
//! The frame's own source MAC is taken as the VM's, so the fuzzer is not
//! stuck at the first check.

#![no_main]

use std::net::Ipv4Addr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use guestnet::dhcp::{Lease, request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let mut vm_mac = [0u8; 6];
    if let Some(src) = frame.get(6..12) {
        vm_mac.copy_from_slice(src);
    }
    for net_boot in [false, true] {
        let lease = Lease {
            vm_mac,
            host_mac: [0x02, 0, 0, 0, 0, 1],
            host: Ipv4Addr::new(100, 64, 1, 2),
            guest: Ipv4Addr::new(100, 64, 1, 3),
            net_boot,
            vm_name: "fuzzed-vm".into(),
        };
        let parsed = request::parse(
            frame,
            &request::Identity {
                vm_mac,
                host_mac: lease.host_mac,
            },
        );
        let reply = lease.respond(frame);
        assert_eq!(parsed.is_ok(), reply.is_some());
        let Some(reply) = reply else { continue };
        assert!(reply.len() >= 14 + 20 + 8 + 300 && reply.len() <= 1514);
        let packet = SlicedPacket::from_ethernet(&reply).expect("the reply parses");
        assert!(matches!(packet.net, Some(NetSlice::Ipv4(_))));
        let Some(TransportSlice::Udp(udp)) = packet.transport else {
            panic!("the reply is UDP");
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (67, 68));
        assert_eq!(udp.payload()[0], 2, "BOOTREPLY");
        assert_eq!(&udp.payload()[28..34], &vm_mac);
        assert!(lease.respond(&reply).is_none(), "a reply is never answered");
    }
});
