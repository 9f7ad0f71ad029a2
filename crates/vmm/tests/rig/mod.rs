//! One virtio-pci device of each kind the VM process builds, on a real KVM
//! VM (no vCPU runs) behind the configuration ports and buses a vCPU's
//! exits reach, and a guest's view of it: configuration space through
//! 0xcf8/0xcfc, BAR0 registers through port I/O, the MSI-X table through
//! MMIO. Shared by the tests that look at devices the way a guest does.

// Each test binary that includes this uses only part of it.
#![allow(dead_code)]

use std::fs::File;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestAddress;
use vmm::bus::{Bus, BusDevice};
use vmm::devices::pci::host_bridge::HostBridge;
use vmm::devices::pci::{Identity, PciConfigPorts, PciRoot};
use vmm::devices::virtio::net::{Net, NetConfig};
use vmm::devices::virtio::pci::{TransportContext, VirtioPciDevice};
use vmm::devices::virtio::rng::Rng;
use vmm::devices::virtio::scsi::Scsi;
use vmm::devices::virtio::{VirtioDevice, blk, net, rng, scsi};
use vmm::irq_routing::GsiRouter;
use vmm::lifecycle::{Lifecycle, VmEvent};
use vmm::memory::GuestMemoryMmap;

pub const MEM: usize = 8 << 20;
pub const GUEST_MAC: [u8; 6] = [0xfe, 0xe1, 0xbb, 0xd1, 0x00, 0x01];

/// Every kind of virtio device the VM process builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Blk,
    Net,
    Scsi,
    Rng,
}

pub const KINDS: [Kind; 4] = [Kind::Blk, Kind::Net, Kind::Scsi, Kind::Rng];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Blk => "vioblk",
            Kind::Net => "vionet",
            Kind::Scsi => "vioscsi",
            Kind::Rng => "viornd",
        }
    }

    pub fn from_name(name: &str) -> Kind {
        KINDS
            .into_iter()
            .find(|k| k.name() == name)
            .unwrap_or_else(|| panic!("no device kind {name}"))
    }

    pub fn identity(self) -> Identity {
        match self {
            Kind::Blk => blk::pci_identity(),
            Kind::Net => net::pci_identity(),
            Kind::Scsi => scsi::pci_identity(),
            Kind::Rng => rng::pci_identity(),
        }
    }

    /// Whether the device has device-specific configuration.
    pub fn has_device_config(self) -> bool {
        self != Kind::Rng
    }
}

/// What a device needs from the host, opened before anything is confined.
pub enum Backing {
    /// A disk image (block device, CD-ROM).
    Disk(Arc<dyn disk::BlockBackend>),
    /// A tap with a virtio-net header.
    Tap(File),
    None,
}

/// The device model of `kind` over `backing`.
pub fn model(kind: Kind, backing: Backing) -> Box<dyn VirtioDevice> {
    match (kind, backing) {
        (Kind::Blk, Backing::Disk(backend)) => {
            Box::new(blk::Blk::new(backend, "/images/rig-disk.img"))
        }
        (Kind::Scsi, Backing::Disk(backend)) => Box::new(Scsi::new(backend, "RIG-CD-0001")),
        (Kind::Net, Backing::Tap(tap)) => Box::new(Net::new(NetConfig {
            name: "rig-vionet0".into(),
            tap,
            guest_mac: GUEST_MAC,
            locked: false,
            lease: None,
        })),
        (Kind::Rng, _) => Box::<Rng>::default(),
        (kind, _) => panic!("{kind:?} needs another backing"),
    }
}

/// The KVM VM, guest memory and lifecycle a device's transport shares.
pub struct Host {
    pub kvm: Kvm,
    pub vm: Arc<VmFd>,
    pub mem: GuestMemoryMmap,
    pub lifecycle: Arc<Lifecycle>,
    pub events: mpsc::Receiver<VmEvent>,
}

impl Host {
    pub fn new() -> Host {
        let kvm = Kvm::new().expect("/dev/kvm");
        let vm = Arc::new(kvm.create_vm().expect("KVM_CREATE_VM"));
        vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).expect("guest memory");
        let (tx, events) = mpsc::channel();
        Host {
            kvm,
            vm,
            mem,
            lifecycle: Arc::new(Lifecycle::new(tx)),
            events,
        }
    }
}

