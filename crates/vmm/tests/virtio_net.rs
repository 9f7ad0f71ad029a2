//! The virtio-net device driven as a guest driver would drive it (buffers
//! in guest memory, chains on the queues), against real taps in a network
//! namespace of each test's own: frames both ways with the offloads, two
//! devices on one bridge, MAC locking, the DHCP responder answering
//! busybox's udhcpc, and hostile drivers and peers. Needs root.

use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use guestnet::dhcp::Lease;
use guestnet::tap::Tap;
use testkit::netns::NetNs;
use virtio_bindings::virtio_net::*;
use vmm::devices::virtio::TRANSPORT_FEATURES;
use vmm::devices::virtio::net::driver::{NetDriver, Received};
use vmm::devices::virtio::net::frame::{HEADER_LEN, Header};
use vmm::devices::virtio::net::handler::NetStats;
use vmm::devices::virtio::net::{Net, NetConfig};

const GUEST_MAC: [u8; 6] = [0xfe, 0xe1, 0xbb, 0xd1, 0x00, 0x01];
const HOST_IP: [u8; 4] = [10, 9, 0, 1];
const GUEST_IP: [u8; 4] = [10, 9, 0, 2];

fn bit(b: u32) -> u64 {
    1 << b
}

/// Features without any offload or mergeable buffers.
fn plain() -> u64 {
    TRANSPORT_FEATURES | bit(VIRTIO_NET_F_MAC)
}

fn config(tap: File, mac: [u8; 6]) -> NetConfig {
    NetConfig {
        name: "test-vionet0".into(),
        tap,
        guest_mac: mac,
        locked: false,
        lease: None,
    }
}

/// A tap `name` in `ns`, up, with `addr/24` if given; returns its
/// descriptor and MAC.
fn tap(ns: &NetNs, name: &str, addr: Option<[u8; 4]>) -> (File, [u8; 6]) {
    let tap = ns.enter(|| Tap::create(Some(name)).unwrap());
    ns.ip(&["link", "set", name, "up"]);
    if let Some(a) = addr {
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", Ipv4Addr::from(a)),
            "dev",
            name,
        ]);
    }
    let mac = tap.mac().unwrap();
    (tap.file().try_clone().unwrap(), mac)
}

/// A tap with the host address and the guest's MAC known as 10.9.0.2,
/// so the host sends to the guest without asking by ARP first.
fn tap_with_guest_neighbour(ns: &NetNs, name: &str) -> (File, [u8; 6]) {
    let found = tap(ns, name, Some(HOST_IP));
    ns.ip(&[
        "neigh",
        "add",
        "10.9.0.2",
        "lladdr",
        "fe:e1:bb:d1:00:01",
        "dev",
        name,
    ]);
    found
}

/// The index of interface `name` in the current network namespace
/// (if_nametoindex(3)).
fn if_index(name: &str) -> u32 {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0, "{}", std::io::Error::last_os_error());
    index
}

/// A raw packet socket on `ifname` in `ns`; with `vnet` it speaks
/// virtio-net headers (PACKET_VNET_HDR).
fn packet_socket(ns: &NetNs, ifname: &str, vnet: bool) -> OwnedFd {
    ns.enter(|| {
        let index = if_index(ifname);
        let proto = (libc::ETH_P_ALL as u16).to_be();
        {
            // SAFETY: a plain socket call.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            // SAFETY: `fd` is a new descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            if vnet {
                let one: libc::c_int = 1;
                // SAFETY: sets an int option on a descriptor we own.
                let rc = unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_PACKET,
                        libc::PACKET_VNET_HDR,
                        (&one as *const libc::c_int).cast(),
                        4,
                    )
                };
                assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            }
            // SAFETY: `sockaddr_ll` is plain data, for which all zeroes is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = index as i32;
            // SAFETY: binds a descriptor we own to the address above.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            fd
        }
    })
}

fn send_on(fd: &OwnedFd, bytes: &[u8]) {
    // SAFETY: writes `bytes`.
    let n = unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
    assert_eq!(
        n,
        bytes.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}

/// Everything the socket receives within `wait` that `keep` accepts.
fn recv_on(fd: &OwnedFd, wait: Duration, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70000];
    while Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one pollfd of ours.
        if unsafe { libc::poll(&mut pfd, 1, 20) } <= 0 {
            continue;
        }
        // SAFETY: reads into `buf`, at most its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 && keep(&buf[..n as usize]) {
            out.push(buf[..n as usize].to_vec());
        }
    }
    out
}

