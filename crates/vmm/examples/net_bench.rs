//! Device-level virtio-net benchmark, no guest: frames through split
//! virtqueues in guest memory, served by the real network handler to and
//! from a tap, next to a plain loop of `writev`/`readv` on a tap with the
//! same frames, which is what the device could at best achieve. Small
//! frames measure packets/s, 64 KiB segmentation-offload frames Gbit/s.
//! Received frames are queued in the tap through a packet socket, 200 at
//! a time, and then drained, the same for device and limit (a sender
//! thread racing the reader for two CPUs made rounds differ by a third).
//! The limit's buffers are guest memory laid out as the device's.
//!
//! Rates are per second of the serving thread's own time: the device's
//! time inside its handler (what its I/O thread spends; the guest's
//! driver work runs on the guest's CPUs), the limit's time inside
//! `writev`/`readv`; neither counts queueing frames. Device and limit
//! alternate five times per pattern; medians are printed.
//!
//! Runs in a network namespace of its own (root).
//! `cargo run --release -p vmm --example net_bench [word ...]`, where the
//! words pick patterns (`tx`, `rx`, `64-byte`, `TSO`); bench/net-bench.sh
//! runs them all.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use guestnet::tap::{Tap, offload, set_offloads};
use virtio_bindings::virtio_net::*;
use vmm::devices::virtio::TRANSPORT_FEATURES;
use vmm::devices::virtio::driver::Descriptor;
use vmm::devices::virtio::net::NetConfig;
use vmm::devices::virtio::net::driver::{NetDriver, RX_BUFFERS, SLOT, memory_size, tx_buffers};
use vmm::devices::virtio::net::frame::{HEADER_LEN, Header};

const QUEUE_SIZE: u16 = 256;
const RUN: Duration = Duration::from_millis(600);
/// Device and limit runs alternate this many times per pattern; medians
/// are reported, so that a moment of load on the machine moves neither.
const ROUNDS: usize = 5;
/// Frames the host queues in the tap before the receiver drains them:
/// receive is measured on a full queue, not racing a sender for the CPUs.
const QUEUED: usize = 200;
const RX_BUFFER: u32 = 4096;
const MAC: [u8; 6] = [0xfe, 0xe1, 0xbb, 0xd1, 0, 1];
/// Not the tap's MAC: the host stack drops these frames at once, so the
/// measurement is the path to and from the tap, not the host's IP stack.
const ELSEWHERE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

#[derive(Clone, Copy)]
struct Pattern {
    name: &'static str,
    frame: usize,
    gso: bool,
}

const SMALL: Pattern = Pattern {
    name: "64-byte frames",
    frame: 60,
    gso: false,
};
const LARGE: Pattern = Pattern {
    name: "64 KiB TSO frames",
    frame: 65000,
    gso: true,
};

fn features(p: Pattern) -> u64 {
    let mut f = TRANSPORT_FEATURES | 1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_MRG_RXBUF;
    if p.gso {
        for bit in [
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_GUEST_TSO4,
        ] {
            f |= 1 << bit;
        }
    }
    f
}

/// An IPv4/TCP frame of `len` bytes, and the header that asks the host to
/// finish it (checksum, and segmentation for large frames).
fn frame(p: Pattern) -> (Header, Vec<u8>) {
    let payload = p.frame - 54;
    let builder = etherparse_free_tcp(payload);
    let header = if p.gso {
        Header {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4 as u8,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        }
    } else {
        Header::default()
    };
    (header, builder)
}

