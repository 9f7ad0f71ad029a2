//! The virtio-pci transport on a real KVM VM (no vCPU runs): identity and
//! capabilities in configuration space, BAR relocation moving the bus
//! range and the notify ioeventfds, feature negotiation and queue setup
//! through BAR0, requests served by the device's I/O thread, INTx ISR,
//! MSI-X masking, NEEDS_RESET, and silence after a reset.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use disk::DiskFormat;
use kvm_ioctls::{IoEventAddress, Kvm};
use testkit::tmp::TempDir;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN};
use vm_memory::GuestAddress;
use vmm::bus::Bus;
use vmm::devices::pci::root::PciDevice;
use vmm::devices::pci::{PciConfigPorts, PciRoot};
use vmm::devices::virtio::blk::driver::header_bytes;
use vmm::devices::virtio::blk::{self, Blk};
use vmm::devices::virtio::driver::{Descriptor, DriverQueue};
use vmm::devices::virtio::pci::{TransportContext, VirtioPciDevice};
use vmm::irq_routing::GsiRouter;
use vmm::lifecycle::Lifecycle;
use vmm::memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 8 << 20;
const QUEUE_AT: u64 = 0x1000;

struct Rig {
    _dir: TempDir,
    device: Arc<Mutex<VirtioPciDevice>>,
    ports: PciConfigPorts,
    pio: Arc<Bus>,
    mem: GuestMemoryMmap,
    vm: Arc<kvm_ioctls::VmFd>,
    lifecycle: Arc<Lifecycle>,
    _kvm: Kvm,
}

fn rig() -> Rig {
    rig_on(None)
}

/// A rig whose disk is the raw image at `image`, or a new one.
fn rig_on(image: Option<&std::path::Path>) -> Rig {
    let kvm = Kvm::new().expect("/dev/kvm");
    let vm = Arc::new(kvm.create_vm().expect("KVM_CREATE_VM"));
    vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let (tx, _rx) = mpsc::channel();
    let lifecycle = Arc::new(Lifecycle::new(tx));
    let ctx = TransportContext {
        vm: vm.clone(),
        router: Arc::new(GsiRouter::new(vm.clone())),
        mem: mem.clone(),
        lifecycle: lifecycle.clone(),
    };
    let dir = TempDir::new("virtio-pci");
    let backend = match image {
        Some(path) => disk::ImageChain::open(
            path.to_str().unwrap(),
            DiskFormat::Raw,
            disk::Access::ReadWrite,
        )
        .and_then(disk::ImageChain::into_backend)
        .unwrap(),
        None => disk::create_image(&dir.join("d.img"), DiskFormat::Raw, 1 << 20).unwrap(),
    };
    let device = VirtioPciDevice::new(
        "test-vioblk",
        Box::new(Blk::new(Arc::from(backend), "/x/d.img")),
        blk::pci_identity(),
        5,
        ctx,
    )
    .expect("transport");
    let device = Arc::new(Mutex::new(device));
    let pio = Arc::new(Bus::new());
    let mmio = Arc::new(Bus::new());
    let mut root = PciRoot::new(&pio, &mmio);
    root.add(Arc::new(Mutex::new(
        vmm::devices::pci::host_bridge::HostBridge::new(),
    )));
    assert_eq!(root.add(device.clone()), Some(1));
    let ports = PciConfigPorts::new(Arc::new(Mutex::new(root)), Box::new(|| {}));
    Rig {
        _dir: dir,
        device,
        ports,
        pio,
        mem,
        vm,
        lifecycle,
        _kvm: kvm,
    }
}

impl Rig {
    fn cfg_read(&mut self, reg: u32) -> u32 {
        use vmm::bus::BusDevice;
        self.ports
            .write(0, &(0x8000_0000u32 | 1 << 11 | reg).to_le_bytes());
        let mut d = [0u8; 4];
        self.ports.read(4, &mut d);
        u32::from_le_bytes(d)
    }

    fn cfg_write(&mut self, reg: u32, value: u32) {
        use vmm::bus::BusDevice;
        self.ports
            .write(0, &(0x8000_0000u32 | 1 << 11 | reg).to_le_bytes());
        self.ports.write(4, &value.to_le_bytes());
    }