/// Lets the device read the tap until `count` frames arrived or time is
/// up.
fn receive(driver: &mut NetDriver, count: usize, wait: Duration) -> Vec<Received> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < count && Instant::now() < deadline {
        driver.process_rx().unwrap();
        got.extend(driver.received());
        std::thread::sleep(Duration::from_millis(5));
    }
    got
}

fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[12], frame[13]])
}

fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], port: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(GUEST_IP, HOST_IP, 64)
        .udp(40000, port);
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

/// A TCP frame of `payload` bytes with its checksum left for the
/// offload (`NEEDS_CSUM`), from `src` to `dst`.
fn tcp_frame(src: ([u8; 6], [u8; 4]), dst: ([u8; 6], [u8; 4]), payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(src.1, dst.1, 64)
        .tcp(5000, 6000, 1, 65535)
        .ack(1);
    let mut f = Vec::new();
    b.write(&mut f, &vec![0x5a; payload]).unwrap();
    f
}

fn partial_csum_header(frame: &[u8], gso: Option<u16>) -> Header {
    let tcp = frame.len() > 23 && frame[23] == 6;
    Header {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
        gso_type: if gso.is_some() {
            VIRTIO_NET_HDR_GSO_TCPV4 as u8
        } else {
            0
        },
        hdr_len: if tcp { 54 } else { 42 },
        gso_size: gso.unwrap_or(0),
        csum_start: 34,
        csum_offset: if tcp { 16 } else { 6 },
        num_buffers: 0,
    }
}

/// A datagram the host's stack sends to 10.9.0.2, as the guest receives
/// it.
fn datagram_to_the_guest(ns: &NetNs, d: &mut NetDriver) -> Received {
    let sender = ns.enter(|| UdpSocket::bind("10.9.0.1:0").unwrap());
    sender.send_to(b"to the guest", "10.9.0.2:9").unwrap();
    receive(d, 1, Duration::from_secs(5))
        .into_iter()
        .find(|r| ethertype(&r.frame) == 0x0800)
        .expect("the datagram")
}