/// Ethernet, IPv4 and TCP headers written by hand (the example needs no
/// packet library), then `payload` bytes.
fn etherparse_free_tcp(payload: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload);
    f.extend_from_slice(&ELSEWHERE);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (40 + payload).min(65535) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1]);
    f.extend_from_slice(&[
        0x13, 0x88, 0x17, 0x70, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.resize(54 + payload, 0x5a);
    f
}

fn new_tap(name: &str) -> Tap {
    let tap = Tap::create(Some(name)).expect("tap");
    let out = std::process::Command::new("ip")
        .args(["link", "set", name, "up"])
        .output()
        .expect("ip");
    assert!(out.status.success());
    tap
}

/// The limit loops' buffers: guest memory of the same size as the
/// device's, the buffers at the same places in it, so that device and
/// limit read and write memory the system backs and caches alike.
struct LimitMemory(vmm::memory::GuestMemoryMmap);

impl LimitMemory {
    fn new() -> LimitMemory {
        LimitMemory(vmm::devices::virtio::driver::guest_memory(memory_size(
            QUEUE_SIZE,
        )))
    }

    /// The buffers' area: where the device's receive buffers are, or its
    /// transmit buffers.
    fn bytes(&mut self, at: u64) -> &mut [u8] {
        use vm_memory::{GuestAddress, GuestMemoryBackend};
        let len = SLOT as usize * usize::from(QUEUE_SIZE);
        let slice = self.0.get_slice(GuestAddress(at), len).expect("one region");
        // SAFETY: the slice maps `len` bytes that live as long as
        // `self`, which the returned borrow ties them to; nothing else
        // touches this memory.
        unsafe { std::slice::from_raw_parts_mut(slice.ptr_guard_mut().as_ptr(), len) }
    }
}

/// Frames per second and bits per second of a run.
struct Rate {
    frames: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Rate {
    fn pps(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64()
    }

    fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

fn tx_limit(p: Pattern) -> Rate {
    let tap = new_tap("bench-tx0");
    if p.gso {
        set_offloads(
            std::os::fd::AsFd::as_fd(tap.file()),
            offload::CSUM | offload::TSO4,
        )
        .unwrap();
    }
    // The same frames in as many buffers, as far apart, as the device's
    // transmit buffers: the same memory to read.
    let (header, frame) = frame(p);
    let mut memory = LimitMemory::new();
    let mut iovs = Vec::new();
    for slot in memory
        .bytes(tx_buffers(QUEUE_SIZE))
        .chunks_mut(SLOT as usize)
    {
        slot[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        slot[HEADER_LEN..HEADER_LEN + frame.len()].copy_from_slice(&frame);
        iovs.push(libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: HEADER_LEN + frame.len(),
        });
    }
    let fd = tap.file().as_raw_fd();
    let start = Instant::now();
    let mut frames = 0u64;
    while start.elapsed() < RUN {
        for iov in &iovs {
            // SAFETY: the iovec points into `memory`.
            let n = unsafe { libc::writev(fd, iov, 1) };
            assert!(n > 0, "{}", std::io::Error::last_os_error());
            frames += 1;
        }
    }
    Rate {
        frames,
        bytes: frames * p.frame as u64,
        elapsed: start.elapsed(),
    }
}

/// A driver for a device on `tap` that took `p`'s features.
fn driver(tap: &Tap, p: Pattern) -> NetDriver {
    let cfg = NetConfig {
        name: "bench".into(),
        tap: tap.file().try_clone().unwrap(),
        guest_mac: MAC,
        locked: false,
        lease: None,
    };
    NetDriver::new(cfg, features(p), QUEUE_SIZE)
}

fn tx_device(p: Pattern) -> Rate {
    let tap = new_tap("bench-tx1");
    let mut d = driver(&tap, p);
    let (header, frame) = frame(p);
    // Every slot holds the frame once; the same chains are offered again
    // and again, as a driver recycles its buffers.
    let mut heads = Vec::new();
    for _ in 0..QUEUE_SIZE {
        heads.push(d.transmit(&header, &frame));
    }
    d.process_tx().unwrap();
    while d.tx.pop_used().is_some() {}
    let start = Instant::now();
    let mut frames = 0u64;
    let mut busy = Duration::ZERO;
    while start.elapsed() < RUN {
        for &head in &heads {
            d.tx.make_available(head);
        }
        let serving = Instant::now();
        d.process_tx().unwrap();
        busy += serving.elapsed();
        while d.tx.pop_used().is_some() {
            frames += 1;
        }
    }
    Rate {
        frames,
        bytes: frames * p.frame as u64,
        elapsed: busy,
    }
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

/// What the host sends the guest: `p`'s frames written into the tap
/// `ifname` through a packet socket (the host side of a tap).
struct Sender {
    fd: OwnedFd,
    bytes: Vec<u8>,
}

impl Sender {
    fn new(ifname: &str, p: Pattern) -> Sender {
        let index = if_index(ifname);
        let (header, mut frame) = frame(p);
        // Toward the guest.
        frame[0..6].copy_from_slice(&MAC);
        frame[6..12].copy_from_slice(&ELSEWHERE);
        let fd = {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: a plain socket call.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            // SAFETY: `fd` is a new descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let one: libc::c_int = 1;
            // SAFETY: sets an int option on a descriptor we own.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_VNET_HDR,
                    (&one as *const libc::c_int).cast(),
                    4,
                )
            };
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
        };
        let mut bytes = header.to_bytes()[..10].to_vec();
        bytes.extend_from_slice(&frame);
        Sender { fd, bytes }
    }

    /// Queues [`QUEUED`] frames in the tap for the reader to drain.
    fn fill(&self) {
        for _ in 0..QUEUED {
            // SAFETY: sends `bytes`.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    self.bytes.as_ptr().cast(),
                    self.bytes.len(),
                    0,
                )
            };
            assert!(n > 0, "send: {}", std::io::Error::last_os_error());
        }
    }
}