    fn bar0(&mut self) -> u64 {
        u64::from(self.cfg_read(0x10) & !0x3)
    }

    fn reg_read(&self, offset: u64, len: usize) -> u32 {
        let mut d = [0u8; 4];
        let base = self.bar0_cached();
        assert!(self.pio.read(base + offset, &mut d[..len]), "BAR0 mapped");
        u32::from_le_bytes(d)
    }

    fn bar0_cached(&self) -> u64 {
        let dev = self.device.lock().unwrap();
        dev.bars()[0].base
    }

    fn reg_write(&self, offset: u64, value: u32, len: usize) {
        let base = self.bar0_cached();
        assert!(self.pio.write(base + offset, &value.to_le_bytes()[..len]));
    }

    /// Negotiates VERSION_1 (and what `extra` adds), sets queue 0 of
    /// `size` up at QUEUE_AT, and sets DRIVER_OK.
    fn start_driver(&self, size: u16) -> DriverQueue {
        self.reg_write(0x14, 1 | 2, 1);
        self.reg_write(0x08, 1, 4);
        self.reg_write(0x0c, 1, 4); // VERSION_1
        self.reg_write(0x14, 1 | 2 | 8, 1);
        assert_eq!(self.reg_read(0x14, 1) & 8, 8, "FEATURES_OK kept");
        let q = DriverQueue::new(&self.mem, QUEUE_AT, size.next_power_of_two());
        self.reg_write(0x16, 0, 2);
        self.reg_write(0x18, u32::from(size), 2);
        for (lo, addr) in [
            (0x20, q.desc_table()),
            (0x28, q.avail_ring()),
            (0x30, q.used_ring()),
        ] {
            self.reg_write(lo, addr as u32, 4);
            self.reg_write(lo + 4, (addr >> 32) as u32, 4);
        }
        self.reg_write(0x1c, 1, 2);
        self.reg_write(0x14, 1 | 2 | 8 | 4, 1);
        q
    }

    fn status(&self) -> u8 {
        self.reg_read(0x14, 1) as u8
    }

    fn kick(&self) {
        self.reg_write(0x100, 0, 2);
    }
}

fn flush_request(mem: &GuestMemoryMmap, q: &mut DriverQueue) {
    use vm_memory::Bytes;
    mem.write_slice(&header_bytes(VIRTIO_BLK_T_FLUSH, 0), GuestAddress(0x10000))
        .unwrap();
    q.add_chain(&[
        Descriptor::readable(0x10000, 16),
        Descriptor::writable(0x10100, 1),
    ]);
}