#[test]
fn frames_go_out_to_the_tap_and_answers_come_back() {
    testkit::needs!(root);
    let ns = NetNs::new("vnetarp");
    let (tap, host_mac) = tap(&ns, "tapv0", Some(HOST_IP));
    let mut d = NetDriver::new(config(tap, GUEST_MAC), plain(), 256);
    d.post_rx(16, 1526);
    // Who has 10.9.0.1? The host's kernel answers on the tap.
    let arp = PacketBuilder::ethernet2(GUEST_MAC, [0xff; 6]).arp(
        etherparse::ArpPacket::new(
            etherparse::ArpHardwareId::ETHERNET,
            etherparse::EtherType::IPV4,
            etherparse::ArpOperation::REQUEST,
            &GUEST_MAC,
            &GUEST_IP,
            &[0; 6],
            &HOST_IP,
        )
        .unwrap(),
    );
    let mut frame = Vec::new();
    arp.write(&mut frame).unwrap();
    // Header apart and the frame in two pieces, as older drivers lay it out.
    use vmm::devices::virtio::driver::Descriptor;
    let at = vmm::devices::virtio::net::driver::tx_buffers(256);
    let mut bytes = Header::default().to_bytes().to_vec();
    bytes.extend_from_slice(&frame);
    vm_memory::Bytes::write_slice(&d.mem, &bytes, vm_memory::GuestAddress(at)).unwrap();
    d.tx.add_chain(&[
        Descriptor::readable(at, HEADER_LEN as u32),
        Descriptor::readable(at + HEADER_LEN as u64, 20),
        Descriptor::readable(at + HEADER_LEN as u64 + 20, (frame.len() - 20) as u32),
    ]);
    d.process_tx().unwrap();
    assert_eq!(d.tx_done().len(), 1);
    let got = receive(&mut d, 1, Duration::from_secs(5));
    let reply = got
        .iter()
        .find(|r| ethertype(&r.frame) == 0x0806)
        .expect("an ARP reply in the receive ring");
    assert_eq!(&reply.frame[0..6], &GUEST_MAC);
    assert_eq!(&reply.frame[6..12], &host_mac);
    assert_eq!(&reply.frame[28..32], &HOST_IP, "sender protocol address");
    assert_eq!(reply.buffers, 1);
    assert!(NetStats::get(&d.stats.tx_frames) == 1 && NetStats::get(&d.stats.rx_frames) >= 1);
    assert!(d.interrupt.queue.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

#[test]
fn checksum_offload_passes_through_the_header_both_ways() {
    testkit::needs!(root);
    let ns = NetNs::new("vnetcsum");
    let (tap, host_mac) = tap_with_guest_neighbour(&ns, "tapv1");
    let features = plain() | bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM);
    let mut d = NetDriver::new(config(tap, GUEST_MAC), features, 256);
    d.post_rx(16, 1526);

    // Guest to host: a datagram whose checksum is left to the offload is
    // accepted; the same bytes without the header's flag are not.
    let socket = ns.enter(|| UdpSocket::bind("10.9.0.1:7777").unwrap());
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut frame = udp_frame(GUEST_MAC, host_mac, 7777, b"partial checksum");
    frame[40..42].copy_from_slice(&[0xde, 0xad]);
    d.transmit(&Header::default(), &frame);
    d.transmit(&partial_csum_header(&frame, None), &frame);
    d.process_tx().unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = socket.recv_from(&mut buf).expect("the offloaded datagram");
    assert_eq!(&buf[..n], b"partial checksum");
    assert!(
        socket.recv_from(&mut buf).is_err(),
        "the bad checksum was dropped"
    );

    // Host to guest: the guest takes checksums, so the kernel leaves them
    // to it and says so.
    let r = datagram_to_the_guest(&ns, &mut d);
    assert_eq!(
        r.header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
        VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
        "{:?}",
        r.header
    );
    assert_eq!(r.header.csum_start, 34);
}

#[test]
fn without_checksum_offload_the_kernel_finishes_frames_and_offloaded_ones_are_refused() {
    testkit::needs!(root);
    let ns = NetNs::new("vnetnocsum");
    let (tap, host_mac) = tap_with_guest_neighbour(&ns, "tapv2");
    let mut d = NetDriver::new(config(tap, GUEST_MAC), plain(), 256);
    d.post_rx(16, 1526);
    let r = datagram_to_the_guest(&ns, &mut d);
    assert_eq!(r.header.flags, 0);
    let packet = etherparse::SlicedPacket::from_ethernet(&r.frame).unwrap();
    let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(udp))) =
        (&packet.net, &packet.transport)
    else {
        panic!("not UDP/IPv4");
    };
    let expected = udp
        .to_header()
        .calc_checksum_ipv4(&ip.header().to_header(), udp.payload())
        .unwrap();
    assert_eq!(udp.checksum(), expected, "a complete checksum");

    // A driver that did not take CSUM may not ask for it.
    let frame = udp_frame(GUEST_MAC, host_mac, 7777, b"x");
    d.transmit(&partial_csum_header(&frame, None), &frame);
    d.process_tx().unwrap();
    assert_eq!(NetStats::get(&d.stats.tx_dropped), 1);
    assert_eq!(NetStats::get(&d.stats.tx_frames), 0);
}

