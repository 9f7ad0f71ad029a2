//! virtio-rng driven through its queue in guest memory, without a guest:
//! the device fills exactly the buffers the driver offers (up to its
//! per-request limit) with random bytes, and rations them: a driver that
//! asks for more than the bucket holds gets the rest later, not at once.

use std::time::Instant;

use virtio_bindings::virtio_ring::VRING_USED_F_NO_NOTIFY;
use vmm::devices::virtio::driver::{
    CountingInterrupt, Descriptor, DriverQueue, guest_memory, read_guest, write_guest,
};
use vmm::devices::virtio::rng::{BURST, MAX_PER_CHAIN, RATE, Rng};
use vmm::devices::virtio::{QueueHandler, VirtioDevice};
use vmm::memory::GuestMemoryMmap;

const MEM: u64 = 16 << 20;
const QUEUE_AT: u64 = 0x1000;
const DATA: u64 = 0x10_0000;
const FILL: u8 = 0xaa;

struct RngDriver {
    mem: GuestMemoryMmap,
    queue: DriverQueue,
    device_queue: virtio_queue::Queue,
    handler: Box<dyn QueueHandler>,
    interrupt: CountingInterrupt,
}

impl RngDriver {
    fn new() -> RngDriver {
        let mem = guest_memory(MEM);
        let mut rng = Rng::new();
        let handler = rng.activate(rng.features());
        let queue = DriverQueue::new(&mem, QUEUE_AT, 64);
        let device_queue = queue.device_queue(false);
        RngDriver {
            mem,
            queue,
            device_queue,
            handler,
            interrupt: CountingInterrupt::default(),
        }
    }

    /// Offers writable buffers `(addr, len)` as one chain.
    fn offer(&mut self, buffers: &[(u64, u32)]) {
        let descs: Vec<Descriptor> = buffers
            .iter()
            .map(|&(addr, len)| {
                write_guest(&self.mem, addr, &vec![FILL; len as usize]);
                Descriptor::writable(addr, len)
            })
            .collect();
        self.queue.add_chain(&descs);
    }

    /// Serves once; returns whether the device left work for later and
    /// the completions.
    fn serve(&mut self) -> (bool, Vec<(u32, u32)>) {
        let more = self
            .handler
            .process_queue(0, &mut self.device_queue, &self.mem, &self.interrupt, 256)
            .expect("device works");
        (more, self.queue.take_used())
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        read_guest(&self.mem, addr, len)
    }
}

/// Whether `bytes` look written: 64 random bytes equal to the fill byte
/// all at once happen with probability 2^-512.
fn written(bytes: &[u8]) -> bool {
    bytes.chunks(64).all(|c| c.iter().any(|&b| b != FILL))
}

#[test]
fn the_device_fills_the_buffers_the_driver_asks_for() {
    let mut drv = RngDriver::new();
    drv.offer(&[(DATA, 64)]);
    drv.offer(&[(DATA + 0x1000, 100), (DATA + 0x2000, 4000)]);
    drv.offer(&[(DATA + 0x3000, 1)]);
    // The device-readable buffer a confused driver adds is left alone.
    write_guest(&drv.mem, DATA + 0x5000, &[FILL; 32]);
    drv.queue.add_chain(&[
        Descriptor::readable(DATA + 0x5000, 32),
        Descriptor::writable(DATA + 0x6000, 256),
    ]);
    write_guest(&drv.mem, DATA + 0x6000, &[FILL; 256]);
    let (more, done) = drv.serve();
    assert!(!more);
    let lengths: Vec<u32> = done.iter().map(|&(_, len)| len).collect();
    assert_eq!(lengths, [64, 4100, 1, 256]);
    assert!(written(&drv.bytes(DATA, 64)));
    assert!(written(&drv.bytes(DATA + 0x1000, 100)));
    assert!(written(&drv.bytes(DATA + 0x2000, 4000)));
    assert_eq!(drv.bytes(DATA + 0x5000, 32), vec![FILL; 32]);
    assert!(written(&drv.bytes(DATA + 0x6000, 256)));
    // Only the buffers: the bytes around them are untouched.
    assert_eq!(drv.bytes(DATA + 64, 64), vec![0; 64]);
    assert_eq!(drv.bytes(DATA + 0x2000 + 4000, 8), vec![0; 8]);
    // Two fills differ.
    drv.offer(&[(DATA, 64)]);
    let first = drv.bytes(DATA + 0x1000, 64);
    drv.serve();
    assert_ne!(drv.bytes(DATA, 64), first);
    assert!(
        drv.interrupt
            .queue
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
}

#[test]
fn one_request_gets_at_most_64_kib() {
    let mut drv = RngDriver::new();
    drv.offer(&[(DATA, 100 << 10)]);
    let (_, done) = drv.serve();
    assert_eq!(done[0].1 as u64, MAX_PER_CHAIN);
    assert!(written(&drv.bytes(DATA, MAX_PER_CHAIN as usize)));
    assert_eq!(
        drv.bytes(DATA + MAX_PER_CHAIN, 1024),
        vec![FILL; 1024],
        "nothing past the limit"
    );
}

#[test]
fn a_greedy_driver_is_rationed() {
    let mut drv = RngDriver::new();
    let chains = 2 * BURST / MAX_PER_CHAIN;
    for i in 0..chains {
        drv.offer(&[(DATA + i * MAX_PER_CHAIN, MAX_PER_CHAIN as u32)]);
    }
    let started = Instant::now();
    let (more, done) = drv.serve();
    let served: u64 = done.iter().map(|&(_, len)| u64::from(len)).sum();
    // The burst and one chain of debt, plus what the time taken earned.
    let earned = RATE * started.elapsed().as_millis() as u64 / 1000;
    assert!(more, "chains were left for later");
    assert!(served >= BURST, "{served}");
    assert!(served <= BURST + MAX_PER_CHAIN + earned, "{served}");
    // They come as the bucket refills: all of them within a second.
    let mut total = served;
    while total < chains * MAX_PER_CHAIN {
        assert!(started.elapsed().as_secs() < 5, "the rest never came");
        let (_, done) = drv.serve();
        total += done.iter().map(|&(_, len)| u64::from(len)).sum::<u64>();
    }
    // What came after the burst and the one chain of debt came no
    // faster than the rate.
    let paced = total - BURST - MAX_PER_CHAIN;
    let least = std::time::Duration::from_secs_f64(paced as f64 / RATE as f64);
    assert!(
        started.elapsed() >= least,
        "{total} bytes in {:?}, faster than {RATE} bytes/s after the burst",
        started.elapsed()
    );
}

#[test]
fn an_empty_bucket_leaves_notifications_on() {
    // One chain more than the burst: the last one served puts the bucket
    // in debt with the ring empty.
    let mut drv = RngDriver::new();
    let chains = BURST / MAX_PER_CHAIN + 1;
    for i in 0..chains {
        drv.offer(&[(DATA + i * MAX_PER_CHAIN, MAX_PER_CHAIN as u32)]);
    }
    let mut served = 0;
    while served < chains {
        served += drv.serve().1.len() as u64;
    }
    // The used ring's flags: the driver must kick for its next request,
    // or it would wait for ever.
    let flags = read_guest(&drv.mem, drv.queue.used_ring(), 2);
    assert_eq!(
        u16::from_le_bytes([flags[0], flags[1]]) & VRING_USED_F_NO_NOTIFY as u16,
        0
    );
}