fn wait_used(q: &mut DriverQueue) -> Option<(u32, u32)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(c) = q.pop_used() {
            return Some(c);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
fn identity_capabilities_and_bars() {
    let mut r = rig();
    assert_eq!(r.cfg_read(0x00), 0x1042_1af4);
    assert_eq!(r.cfg_read(0x08), 0x0100_0001, "class 01/00, revision 1");
    assert_eq!(r.cfg_read(0x2c), 0x0002_0b5d, "subsystem 0b5d:0002");
    assert_eq!(r.cfg_read(0x3c) & 0xffff, 0x0105, "INTA, IRQ 5");
    assert_eq!(r.cfg_read(0x04) & 0x3, 0x3, "decoding on from the start");
    assert_eq!(r.bar0(), 0x1000, "vmd's first BAR address");
    // Walk the capability list.
    assert_ne!(r.cfg_read(0x04) >> 16 & 0x10, 0, "capability list");
    let mut at = r.cfg_read(0x34) & 0xff;
    let mut found = Vec::new();
    while at != 0 {
        let head = r.cfg_read(at);
        let (id, next) = (head & 0xff, head >> 8 & 0xff);
        if id == 0x09 {
            found.push(format!("virtio{}", head >> 24));
        } else {
            found.push(format!("cap{id:#x}"));
        }
        at = next;
    }
    assert_eq!(
        found,
        [
            "virtio1", "virtio2", "virtio3", "virtio4", "virtio5", "cap0x11"
        ]
    );
    // Sizing: BAR0 is 4 KiB of I/O, BAR1 4 KiB of memory, the rest absent.
    r.cfg_write(0x10, 0xffff_ffff);
    assert_eq!(r.cfg_read(0x10), 0xffff_f001);
    r.cfg_write(0x14, 0xffff_ffff);
    assert_eq!(r.cfg_read(0x14), 0xffff_f000);
    r.cfg_write(0x18, 0xffff_ffff);
    assert_eq!(r.cfg_read(0x18), 0);
    r.cfg_write(0x30, 0xffff_ffff);
    assert_eq!(r.cfg_read(0x30), 0, "no option ROM");
}

#[test]
fn moving_bar0_moves_the_registers_and_the_notify_ioeventfd() {
    let mut r = rig();
    let probe = EventFd::new(0).unwrap();
    // The device's ioeventfd sits at the old notify address: KVM refuses a
    // second registration there.
    assert!(
        r.vm.register_ioevent(&probe, &IoEventAddress::Pio(0x1100), 0u16)
            .is_err()
    );
    r.cfg_write(0x10, 0xc000);
    assert_eq!(r.bar0(), 0xc000);
    let mut d = [0u8; 2];
    assert!(!r.pio.read(0x1012, &mut d), "old range gone");
    assert!(r.pio.read(0xc012, &mut d), "new range there");
    assert_eq!(u16::from_le_bytes(d), 1, "num_queues at its new place");
    assert!(
        r.vm.register_ioevent(&probe, &IoEventAddress::Pio(0xc100), 0u16)
            .is_err(),
        "ioeventfd moved along"
    );
    r.vm.register_ioevent(&probe, &IoEventAddress::Pio(0x1100), 0u16)
        .expect("old notify address free");
    r.vm.unregister_ioevent(&probe, &IoEventAddress::Pio(0x1100), 0u16)
        .unwrap();
    // Disabling I/O decoding takes the BAR off the bus.
    let command = r.cfg_read(0x04) & 0xffff;
    r.cfg_write(0x04, command & !1);
    assert!(!r.pio.read(0xc012, &mut d));
    r.cfg_write(0x04, command);
    assert!(r.pio.read(0xc012, &mut d));
}

#[test]
fn requests_are_served_off_the_vcpu_and_intx_isr_reads_clear() {
    let r = rig();
    let mut q = r.start_driver(64);
    assert_eq!(r.status(), 1 | 2 | 4 | 8);
    flush_request(&r.mem, &mut q);
    r.kick();
    let done = wait_used(&mut q).expect("flush completed");
    assert_eq!(done, (0, 1));
    assert_eq!(r.reg_read(0x200, 1), 1, "queue interrupt in the ISR");
    assert_eq!(r.reg_read(0x200, 1), 0, "read-to-clear");
}

#[test]
fn after_a_reset_the_device_serves_nothing() {
    let r = rig();
    let mut q = r.start_driver(64);
    r.reg_write(0x14, 0, 1);
    assert_eq!(r.status(), 0);
    assert_eq!(r.reg_read(0x1c, 2), 0, "queue disabled");
    flush_request(&r.mem, &mut q);
    r.kick();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(q.pop_used(), None);
    // Set up again, the same queue works.
    let mut q = r.start_driver(64);
    flush_request(&r.mem, &mut q);
    r.kick();
    assert!(wait_used(&mut q).is_some());
}

#[test]
fn a_broken_chain_sets_needs_reset_and_raises_a_config_interrupt() {
    use vm_memory::Bytes;
    let r = rig();
    let mut q = r.start_driver(64);
    r.mem
        .write_slice(&header_bytes(VIRTIO_BLK_T_IN, 0), GuestAddress(0x10000))
        .unwrap();
    // A chain that points back at itself.
    q.write_descriptor(
        0,
        Descriptor {
            addr: 0x10000,
            len: 16,
            flags: virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16,
            next: 0,
        },
    );
    q.make_available(0);
    r.kick();
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.status() & 0x40 == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(r.status() & 0x40, 0x40, "NEEDS_RESET");
    assert_eq!(r.reg_read(0x200, 1) & 2, 2, "configuration interrupt");
    // Reset clears it.
    r.reg_write(0x14, 0, 1);
    assert_eq!(r.status(), 0);
}

#[test]
fn an_unusable_queue_setup_sets_needs_reset_at_driver_ok() {
    let r = rig();
    let _q = r.start_driver(100);
    assert_eq!(r.status() & 0x40, 0x40, "size 100 is not a power of two");
}

#[test]
fn msix_vectors_are_masked_pending_and_delivered() {
    let mut r = rig();
    // Enable MSI-X with the function masked.
    let cap = {
        let mut at = r.cfg_read(0x34) & 0xff;
        while r.cfg_read(at) & 0xff != 0x11 {
            at = r.cfg_read(at) >> 8 & 0xff;
        }
        at
    };
    let head = r.cfg_read(cap);
    assert_eq!((head >> 16) & 0x7ff, 1, "two vectors: config and queue 0");
    assert_eq!(r.cfg_read(cap + 4), 0x1, "table in BAR1 at 0");
    assert_eq!(r.cfg_read(cap + 8), 0x801, "PBA in BAR1 at 0x800");
    r.cfg_write(cap, (1 << 31) | (1 << 30));
    let bar1 = {
        let dev = r.device.lock().unwrap();
        dev.bars()[1].base
    };
    assert_eq!(bar1, vmm::memory::PCI_HOLE_START);
    // Program vector 1 (masked by default) and map queue 0 to it.
    let mut dev = r.device.lock().unwrap();
    dev.bar_write(1, 16, &0xfee0_0000u32.to_le_bytes());
    dev.bar_write(1, 24, &0x41u32.to_le_bytes());
    drop(dev);
    let mut q = r.start_driver(64);
    r.reg_write(0x16, 0, 2);
    r.reg_write(0x1a, 1, 2);
    assert_eq!(r.reg_read(0x1a, 2), 1);
    r.reg_write(0x10, 0, 2);
    flush_request(&r.mem, &mut q);
    r.kick();
    assert!(wait_used(&mut q).is_some());
    let device = r.device.clone();
    let pba = || {
        let mut b = [0u8; 1];
        device.lock().unwrap().bar_read(1, 0x800, &mut b);
        b[0]
    };
    assert_eq!(pba(), 0b10, "vector 1 pending while masked");
    assert_eq!(r.reg_read(0x200, 1) & 1, 0, "no ISR bit with MSI-X");
    // Unmask the vector and the function: the pending bit is delivered.
    r.device
        .lock()
        .unwrap()
        .bar_write(1, 28, &0u32.to_le_bytes());
    r.cfg_write(cap, 1 << 31);
    assert_eq!(pba(), 0);
}

#[test]
fn a_paused_vm_gets_no_disk_service_until_it_resumes() {
    let r = rig();
    let mut q = r.start_driver(64);
    r.lifecycle.pause(0);
    flush_request(&r.mem, &mut q);
    r.kick();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(q.pop_used(), None, "guest memory holds still while paused");
    r.lifecycle.resume();
    assert!(wait_used(&mut q).is_some());
}

/// The used ring's index and the chain heads in it, as the driver sees
/// them in guest memory.
fn used_ring(mem: &GuestMemoryMmap, q: &DriverQueue) -> (u16, Vec<u32>) {
    use vm_memory::Bytes;
    let idx: u16 = mem.read_obj(GuestAddress(q.used_ring() + 2)).unwrap();
    let heads = (0..idx)
        .map(|i| {
            let at = q.used_ring() + 4 + 8 * u64::from(i % q.size());
            mem.read_obj::<u32>(GuestAddress(at)).unwrap()
        })
        .collect();
    (idx, heads)
}

#[test]
fn a_device_moved_while_serving_does_every_request_exactly_once() {
    use virtio_bindings::virtio_blk::VIRTIO_BLK_T_OUT;
    use vm_memory::Bytes;
    use vmm::devices::persist::Persist;
    // Three descriptors a request: both batches fit the 128-entry table.
    const HALF: u16 = 21;
    const STATUS_AT: u64 = 0x20000;
    let sector_data = |i: u16| vec![(i as u8).wrapping_mul(7).wrapping_add(1); 512];
    let a = rig();
    let mut q = a.start_driver(128);
    let submit = |q: &mut DriverQueue, i: u16| {
        let header = 0x10000 + 16 * u64::from(i);
        let data = 0x100000 + 512 * u64::from(i);
        a.mem
            .write_slice(
                &header_bytes(VIRTIO_BLK_T_OUT, u64::from(i)),
                GuestAddress(header),
            )
            .unwrap();
        a.mem
            .write_slice(&sector_data(i), GuestAddress(data))
            .unwrap();
        a.mem
            .write_obj(0xaau8, GuestAddress(STATUS_AT + u64::from(i)))
            .unwrap();
        q.add_chain(&[
            Descriptor::readable(header, 16),
            Descriptor::readable(data, 512),
            Descriptor::writable(STATUS_AT + u64::from(i), 1),
        ]);
    };
    for i in 0..HALF {
        submit(&mut q, i);
    }
    a.kick();
    let deadline = Instant::now() + Duration::from_secs(5);
    while used_ring(&a.mem, &q).0 < HALF && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // A second batch, and the VM stops while the device may be at it.
    for i in HALF..2 * HALF {
        submit(&mut q, i);
    }
    a.kick();
    a.lifecycle.pause(0);
    let state = a.device.lock().unwrap().save().expect("save");

    // What the sender's memory says agrees with itself: the requests on
    // the used ring are done, the others untouched, and nothing moves.
    let (done, heads) = used_ring(&a.mem, &q);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(used_ring(&a.mem, &q).0, done, "a paused device holds still");
    let status = |mem: &GuestMemoryMmap, i: u16| {
        mem.read_obj::<u8>(GuestAddress(STATUS_AT + u64::from(i)))
            .unwrap()
    };
    for i in 0..2 * HALF {
        let expected = if i < done { 0 } else { 0xaa };
        assert_eq!(status(&a.mem, i), expected, "request {i} of {done} done");
    }
    assert_eq!(heads.len(), usize::from(done));

    // The sender goes away (its disk lock with it); the receiver gets
    // guest memory as sent, the same disk, the state.
    let mut memory = vec![0u8; MEM];
    a.mem.read_slice(&mut memory, GuestAddress(0)).unwrap();
    let Rig {
        _dir: dir,
        device,
        ports,
        pio,
        ..
    } = a;
    // The bus's BAR windows hold the device too.
    drop((device, ports, pio));
    let image = dir.join("d.img");
    let b = rig_on(Some(&image));
    b.mem.write_slice(&memory, GuestAddress(0)).unwrap();
    b.lifecycle.hold();
    b.device.lock().unwrap().restore(&state).expect("restore");
    assert_eq!(b.status(), 1 | 2 | 4 | 8, "DRIVER_OK came across");
    b.lifecycle.resume();
    let deadline = Instant::now() + Duration::from_secs(5);
    while used_ring(&b.mem, &q).0 < 2 * HALF && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (idx, mut heads) = used_ring(&b.mem, &q);
    assert_eq!(idx, 2 * HALF, "every request completed");
    heads.sort_unstable();
    heads.dedup();
    assert_eq!(heads.len(), usize::from(2 * HALF), "none completed twice");
    drop((b.device, b.ports, b.pio));
    let backend = disk::ImageChain::open(
        image.to_str().unwrap(),
        DiskFormat::Raw,
        disk::Access::ReadOnly,
    )
    .and_then(disk::ImageChain::into_backend)
    .unwrap();
    for i in 0..2 * HALF {
        assert_eq!(status(&b.mem, i), 0, "request {i}");
        let mut sector = vec![0u8; 512];
        backend.read_at(&mut sector, 512 * u64::from(i)).unwrap();
        assert_eq!(sector, sector_data(i), "sector {i}");
    }
}