#[test]
fn segmentation_offload_passes_super_frames_both_ways() {
    testkit::needs!(root);
    let ns = NetNs::new("vnettso");
    let (tap, host_mac) = tap(&ns, "tapv3", None);
    let features = plain()
        | bit(VIRTIO_NET_F_CSUM)
        | bit(VIRTIO_NET_F_GUEST_CSUM)
        | bit(VIRTIO_NET_F_GUEST_TSO4)
        | bit(VIRTIO_NET_F_HOST_TSO4)
        | bit(VIRTIO_NET_F_MRG_RXBUF);
    let mut d = NetDriver::new(config(tap, GUEST_MAC), features, 256);
    // Mergeable buffers: small ones, as Linux posts them.
    d.post_rx(64, 2048);
    let socket = packet_socket(&ns, "tapv3", true);

    // Host to guest: 3000 bytes of TCP in one 64 KiB-capable frame.
    let host = (host_mac, HOST_IP);
    let guest = (GUEST_MAC, GUEST_IP);
    let frame = tcp_frame(host, guest, 3000);
    let mut bytes = partial_csum_header(&frame, Some(1000)).to_bytes()[..10].to_vec();
    bytes.extend_from_slice(&frame);
    send_on(&socket, &bytes);
    let got = receive(&mut d, 1, Duration::from_secs(5));
    let r = got
        .iter()
        .find(|r| r.frame.len() > 1000)
        .expect("the super-frame");
    assert_eq!(r.frame.len(), frame.len(), "one frame, not segments");
    assert_eq!(r.header.gso_type, VIRTIO_NET_HDR_GSO_TCPV4 as u8);
    assert_eq!(r.header.gso_size, 1000);
    assert!(
        r.buffers >= 2,
        "spread over mergeable buffers: {}",
        r.buffers
    );
    assert_eq!(usize::from(r.header.num_buffers), r.buffers);
    assert_eq!(&r.frame[54..], &frame[54..]);

    // Guest to host: the same the other way; the kernel sees one frame
    // that still carries its segmentation request.
    let frame = tcp_frame(guest, host, 3000);
    d.transmit(&partial_csum_header(&frame, Some(1000)), &frame);
    d.process_tx().unwrap();
    let seen = recv_on(&socket, Duration::from_millis(500), |b| b.len() > 10 + 1000);
    let first = seen.first().expect("the super-frame on the tap");
    assert_eq!(first.len(), 10 + frame.len());
    assert_eq!(first[1], VIRTIO_NET_HDR_GSO_TCPV4 as u8);
    assert_eq!(u16::from_le_bytes([first[4], first[5]]), 1000);
}

#[test]
fn without_segmentation_offload_the_guest_gets_segments() {
    testkit::needs!(root);
    let ns = NetNs::new("vnetnotso");
    let (tap, host_mac) = tap(&ns, "tapv4", None);
    let features = plain() | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_CSUM);
    let mut d = NetDriver::new(config(tap, GUEST_MAC), features, 256);
    d.post_rx(16, 1526);
    let socket = packet_socket(&ns, "tapv4", true);
    let frame = tcp_frame((host_mac, HOST_IP), (GUEST_MAC, GUEST_IP), 3000);
    let mut bytes = partial_csum_header(&frame, Some(1000)).to_bytes()[..10].to_vec();
    bytes.extend_from_slice(&frame);
    send_on(&socket, &bytes);
    let got = receive(&mut d, 3, Duration::from_secs(5));
    let segments: Vec<_> = got
        .iter()
        .filter(|r| ethertype(&r.frame) == 0x0800)
        .collect();
    assert_eq!(segments.len(), 3, "{got:?}");
    assert!(
        segments
            .iter()
            .all(|r| r.frame.len() == 54 + 1000 && r.header.gso_type == 0)
    );

    // A super-frame from a driver that did not take HOST_TSO4 is dropped.
    let frame = tcp_frame((GUEST_MAC, GUEST_IP), (host_mac, HOST_IP), 3000);
    d.transmit(&partial_csum_header(&frame, Some(1000)), &frame);
    d.process_tx().unwrap();
    assert_eq!(NetStats::get(&d.stats.tx_dropped), 1);
}

#[test]
fn two_devices_on_one_bridge_hear_each_other() {
    testkit::needs!(root);
    let ns = NetNs::new("vnetbridge");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&["link", "set", "br0", "up"]);
    let (tap_a, _) = tap(&ns, "tapa", None);
    let (tap_b, _) = tap(&ns, "tapb", None);
    ns.ip(&["link", "set", "tapa", "master", "br0"]);
    ns.ip(&["link", "set", "tapb", "master", "br0"]);
    let mac_a = GUEST_MAC;
    let mac_b = [0xfe, 0xe1, 0xbb, 0xd1, 0x00, 0x02];
    let mut a = NetDriver::new(config(tap_a, mac_a), plain(), 256);
    let mut b = NetDriver::new(config(tap_b, mac_b), plain(), 256);
    b.post_rx(16, 1526);
    let mut frame = Vec::new();
    frame.extend_from_slice(&mac_b);
    frame.extend_from_slice(&mac_a);
    frame.extend_from_slice(&[0x88, 0xb5]);
    frame.extend_from_slice(b"hello from a, through the bridge, to b");
    frame.resize(60, 0);
    a.transmit(&Header::default(), &frame);
    a.process_tx().unwrap();
    let got = receive(&mut b, 1, Duration::from_secs(5));
    assert!(
        got.iter().any(|r| r.frame == frame),
        "b's receive ring: {got:?}"
    );
}