/// A device on PCI bus 0 as a guest reaches it.
pub struct Machine {
    pub device: Arc<Mutex<VirtioPciDevice>>,
    pub ports: PciConfigPorts,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub mem: GuestMemoryMmap,
    pub slot: u32,
}

impl Machine {
    /// `model` behind the virtio-pci transport, after the host bridge.
    pub fn new(host: &Host, kind: Kind, model: Box<dyn VirtioDevice>) -> Machine {
        let ctx = TransportContext {
            vm: host.vm.clone(),
            router: Arc::new(GsiRouter::new(host.vm.clone())),
            mem: host.mem.clone(),
            lifecycle: host.lifecycle.clone(),
        };
        let name = format!("rig-{}", kind.name());
        let device = VirtioPciDevice::new(&name, model, kind.identity(), 5, ctx)
            .unwrap_or_else(|e| panic!("{name}: transport: {e}"));
        let device = Arc::new(Mutex::new(device));
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let mut root = PciRoot::new(&pio, &mmio);
        root.add(Arc::new(Mutex::new(HostBridge::new())));
        let slot = root.add(device.clone()).expect("a free slot") as u32;
        let ports = PciConfigPorts::new(Arc::new(Mutex::new(root)), Box::new(|| {}));
        Machine {
            device,
            ports,
            pio,
            mmio,
            mem: host.mem.clone(),
            slot,
        }
    }

    fn select(&mut self, reg: u32) {
        let address = 0x8000_0000u32 | self.slot << 11 | (reg & 0xfc);
        self.ports.write(0, &address.to_le_bytes());
    }

    /// `len` bytes of configuration space at `reg`, read through the data
    /// port as a guest reads them.
    pub fn cfg_read(&mut self, reg: u32, len: usize) -> u32 {
        self.select(reg);
        let mut d = [0u8; 4];
        self.ports.read(4 + u64::from(reg & 3), &mut d[..len]);
        u32::from_le_bytes(d)
    }

    pub fn cfg_read32(&mut self, reg: u32) -> u32 {
        self.cfg_read(reg, 4)
    }

    pub fn cfg_write(&mut self, reg: u32, value: u32, len: usize) {
        self.select(reg);
        self.ports
            .write(4 + u64::from(reg & 3), &value.to_le_bytes()[..len]);
    }

    /// The capabilities' offsets and ids, in list order (at most 48, so a
    /// loop ends the walk).
    pub fn capabilities(&mut self) -> Vec<(u32, u8)> {
        let mut found = Vec::new();
        let mut at = self.cfg_read(0x34, 1) & 0xfc;
        while at != 0 && found.len() < 48 {
            let id = self.cfg_read(at, 1) as u8;
            found.push((at, id));
            at = self.cfg_read(at + 1, 1) & 0xfc;
        }
        found
    }

    /// BAR `index`: whether it is port I/O, and its base.
    pub fn bar(&mut self, index: u32) -> (bool, u64) {
        let raw = self.cfg_read32(0x10 + 4 * index);
        if raw & 1 == 1 {
            (true, u64::from(raw & !0x3))
        } else {
            let mut base = u64::from(raw & !0xf);
            if raw & 0x6 == 0x4 {
                base |= u64::from(self.cfg_read32(0x14 + 4 * index)) << 32;
            }
            (false, base)
        }
    }

    /// Reads `data.len()` bytes at `offset` into BAR `index`.
    pub fn bar_read(&mut self, index: u32, offset: u64, data: &mut [u8]) {
        let (io, base) = self.bar(index);
        let bus = if io { &self.pio } else { &self.mmio };
        assert!(bus.read(base + offset, data), "BAR{index} is decoded");
    }

    pub fn bar_write(&mut self, index: u32, offset: u64, data: &[u8]) {
        let (io, base) = self.bar(index);
        let bus = if io { &self.pio } else { &self.mmio };
        assert!(bus.write(base + offset, data), "BAR{index} is decoded");
    }
}
