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
const VERSION_1: u64 = 1 << 32;

struct Rig {
    _dir: TempDir,
    device: Arc<Mutex<VirtioPciDevice>>,
    ports: PciConfigPorts,
    pio: Arc<Bus>,
    /// Where BAR1 (the MSI-X table and PBA) is mapped.
    mmio: Arc<Bus>,
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
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    rig_in(image, mem)
}

/// A rig on the disk `image` (or a new one) whose guest memory is `mem`.
fn rig_in(image: Option<&std::path::Path>, mem: GuestMemoryMmap) -> Rig {
    let kvm = Kvm::new().expect("/dev/kvm");
    let vm = Arc::new(kvm.create_vm().expect("KVM_CREATE_VM"));
    vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
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
        mmio,
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

    /// Negotiates VERSION_1, sets queue 0 of `size` up at QUEUE_AT, and
    /// sets DRIVER_OK.
    fn start_driver(&self, size: u16) -> DriverQueue {
        self.start_driver_with(size, VERSION_1)
    }

    /// As [`Rig::start_driver`], accepting `features` (which must hold
    /// VERSION_1); the driver feature select is left at 1.
    fn start_driver_with(&self, size: u16, features: u64) -> DriverQueue {
        self.reg_write(0x14, 1 | 2, 1);
        self.reg_write(0x08, 0, 4);
        self.reg_write(0x0c, features as u32, 4);
        self.reg_write(0x08, 1, 4);
        self.reg_write(0x0c, (features >> 32) as u32, 4);
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

    /// Offset of the MSI-X capability in configuration space.
    fn msix_cap(&mut self) -> u32 {
        let mut at = self.cfg_read(0x34) & 0xff;
        while self.cfg_read(at) & 0xff != 0x11 {
            at = self.cfg_read(at) >> 8 & 0xff;
        }
        at
    }

    /// Writes the MSI-X message control (enable, function mask) as a
    /// driver does: the capability's first dword, id and next pointer
    /// being read-only.
    fn msix_control(&mut self, enable: bool, function_masked: bool) {
        let cap = self.msix_cap();
        let control = u32::from(enable) << 31 | u32::from(function_masked) << 30;
        self.cfg_write(cap, control);
    }

    fn bar1(&self) -> u64 {
        self.device.lock().unwrap().bars()[1].base
    }

    /// Writes dword `word` (0 address low, 1 address high, 2 data, 3
    /// vector control) of MSI-X table entry `vector`, through the bus.
    fn msix_entry_write(&self, vector: u64, word: u64, value: u32) {
        let at = self.bar1() + 16 * vector + 4 * word;
        assert!(self.mmio.write(at, &value.to_le_bytes()), "BAR1 mapped");
    }

    /// Points MSI-X vector `vector` at local APIC 0, interrupt `apic_vector`,
    /// with its mask bit as `masked`.
    fn msix_program(&self, vector: u64, apic_vector: u8, masked: bool) {
        self.msix_entry_write(vector, 0, 0xfee0_0000);
        self.msix_entry_write(vector, 1, 0);
        self.msix_entry_write(vector, 2, u32::from(apic_vector));
        self.msix_entry_write(vector, 3, u32::from(masked));
    }

    /// The first byte of the pending-bit array, read through the bus.
    fn pba(&self) -> u8 {
        let mut b = [0u8; 1];
        assert!(self.mmio.read(self.bar1() + 0x800, &mut b), "BAR1 mapped");
        b[0]
    }

    /// Maps queue 0's interrupts to MSI-X vector `vector`.
    fn map_queue0(&self, vector: u32) {
        self.reg_write(0x16, 0, 2);
        self.reg_write(0x1a, vector, 2);
        assert_eq!(self.reg_read(0x1a, 2), vector, "vector accepted");
    }
}

/// The local APIC of the VM's vCPU 0, which never runs: where an MSI for
/// APIC ID 0 lands, in the interrupt request register KVM keeps. This is
/// how a test sees whether an MSI-X vector reached the guest.
struct Apic {
    vcpu: kvm_ioctls::VcpuFd,
}

/// The APIC interrupt the tests' MSI-X vectors carry.
const APIC_VECTOR: u8 = 0x41;

impl Apic {
    fn new(vm: &kvm_ioctls::VmFd) -> Apic {
        Apic::of_vcpu(vm, 0)
    }

    /// The local APIC of a new vCPU `id`, whose APIC ID is `id` too.
    fn of_vcpu(vm: &kvm_ioctls::VmFd, id: u64) -> Apic {
        let vcpu = vm.create_vcpu(id).expect("KVM_CREATE_VCPU");
        let mut lapic = vcpu.get_lapic().expect("KVM_GET_LAPIC");
        // Spurious vector register: software enabled, or the APIC takes
        // no fixed interrupt.
        lapic.regs[0xf0..0xf4].copy_from_slice(&0x1ffu32.to_le_bytes().map(|b| b as _));
        vcpu.set_lapic(&lapic).expect("KVM_SET_LAPIC");
        Apic { vcpu }
    }

    /// Whether `vector` was requested and not yet taken.
    fn requested(&self, vector: u8) -> bool {
        let lapic = self.vcpu.get_lapic().expect("KVM_GET_LAPIC");
        let at = 0x200 + usize::from(vector / 32) * 0x10;
        let word = u32::from_le_bytes(std::array::from_fn(|i| lapic.regs[at + i] as u8));
        word & 1 << (vector % 32) != 0
    }

    /// Forgets every request, as if the guest had taken them.
    fn clear(&self) {
        let mut lapic = self.vcpu.get_lapic().expect("KVM_GET_LAPIC");
        lapic.regs[0x200..0x280].fill(0);
        self.vcpu.set_lapic(&lapic).expect("KVM_SET_LAPIC");
    }

    /// Waits up to a second for `vector` (KVM may inject an irqfd's MSI
    /// from a worker).
    fn wait(&self, vector: u8) -> bool {
        self.wait_for(vector, Duration::from_secs(1))
    }

    fn wait_for(&self, vector: u8, time: Duration) -> bool {
        let deadline = Instant::now() + time;
        while Instant::now() < deadline {
            if self.requested(vector) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
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
    testkit::needs!(kvm);
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
    testkit::needs!(kvm);
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
    testkit::needs!(kvm);
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
    testkit::needs!(kvm);
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
    testkit::needs!(kvm);
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
    testkit::needs!(kvm);
    let r = rig();
    let _q = r.start_driver(100);
    assert_eq!(r.status() & 0x40, 0x40, "size 100 is not a power of two");
}

#[test]
fn msix_vectors_are_masked_pending_and_delivered() {
    testkit::needs!(kvm);
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
    testkit::needs!(kvm);
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
    testkit::needs!(kvm);
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
        mmio,
        ..
    } = a;
    // The bus's BAR windows hold the device too.
    drop((device, ports, pio, mmio));
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
    drop((b.device, b.ports, b.pio, b.mmio));
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

/// Waits until the device has either marked the vectors of `bits`
/// pending or delivered [`APIC_VECTOR`]: the used ring is published before
/// the interrupt is raised, so a completion alone does not say the
/// device got that far.
fn wait_pending_or_delivered(r: &Rig, apic: &Apic, bits: u8) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.pba() & bits != bits && !apic.requested(APIC_VECTOR) {
        assert!(Instant::now() < deadline, "the device raised no interrupt");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Has the device complete a flush on `q` and waits until it has raised
/// queue 0's interrupt on MSI-X vector 1 (pending or delivered).
fn complete_on_vector1(r: &Rig, apic: &Apic, q: &mut DriverQueue) {
    flush_request(&r.mem, q);
    r.kick();
    assert!(wait_used(q).is_some());
    wait_pending_or_delivered(r, apic, 0b10);
}

/// Which mask holds MSI-X vector 1 in a test, the other one being clear.
#[derive(Clone, Copy, PartialEq)]
enum Mask {
    /// The function mask (message control bit 14).
    Function,
    /// Vector 1's own mask bit (vector control bit 0).
    Vector,
}

impl Mask {
    fn name(self) -> &'static str {
        match self {
            Mask::Function => "function",
            Mask::Vector => "vector",
        }
    }

    /// Sets or clears this mask as a driver does, MSI-X staying enabled.
    fn set(self, r: &mut Rig, masked: bool) {
        match self {
            Mask::Function => r.msix_control(true, masked),
            Mask::Vector => r.msix_entry_write(1, 3, u32::from(masked)),
        }
    }
}

/// A vector's message address says which local APIC takes it (the
/// destination ID in address bits 12-19, physical mode): with two vCPUs,
/// vector 1 programmed for APIC 1 interrupts vCPU 1 only, and once its
/// address is rewritten for APIC 0, vCPU 0 only.
#[test]
fn a_vector_goes_to_the_local_apic_its_message_address_names() {
    testkit::needs!(kvm);
    let mut r = rig();
    let apic0 = Apic::new(&r.vm);
    let apic1 = Apic::of_vcpu(&r.vm, 1);
    r.msix_control(true, false);
    r.msix_program(1, APIC_VECTOR, false);
    let mut q = r.start_driver(64);
    r.map_queue0(1);
    for (address, to, other) in [(0xfee0_1000, &apic1, &apic0), (0xfee0_0000, &apic0, &apic1)] {
        r.msix_entry_write(1, 0, address);
        let mut d = [0u8; 8];
        assert!(r.mmio.read(r.bar1() + 16, &mut d), "BAR1 mapped");
        assert_eq!(
            u64::from_le_bytes(d),
            u64::from(address),
            "the address reads back"
        );
        flush_request(&r.mem, &mut q);
        r.kick();
        assert!(wait_used(&mut q).is_some());
        assert!(
            to.wait(APIC_VECTOR),
            "delivered to the APIC of {address:#x}"
        );
        assert!(!other.requested(APIC_VECTOR), "and to no other");
        to.clear();
    }
}

/// A driver that turns MSI-X off again (message control keeps its
/// read-only table size) is interrupted through INTx and the ISR, not
/// through the vector it had programmed and unmasked.
#[test]
fn with_msix_disabled_again_a_completion_raises_intx() {
    testkit::needs!(kvm);
    let mut r = rig();
    let apic = Apic::new(&r.vm);
    r.msix_control(true, false);
    r.msix_program(1, APIC_VECTOR, false);
    let mut q = r.start_driver(64);
    r.map_queue0(1);
    r.msix_control(false, false);
    flush_request(&r.mem, &mut q);
    r.kick();
    assert!(wait_used(&mut q).is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.reg_read(0x200, 1) & 1 == 0 {
        assert!(Instant::now() < deadline, "no queue interrupt in the ISR");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!apic.requested(APIC_VECTOR), "no MSI");
    assert_eq!(r.pba(), 0, "nothing pending");
}

/// A completion on queue 0, whose interrupts go to MSI-X vector 1, with
/// only `mask` set: the interrupt waits in the PBA and comes when `mask`
/// is cleared, once (masking and unmasking again delivers nothing). The
/// rig, its APIC (no request left) and the queue are returned unmasked.
fn held_pending_until_unmasked(mask: Mask) -> (Rig, Apic, DriverQueue) {
    let mut r = rig();
    let apic = Apic::new(&r.vm);
    r.msix_control(true, mask == Mask::Function);
    r.msix_program(1, APIC_VECTOR, mask == Mask::Vector);
    let mut q = r.start_driver(64);
    r.map_queue0(1);
    complete_on_vector1(&r, &apic, &mut q);
    let what = mask.name();
    assert!(
        !apic.requested(APIC_VECTOR),
        "delivered while the {what} was masked"
    );
    assert_eq!(r.pba(), 0b10, "vector 1 pending");
    mask.set(&mut r, false);
    assert!(
        apic.wait(APIC_VECTOR),
        "delivered when the {what} was unmasked"
    );
    assert_eq!(r.pba(), 0, "no longer pending");
    apic.clear();
    mask.set(&mut r, true);
    mask.set(&mut r, false);
    assert!(
        !apic.wait_for(APIC_VECTOR, Duration::from_millis(100)),
        "delivered a second time"
    );
    (r, apic, q)
}

/// A completion on queue 0, whose interrupts go to MSI-X vector 1, with
/// the vector's mask bit clear and only the function masked (message
/// control bit 14): the interrupt waits in the PBA and comes when the
/// function is unmasked, once.
#[test]
fn the_function_mask_alone_holds_a_vector_pending_until_cleared() {
    testkit::needs!(kvm);
    let (r, apic, mut q) = held_pending_until_unmasked(Mask::Function);
    // Unmasked, the next completion goes straight through.
    flush_request(&r.mem, &mut q);
    r.kick();
    assert!(wait_used(&mut q).is_some());
    assert!(apic.wait(APIC_VECTOR), "an unmasked vector is delivered");
    assert_eq!(r.pba(), 0);
}

/// The same with the function unmasked and only vector 1's own mask bit
/// (vector control bit 0) set: pending until the table entry is unmasked.
#[test]
fn a_vector_mask_bit_alone_holds_its_vector_pending_until_cleared() {
    testkit::needs!(kvm);
    held_pending_until_unmasked(Mask::Vector);
}

/// A device moved (saved, and restored into a new VM) with features
/// negotiated beyond VERSION_1 and a queue interrupt pending behind a
/// masked vector: the driver reads its features back through the common
/// configuration, the PBA still has the bit, and unmasking the vector
/// delivers the interrupt in the new VM.
#[test]
fn negotiated_features_and_a_pending_vector_survive_a_move() {
    testkit::needs!(kvm);
    use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
    use vmm::devices::persist::Persist;
    let features = VERSION_1 | 1 << VIRTIO_RING_F_INDIRECT_DESC;
    let mut a = rig();
    let a_apic = Apic::new(&a.vm);
    a.msix_control(true, false);
    a.msix_program(1, APIC_VECTOR, true);
    let mut q = a.start_driver_with(64, features);
    a.map_queue0(1);
    // Selects the driver left where a fresh device does not have them.
    a.reg_write(0x00, 1, 4);
    complete_on_vector1(&a, &a_apic, &mut q);
    assert!(!a_apic.requested(APIC_VECTOR), "delivered while masked");
    a.lifecycle.pause(0);
    let state = a.device.lock().unwrap().save().expect("save");
    // The receiver's guest memory is the sender's (as if every page had
    // been copied), so the driver's queue goes on in it.
    let Rig {
        _dir: dir,
        device,
        ports,
        pio,
        mmio,
        mem,
        ..
    } = a;
    drop((device, ports, pio, mmio));

    let image = dir.join("d.img");
    let mut b = rig_in(Some(&image), mem);
    let apic = Apic::new(&b.vm);
    b.lifecycle.hold();
    b.device.lock().unwrap().restore(&state).expect("restore");
    b.lifecycle.resume();
    assert_eq!(b.status(), 1 | 2 | 4 | 8, "DRIVER_OK came across");
    assert_eq!(b.reg_read(0x00, 4), 1, "device feature select");
    assert_eq!(b.reg_read(0x04, 4), 1, "offered features, high half");
    assert_eq!(b.reg_read(0x08, 4), 1, "driver feature select");
    assert_eq!(
        b.reg_read(0x0c, 4),
        (features >> 32) as u32,
        "driver features, high half"
    );
    b.reg_write(0x08, 0, 4);
    assert_eq!(
        b.reg_read(0x0c, 4),
        features as u32,
        "driver features, low half"
    );
    let cap = b.msix_cap();
    assert_eq!(
        b.cfg_read(cap) >> 30,
        0b10,
        "MSI-X enabled, function unmasked"
    );
    assert_eq!(b.pba(), 0b10, "vector 1 still pending");
    assert!(!apic.requested(APIC_VECTOR), "delivered while masked");
    b.msix_entry_write(1, 3, 0);
    assert!(
        apic.wait(APIC_VECTOR),
        "the pending interrupt is delivered once its vector is unmasked"
    );
    assert_eq!(b.pba(), 0);
    // The moved device goes on serving, interrupting through vector 1.
    apic.clear();
    flush_request(&b.mem, &mut q);
    b.kick();
    assert!(wait_used(&mut q).is_some());
    assert!(apic.wait(APIC_VECTOR), "the next completion interrupts");
}