#[test]
fn a_locked_nic_speaks_and_hears_only_as_itself() {
    testkit::needs!(root);
    let ns = NetNs::new("vnetlock");
    let (tap, _) = tap(&ns, "tapl", None);
    let mut cfg = config(tap, GUEST_MAC);
    cfg.locked = true;
    let mut d = NetDriver::new(cfg, plain(), 256);
    d.post_rx(16, 1526);
    let socket = packet_socket(&ns, "tapl", false);
    let other = [0x02, 0, 0, 0, 0, 0x42];
    let frame = |dst: [u8; 6], src: [u8; 6], tag: u8| {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5, tag]);
        f.resize(60, 0);
        f
    };
    // Guest to host: a spoofed source goes nowhere.
    d.transmit(&Header::default(), &frame([0xff; 6], other, 1));
    d.transmit(&Header::default(), &frame([0xff; 6], GUEST_MAC, 2));
    d.process_tx().unwrap();
    let seen = recv_on(&socket, Duration::from_millis(300), |b| {
        ethertype(b) == 0x88b5
    });
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0][14], 2);
    assert_eq!(NetStats::get(&d.stats.tx_dropped), 1);

    // Host to guest: unicast for someone else is kept from the guest.
    send_on(&socket, &frame(other, other, 3));
    send_on(&socket, &frame([0xff; 6], other, 4));
    send_on(&socket, &frame(GUEST_MAC, other, 5));
    let got = receive(&mut d, 2, Duration::from_secs(3));
    let tags: Vec<u8> = got
        .iter()
        .filter(|r| ethertype(&r.frame) == 0x88b5)
        .map(|r| r.frame[14])
        .collect();
    assert_eq!(tags, vec![4, 5]);
    assert!(NetStats::get(&d.stats.rx_dropped) >= 1);
}

