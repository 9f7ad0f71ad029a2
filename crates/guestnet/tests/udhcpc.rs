//! The responder against a real DHCP client: busybox's `udhcpc` runs on a
//! tap in a network namespace, and the test reads what it sends from the
//! tap's descriptor — the side a VM's NIC would be on — answers through
//! the responder and writes the replies back. Needs root and
//! busybox-static.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use guestnet::dhcp::Lease;
use guestnet::tap::{Tap, VNET_HDR_LEN};
use testkit::netns::NetNs;
use testkit::udhcpc::Udhcpc;

/// Serves `tap` with `lease` until `stop`; returns how many requests it
/// answered.
fn serve(tap: &Tap, lease: &Lease, stop: &AtomicBool) -> usize {
    let fd = tap.file().as_raw_fd();
    let mut answered = 0;
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        // SAFETY: reads into `buf`, within its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= VNET_HDR_LEN as isize {
            continue;
        }
        let frame = &buf[VNET_HDR_LEN..n as usize];
        if let Some(reply) = lease.respond(frame) {
            let mut out = vec![0u8; VNET_HDR_LEN];
            out.extend_from_slice(&reply);
            // SAFETY: writes `out`.
            let written = unsafe { libc::write(fd, out.as_ptr().cast(), out.len()) };
            assert_eq!(
                written,
                out.len() as isize,
                "{}",
                std::io::Error::last_os_error()
            );
            answered += 1;
        }
    }
    answered
}

/// Runs udhcpc on a fresh tap with a responder for VM 5 behind it;
/// returns the variables udhcpc handed its script when it bound, and how
/// many requests were answered.
fn lease_through_udhcpc(
    tag: &str,
    net_boot: bool,
    vm_name: &str,
) -> (BTreeMap<String, String>, usize) {
    let ns = NetNs::new(tag);
    let client = Udhcpc::new(tag);
    let tap = ns.enter(|| Tap::create(Some("tapc0")).unwrap());
    ns.ip(&["link", "set", "tapc0", "up"]);
    let lease = Lease {
        // udhcpc speaks from the tap's side, so the tap's MAC plays the
        // VM NIC's.
        vm_mac: tap.mac().unwrap(),
        host_mac: [0x02, 0, 0, 0, 0, 0x99],
        // The /31 of VM 5's first NIC in the default local prefix.
        host: Ipv4Addr::new(100, 64, 5, 2),
        guest: Ipv4Addr::new(100, 64, 5, 3),
        net_boot,
        vm_name: vm_name.into(),
    };
    let stop = AtomicBool::new(false);
    let (out, answered) = std::thread::scope(|scope| {
        let server = scope.spawn(|| serve(&tap, &lease, &stop));
        let started = Instant::now();
        let out = client.command(&ns, "tapc0").output().unwrap();
        assert!(started.elapsed() < Duration::from_secs(30));
        stop.store(true, Ordering::Relaxed);
        (out, server.join().unwrap())
    });
    assert!(
        out.status.success(),
        "udhcpc failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (client.lease().expect("udhcpc bound a lease"), answered)
}

#[test]
fn udhcpc_obtains_the_guest_address_with_router_dns_and_an_endless_lease() {
    testkit::needs!(root);
    let (vars, answered) = lease_through_udhcpc("udhcpc", false, "guest");
    assert_eq!(answered, 2, "DISCOVER and REQUEST");
    assert_eq!(vars["ip"], "100.64.5.3");
    assert_eq!(vars["subnet"], "255.255.255.254");
    assert_eq!(vars["mask"], "31");
    assert_eq!(vars["router"], "100.64.5.2");
    assert_eq!(vars["dns"], "100.64.5.2");
    assert_eq!(vars["serverid"], "100.64.5.2");
    assert_eq!(vars["siaddr"], "100.64.5.2");
    assert_eq!(vars["lease"], "4294967295");
    assert!(!vars.contains_key("boot_file"), "{vars:?}");
    assert!(!vars.contains_key("hostname"), "{vars:?}");
}

#[test]
fn udhcpc_gets_the_boot_file_and_host_name_for_a_network_boot() {
    testkit::needs!(root);
    let (vars, _) = lease_through_udhcpc("udhcpcnet", true, "pxe-guest");
    assert_eq!(vars["ip"], "100.64.5.3");
    assert_eq!(vars["boot_file"], "auto_install");
    assert_eq!(vars["hostname"], "pxe-guest");
}