fn rx_limit(p: Pattern) -> Rate {
    let tap = new_tap("bench-rx0");
    if p.gso {
        set_offloads(
            std::os::fd::AsFd::as_fd(tap.file()),
            offload::CSUM | offload::TSO4,
        )
        .unwrap();
    }
    let sender = Sender::new("bench-rx0", p);
    // Read into buffers laid out like the device's receive buffers: one
    // RX_BUFFER at the start of each slot, as many in turn as a frame of
    // this pattern needs (a 64 KiB frame spans 17 of them, as it does in
    // the device's mergeable buffers).
    let mut memory = LimitMemory::new();
    let per_frame = (HEADER_LEN + p.frame).div_ceil(RX_BUFFER as usize);
    let (mut frames, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let mut busy = Duration::ZERO;
    let mut slot = 0usize;
    let base = memory.bytes(RX_BUFFERS).as_mut_ptr();
    let mut iovs = Vec::with_capacity(per_frame);
    while start.elapsed() < RUN {
        sender.fill();
        // Timed as the device is: the whole drain, down to the read that
        // finds the queue empty.
        let reading = Instant::now();
        loop {
            iovs.clear();
            for i in 0..per_frame {
                let at = (slot + i) % usize::from(QUEUE_SIZE) * SLOT as usize;
                iovs.push(libc::iovec {
                    // SAFETY: `at + RX_BUFFER` lies inside `memory`.
                    iov_base: unsafe { base.add(at) }.cast(),
                    iov_len: RX_BUFFER as usize,
                });
            }
            // SAFETY: every iovec is a range of `memory`.
            let n =
                unsafe { libc::readv(tap.file().as_raw_fd(), iovs.as_ptr(), iovs.len() as i32) };
            if n <= HEADER_LEN as isize {
                break;
            }
            frames += 1;
            bytes += (n as usize - HEADER_LEN) as u64;
            slot = (slot + per_frame) % usize::from(QUEUE_SIZE);
        }
        busy += reading.elapsed();
    }
    Rate {
        frames,
        bytes,
        elapsed: busy,
    }
}

fn rx_device(p: Pattern) -> Rate {
    let tap = new_tap("bench-rx1");
    let mut d = driver(&tap, p);
    for i in 0..QUEUE_SIZE {
        let addr = RX_BUFFERS + SLOT * u64::from(i);
        d.rx.add_chain(&[Descriptor::writable(addr, RX_BUFFER)]);
    }
    let sender = Sender::new("bench-rx1", p);
    let mut bytes = 0u64;
    let start = Instant::now();
    let mut busy = Duration::ZERO;
    while start.elapsed() < RUN {
        sender.fill();
        loop {
            let serving = Instant::now();
            d.process_rx().unwrap();
            busy += serving.elapsed();
            // The driver hands the buffers back, as a guest's would
            // after taking the frames.
            let mut got = false;
            while let Some((head, len)) = d.rx.pop_used() {
                got = true;
                bytes += u64::from(len);
                d.rx.make_available(head as u16);
            }
            if !got {
                break;
            }
        }
    }
    let frames = vmm::devices::virtio::net::handler::NetStats::get(&d.stats.rx_frames);
    let dropped = vmm::devices::virtio::net::handler::NetStats::get(&d.stats.rx_dropped);
    if dropped > 0 {
        println!("    (device dropped {dropped} frames)");
    }
    // Buffer bytes include each frame's header.
    Rate {
        frames,
        bytes: bytes - frames * HEADER_LEN as u64,
        elapsed: busy,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Runs device and limit in turn [`ROUNDS`] times; prints the medians,
/// their ratio, and the spread of the rounds' ratios.
fn compare(what: &str, p: Pattern, device: fn(Pattern) -> Rate, limit: fn(Pattern) -> Rate) {
    let rate = |r: &Rate| if p.gso { r.gbps() } else { r.pps() / 1e3 };
    let unit = if p.gso { "Gbit/s" } else { "kpps" };
    let (mut d, mut l, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pps, mut gbps) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (dr, lr) = (device(p), limit(p));
        ratios.push(rate(&dr) / rate(&lr));
        pps.push(dr.pps());
        gbps.push(dr.gbps());
        d.push(rate(&dr));
        l.push(rate(&lr));
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    let (d, l) = (median(d), median(l));
    println!(
        "{what:<3} {:<18} device {d:>9.2} {unit:<6} ({:>8.0} pps, {:>6.2} Gbit/s)  limit {l:>9.2} {unit:<6}  ratio {:.2} (rounds {lo:.2}-{hi:.2})",
        p.name,
        median(pps),
        median(gbps),
        d / l
    );
}

fn main() {
    // SAFETY: moves this single-threaded process into a fresh network
    // namespace before anything else runs.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "net_bench: unshare(CLONE_NEWNET): {} (run as root)",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    println!(
        "net_bench: {} CPUs, {ROUNDS} rounds of {} ms per run, medians",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        RUN.as_millis()
    );
    // Optional filters: a word of the pattern name, a direction.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |what: &str| args.is_empty() || args.iter().any(|a| what.contains(a.as_str()));
    for p in [SMALL, LARGE] {
        if wanted(&format!("tx {}", p.name)) {
            compare("tx", p, tx_device, tx_limit);
        }
        if wanted(&format!("rx {}", p.name)) {
            compare("rx", p, rx_device, rx_limit);
        }
    }
}