/// udhcpc runs on a tap in the namespace whose descriptor plays the
/// guest's wire: what udhcpc sends the test transmits through the device,
/// and what the device puts in the receive ring the test writes back.
#[test]
fn the_device_answers_udhcpc_and_sends_no_dhcp_to_the_host() {
    testkit::needs!(root);
    let ns = NetNs::new("vnetdhcp");
    let (host_tap, host_mac) = tap(&ns, "taphost", None);
    let host_side = packet_socket(&ns, "taphost", false);
    let (wire, client_mac) = tap(&ns, "tapguest", None);
    let mut cfg = config(host_tap, client_mac);
    cfg.lease = Some(Lease {
        vm_mac: client_mac,
        host_mac,
        // The /31 of VM 9's first NIC in the default local prefix.
        host: Ipv4Addr::new(100, 64, 9, 2),
        guest: Ipv4Addr::new(100, 64, 9, 3),
        net_boot: true,
        vm_name: "netboot".into(),
    });
    let features = plain() | bit(VIRTIO_NET_F_MRG_RXBUF);
    let mut d = NetDriver::new(cfg, features, 256);
    d.post_rx(32, 2048);

    let udhcpc = testkit::udhcpc::Udhcpc::new("vnetdhcp");
    let mut client = udhcpc
        .command(&ns, "tapguest")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 65536];
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "udhcpc did not finish");
        // The client's frames: into the transmit queue.
        // SAFETY: a non-blocking read into `buf`.
        let n = unsafe { libc::read(wire.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > HEADER_LEN as isize {
            d.transmit(&Header::default(), &buf[HEADER_LEN..n as usize]);
            d.process_tx().unwrap();
            d.tx_done();
        }
        // The device's frames: onto the client's wire.
        for r in d.received() {
            let mut out = vec![0u8; HEADER_LEN];
            out.extend_from_slice(&r.frame);
            // SAFETY: writes `out`.
            unsafe { libc::write(wire.as_raw_fd(), out.as_ptr().cast(), out.len()) };
            d.post_rx(r.buffers, 2048);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "udhcpc failed");
    let lease = udhcpc.lease().expect("udhcpc bound a lease");
    for (key, value) in [
        ("ip", "100.64.9.3"),
        ("subnet", "255.255.255.254"),
        ("router", "100.64.9.2"),
        ("dns", "100.64.9.2"),
        ("lease", "4294967295"),
        ("boot_file", "auto_install"),
        ("hostname", "netboot"),
    ] {
        assert_eq!(
            lease.get(key).map(String::as_str),
            Some(value),
            "{key}: {lease:?}"
        );
    }
    assert_eq!(NetStats::get(&d.stats.dhcp_replies), 2);
    let dhcp_on_host = recv_on(&host_side, Duration::from_millis(100), |f| {
        f.len() > 37 && ethertype(f) == 0x0800 && f[23] == 17 && f[36..38] == [0, 67]
    });
    assert!(
        dhcp_on_host.is_empty(),
        "a DHCP request reached the host tap"
    );
}

#[test]
fn hostile_drivers_get_their_frames_dropped_or_the_device_reset_never_a_crash() {
    testkit::needs!(root);
    let ns = NetNs::new("vnethostile");
    let (tap, _) = tap(&ns, "taph", None);
    let mut d = NetDriver::new(config(tap, GUEST_MAC), plain(), 256);
    // Runts: a header cut short, a header alone, half an Ethernet header.
    use vmm::devices::virtio::driver::Descriptor;
    let base = vmm::devices::virtio::net::driver::tx_buffers(256);
    d.tx.add_chain(&[Descriptor::readable(base, 5)]);
    d.transmit(&Header::default(), &[]);
    d.transmit(&Header::default(), &[0xff; 7]);
    // Oversized: beyond any frame, in two big descriptors.
    d.tx.add_chain(&[
        Descriptor::readable(base, 12),
        Descriptor::readable(base + 0x1000, 40000),
        Descriptor::readable(base + 0x20000, 40000),
    ]);
    // A checksum position outside the frame, segmentation not taken.
    let frame = udp_frame(GUEST_MAC, [0xff; 6], 9, b"x");
    let mut outside = partial_csum_header(&frame, None);
    outside.csum_start = 2000;
    d.transmit(&outside, &frame);
    d.transmit(&partial_csum_header(&frame, Some(100)), &frame);
    // And a good one after them all.
    d.transmit(&Header::default(), &frame);
    d.process_tx().unwrap();
    assert_eq!(d.tx_done().len(), 7, "every chain is given back");
    assert_eq!(NetStats::get(&d.stats.tx_dropped), 6);
    assert_eq!(NetStats::get(&d.stats.tx_frames), 1);

    // A transmit chain of more descriptors than a frame needs breaks the
    // device (it needs a reset), and says why.
    let descs: Vec<_> = (0..100)
        .map(|i| Descriptor::readable(base + 64 * i, 64))
        .collect();
    d.tx.add_chain(&descs);
    let err = d.process_tx().unwrap_err();
    assert!(err.0.contains("too long"), "{err}");

    // A receive "buffer" the device may not write to breaks it too.
    let (tap, _) = self::tap(&ns, "taph2", None);
    let mut d = NetDriver::new(config(tap, GUEST_MAC), plain(), 256);
    d.rx.add_chain(&[Descriptor::readable(
        vmm::devices::virtio::net::driver::RX_BUFFERS,
        1526,
    )]);
    assert!(d.process_rx().is_err());
}

#[test]
fn frames_larger_than_the_buffers_are_dropped_and_the_next_ones_delivered() {
    testkit::needs!(root);
    let ns = NetNs::new("vnetbig");
    let (tap, host_mac) = tap(&ns, "tapbig", None);
    let mut d = NetDriver::new(config(tap, GUEST_MAC), plain(), 256);
    // Buffers too small for a full frame (a careless driver).
    d.post_rx(8, 200);
    let socket = packet_socket(&ns, "tapbig", false);
    let mut big = GUEST_MAC.to_vec();
    big.extend_from_slice(&host_mac);
    big.extend_from_slice(&[0x88, 0xb5]);
    big.resize(1000, 0xaa);
    let mut small = big.clone();
    small.truncate(60);
    send_on(&socket, &big);
    send_on(&socket, &small);
    let got = receive(&mut d, 1, Duration::from_secs(3));
    let ours: Vec<_> = got
        .iter()
        .filter(|r| ethertype(&r.frame) == 0x88b5)
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].frame, small);
    assert!(NetStats::get(&d.stats.rx_dropped) >= 1);
}

#[test]
fn a_flooding_guest_is_served_in_budgets() {
    testkit::needs!(root);
    let ns = NetNs::new("vnetflood");
    let (tap, _) = tap(&ns, "tapf", None);
    let mut d = NetDriver::new(config(tap, GUEST_MAC), plain(), 1024);
    let frame = udp_frame(GUEST_MAC, [0xff; 6], 9, &[0; 18]);
    for _ in 0..1000 {
        d.transmit(&Header::default(), &frame);
    }
    let interrupt = vmm::devices::virtio::driver::CountingInterrupt::default();
    let more = d
        .handler
        .process_queue(1, &mut d.tx_queue, &d.mem, &interrupt, 256)
        .unwrap();
    assert!(more, "work left after one budget");
    assert_eq!(d.tx_done().len(), 256);
    while d
        .handler
        .process_queue(1, &mut d.tx_queue, &d.mem, &interrupt, 256)
        .unwrap()
    {}
    assert_eq!(d.tx_done().len(), 744);
    assert_eq!(Net::offered() & plain(), plain());
}

/// The device behind the real virtio-pci transport on a KVM VM (no vCPU
/// runs): vmd's identity, the MAC in the configuration space, queues set
/// up through BAR0, and frames moved by the device's own I/O thread — the
/// tap in its epoll for receiving, a queue notification for sending. The
/// option ROM answers behind the expansion ROM BAR once enabled.
#[test]
fn through_the_pci_transport_the_io_thread_moves_frames_both_ways() {
    testkit::needs!(root, kvm);
    use std::sync::{Arc, Mutex};
    use vm_memory::GuestAddress;
    use vmm::bus::{Bus, BusDevice};
    use vmm::devices::pci::root::PciDevice;
    use vmm::devices::pci::{PciConfigPorts, PciRoot};
    use vmm::devices::virtio::driver::{Descriptor, DriverQueue};
    use vmm::devices::virtio::pci::{TransportContext, VirtioPciDevice};
    use vmm::memory::GuestMemoryMmap;

    let ns = NetNs::new("vnetpci");
    let (tap, host_mac) = tap(&ns, "tappci", None);
    let socket = packet_socket(&ns, "tappci", false);
    let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm");
    let vm = Arc::new(kvm.create_vm().expect("KVM_CREATE_VM"));
    vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
    let (events, _) = std::sync::mpsc::channel();
    let ctx = TransportContext {
        vm: vm.clone(),
        router: Arc::new(vmm::irq_routing::GsiRouter::new(vm.clone())),
        mem: mem.clone(),
        lifecycle: Arc::new(vmm::lifecycle::Lifecycle::new(events)),
    };
    let rom: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let device = VirtioPciDevice::new(
        "test-vionet0",
        Box::new(Net::new(config(tap, GUEST_MAC))),
        vmm::devices::virtio::net::pci_identity(),
        5,
        ctx,
    )
    .unwrap()
    .with_option_rom(rom.clone());
    let device = Arc::new(Mutex::new(device));
    let (pio, mmio) = (Arc::new(Bus::new()), Arc::new(Bus::new()));
    let mut root = PciRoot::new(&pio, &mmio);
    root.add(Arc::new(Mutex::new(
        vmm::devices::pci::host_bridge::HostBridge::new(),
    )));
    root.add(device.clone()).unwrap();
    let mut ports = PciConfigPorts::new(Arc::new(Mutex::new(root)), Box::new(|| {}));
    let mut cfg = |reg: u32, write: Option<u32>| {
        ports.write(0, &(0x8000_0000u32 | 1 << 11 | reg).to_le_bytes());
        match write {
            Some(v) => {
                ports.write(4, &v.to_le_bytes());
                0
            }
            None => {
                let mut d = [0u8; 4];
                ports.read(4, &mut d);
                u32::from_le_bytes(d)
            }
        }
    };
    assert_eq!(cfg(0x00, None), 0x1041_1af4, "virtio-net, modern");
    assert_eq!(cfg(0x08, None), 0x0880_0001, "class 08/80, revision 1");
    assert_eq!(cfg(0x2c, None), 0x0001_0b5d, "subsystem 0b5d:0001");
    // The expansion ROM: sized, placed, enabled, read.
    cfg(0x30, Some(!1));
    assert_eq!(cfg(0x30, None), 0xffff_f000, "4 KiB for a 3000-byte ROM");
    cfg(0x30, Some(0xfe00_0001));
    let mut head = [0u8; 4];
    assert!(mmio.read(0xfe00_0000 + 100, &mut head));
    assert_eq!(head, [100, 101, 102, 103]);

    let bar0 = device.lock().unwrap().bars()[0].base;
    let reg_write = |offset: u64, value: u32, len: usize| {
        assert!(pio.write(bar0 + offset, &value.to_le_bytes()[..len]));
    };
    let reg_read = |offset: u64, len: usize| {
        let mut d = [0u8; 4];
        assert!(pio.read(bar0 + offset, &mut d[..len]));
        u32::from_le_bytes(d)
    };
    let mut mac = Vec::new();
    for i in 0..6 {
        mac.push(reg_read(0x300 + i, 1) as u8);
    }
    assert_eq!(mac, GUEST_MAC, "the MAC in the device configuration");
    assert_eq!(reg_read(0x306, 2), VIRTIO_NET_S_LINK_UP, "link up");

    // Negotiate VERSION_1 and MAC, set up both queues, DRIVER_OK.
    reg_write(0x14, 1 | 2, 1);
    reg_write(0x08, 0, 4);
    reg_write(0x0c, 1 << VIRTIO_NET_F_MAC, 4);
    reg_write(0x08, 1, 4);
    reg_write(0x0c, 1, 4);
    reg_write(0x14, 1 | 2 | 8, 1);
    let mut queues = Vec::new();
    for (index, at) in [(0u16, 0x1000u64), (1, 0x8000)] {
        let q = DriverQueue::new(&mem, at, 64);
        reg_write(0x16, u32::from(index), 2);
        reg_write(0x18, 64, 2);
        for (lo, addr) in [
            (0x20, q.desc_table()),
            (0x28, q.avail_ring()),
            (0x30, q.used_ring()),
        ] {
            reg_write(lo, addr as u32, 4);
            reg_write(lo + 4, (addr >> 32) as u32, 4);
        }
        reg_write(0x1c, 1, 2);
        queues.push(q);
    }
    reg_write(0x14, 1 | 2 | 8 | 4, 1);
    let (mut rx, mut tx) = {
        let mut it = queues.into_iter();
        (it.next().unwrap(), it.next().unwrap())
    };
    for i in 0..8 {
        rx.add_chain(&[Descriptor::writable(0x10_0000 + 0x1000 * i, 1526)]);
    }
    reg_write(0x100, 0, 2);

    // Host to guest: the I/O thread notices the tap by itself.
    let mut frame = GUEST_MAC.to_vec();
    frame.extend_from_slice(&host_mac);
    frame.extend_from_slice(&[0x88, 0xb5]);
    frame.extend_from_slice(b"through the I/O thread");
    frame.resize(60, 0);
    send_on(&socket, &frame);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut delivered = None;
    while delivered.is_none() && Instant::now() < deadline {
        while let Some((head, len)) = rx.pop_used() {
            let mut bytes = vec![0u8; len as usize];
            vm_memory::Bytes::read_slice(
                &mem,
                &mut bytes,
                GuestAddress(0x10_0000 + 0x1000 * u64::from(head)),
            )
            .unwrap();
            if bytes.len() > HEADER_LEN + 14
                && bytes[HEADER_LEN + 12..HEADER_LEN + 14] == [0x88, 0xb5]
            {
                delivered = Some(bytes[HEADER_LEN..].to_vec());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        delivered.as_deref(),
        Some(&frame[..]),
        "the frame in the receive ring"
    );
    assert_ne!(reg_read(0x200, 1) & 1, 0, "a queue interrupt is pending");

    // Guest to host: a notification on the transmit queue.
    let mut out = [0xffu8; 6].to_vec();
    out.extend_from_slice(&GUEST_MAC);
    out.extend_from_slice(&[0x88, 0xb5]);
    out.extend_from_slice(b"out through the I/O thread");
    out.resize(60, 0);
    let mut bytes = vec![0u8; HEADER_LEN];
    bytes.extend_from_slice(&out);
    vm_memory::Bytes::write_slice(&mem, &bytes, GuestAddress(0x20_0000)).unwrap();
    tx.add_chain(&[Descriptor::readable(0x20_0000, bytes.len() as u32)]);
    reg_write(0x100, 1, 2);
    let seen = recv_on(&socket, Duration::from_millis(500), |f| f == &out[..]);
    assert_eq!(seen.len(), 1, "the frame on the tap");
    assert!(tx.pop_used().is_some(), "the transmit buffer given back");
}
