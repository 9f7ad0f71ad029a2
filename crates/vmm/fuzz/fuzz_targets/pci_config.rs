//! A hostile guest on PCI configuration mechanism #1: accesses of every
//! width at every offset of 0xCF8–0xCFF (address register, reset control,
//! data window) with any bus, slot, function and register, firmware-style
//! BAR sizing and relocation, capability writes (MSI-X message control,
//! the virtio PCI configuration access window), and accesses inside the
//! BARs wherever they are, MSI-X table and PBA included. The bus has the
//! host bridge in slot 0 and a virtio-blk device with an option ROM in
//! slot 1, on a real KVM VM (shared by all runs: creating one costs
//! milliseconds) as the transport needs it for its interrupts.
//!
//! A model built from the spec follows along: each function's 256 bytes
//! and the bits the guest may change (command bits, cache line and
//! latency, BAR address bits, the ROM BAR, MSI-X enable and function
//! mask, the access window's BAR, offset and length). What must hold:
//! nothing panics; every read of configuration space returns what the
//! model says, so vendor and device id, class, header, capability list and
//! interrupt registers never change; absent functions read all ones; a
//! BAR always reads back its type bits and an address aligned to its size;
//! a BAR that decodes (enabled, at a usable address, clear of other
//! ranges) answers on its bus at its address and nothing stale answers
//! where a BAR no longer decodes; MSI-X vectors start masked and the table
//! reads back what the guest wrote; reset control keeps its bits and
//! resets only when told to.

#![no_main]

#[path = "common/width.rs"]
mod width;

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use arbitrary::Arbitrary;
use disk::{Access, DiskFormat, ImageChain};
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VmFd};
use libfuzzer_sys::fuzz_target;
use vm_memory::GuestAddress;
use vmm::bus::{Bus, shared};
use vmm::devices::pci::bars::IO_ALLOCATION_START;
use vmm::devices::pci::host_bridge::HostBridge;
use vmm::devices::pci::root::{CONFIG_PORTS_BASE, CONFIG_PORTS_LEN};
use vmm::devices::pci::{PciConfigPorts, PciRoot};
use vmm::devices::virtio::blk::{self, Blk};
use vmm::devices::virtio::pci::{TransportContext, VirtioPciDevice, layout};
use vmm::irq_routing::GsiRouter;
use vmm::lifecycle::Lifecycle;
use vmm::memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use width::Width;

const MEM: usize = 1 << 20;
const DISK: u64 = 64 << 10;
const IRQ: u8 = 5;
/// Slots with a function: the host bridge and the virtio device.
const FUNCTIONS: usize = 2;
const VIRTIO: usize = 1;
const CONFIG_SIZE: usize = 256;

const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const BAR0: usize = 0x10;
const ROM: usize = 0x30;
const CAPABILITIES: usize = 0x34;
const COMMAND_IO: u8 = 0x1;
const COMMAND_MEMORY: u8 = 0x2;
const MSIX_ID: u8 = 0x11;
const VENDOR_ID: u8 = 0x09;
const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;
/// Port I/O space ends here.
const IO_END: u64 = 0x1_0000;

struct Host {
    _kvm: Kvm,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    _taken: Vec<EventFd>,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let kvm = Kvm::new().expect("this target needs /dev/kvm");
        let vm = Arc::new(kvm.create_vm().expect("KVM_CREATE_VM"));
        vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        // Adding or removing an ioeventfd costs KVM milliseconds (an SRCU
        // grace period), which would make this target crawl. Every place
        // BAR0's notification register can decode at is taken here once,
        // so the transport's own registrations fail at once (EEXIST) and
        // it takes notifications through the register path, as it does
        // whenever KVM refuses them.
        let taken = (IO_ALLOCATION_START..IO_END)
            .step_by(layout::REGISTERS_BAR_SIZE as usize)
            .map(|base| {
                let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
                let at = IoEventAddress::Pio(base + layout::NOTIFY_OFFSET);
                vm.register_ioevent(&fd, &at, NoDatamatch).unwrap();
                fd
            })
            .collect();
        Host {
            _kvm: kvm,
            vm,
            mem,
            _taken: taken,
        }
    })
}

fn disk_file() -> File {
    // SAFETY: a NUL-terminated name and flags; the descriptor is ours.
    let fd = unsafe { libc::memfd_create(c"disk".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: a fresh descriptor owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(DISK).unwrap();
    file
}

fn rom_byte(i: usize) -> u8 {
    (i * 13 + i / 251 + 7) as u8
}

/// One run's machine: buses, root, the configuration ports on the port
/// bus at 0xCF8 as the VM has them.
struct Rig {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    resets: Arc<AtomicUsize>,
    _lifecycle: (Arc<Lifecycle>, mpsc::Receiver<vmm::lifecycle::VmEvent>),
}

fn rig(rom: Vec<u8>) -> Rig {
    let host = host();
    let (tx, rx) = mpsc::channel();
    let lifecycle = Arc::new(Lifecycle::new(tx));
    let ctx = TransportContext {
        vm: host.vm.clone(),
        // Fresh each run: GSIs are handed out from 24 again.
        router: Arc::new(GsiRouter::new(host.vm.clone())),
        mem: host.mem.clone(),
        lifecycle: lifecycle.clone(),
    };
    let backend = ImageChain::from_files(
        "fuzz.img",
        DiskFormat::Raw,
        Access::ReadWrite,
        vec![disk_file()],
    )
    .and_then(ImageChain::into_backend)
    .unwrap();
    let device = VirtioPciDevice::new(
        "fuzz-vioblk",
        Box::new(Blk::new(Arc::from(backend), "/fuzz.img")),
        blk::pci_identity(),
        IRQ,
        ctx,
    )
    .expect("virtio-pci transport")
    .with_option_rom(rom);
    let pio = Arc::new(Bus::new());
    let mmio = Arc::new(Bus::new());
    let mut root = PciRoot::new(&pio, &mmio);
    assert_eq!(root.add(Arc::new(Mutex::new(HostBridge::new()))), Some(0));
    assert_eq!(root.add(Arc::new(Mutex::new(device))), Some(VIRTIO));
    let resets = Arc::new(AtomicUsize::new(0));
    let counter = resets.clone();
    let ports = PciConfigPorts::new(
        Arc::new(Mutex::new(root)),
        Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    );
    pio.insert(CONFIG_PORTS_BASE, CONFIG_PORTS_LEN, shared(ports))
        .unwrap();
    Rig {
        pio,
        mmio,
        resets,
        _lifecycle: (lifecycle, rx),
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Value {
    Raw(u32),
    Ones,
    Zero,
}

impl Value {
    fn get(self) -> u32 {
        match self {
            Value::Raw(v) => v,
            Value::Ones => u32::MAX,
            Value::Zero => 0,
        }
    }
}

/// What the address register selects.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Target {
    /// Slots 0–3: two with a function, two empty.
    slot: u8,
    register: u8,
    disabled: bool,
    /// Another bus and function than 0.
    elsewhere: Option<(u8, u8)>,
}

impl Target {
    fn address(self) -> u32 {
        let (bus, function) = self.elsewhere.unwrap_or((0, 0));
        u32::from(!self.disabled) << 31
            | u32::from(bus) << 16
            | u32::from(self.slot % 4) << 11
            | u32::from(function & 7) << 8
            | u32::from(self.register)
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum BarSel {
    Registers,
    Msix,
    Rom,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Any access to 0xCF8–0xCFF.
    PortRead { offset: u8, width: Width },
    PortWrite {
        offset: u8,
        width: Width,
        value: u32,
    },
    /// The address register, then the data window at the register's
    /// byte.
    ConfigRead { target: Target, width: Width },
    ConfigWrite {
        target: Target,
        width: Width,
        value: Value,
    },
    /// Firmware's BAR sizing: decoding off, all ones, read back, an
    /// address (or the old one), decoding restored.
    SizeBar {
        slot: u8,
        /// 0–5, 6 for the expansion ROM.
        bar: u8,
        address: Option<u32>,
    },
    /// An access inside a BAR at its current address.
    BarAccess {
        bar: BarSel,
        offset: u16,
        /// 1, 2, 4 or 8 bytes.
        width: u8,
        write: Option<u64>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    rom_len: u16,
    ops: Vec<Op>,
}

/// A function's configuration space as the model knows it.
struct Function {
    bytes: [u8; CONFIG_SIZE],
    /// Bits the guest may change.
    writable: [u8; CONFIG_SIZE],
    /// Bits the model does not predict (the interrupt status bit, the
    /// access window's data register).
    volatile: [u8; CONFIG_SIZE],
}

impl Function {
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap())
    }

    fn set_writable(&mut self, at: usize, mask: u32) {
        self.writable[at..at + 4].copy_from_slice(&mask.to_le_bytes());
    }
}

/// The virtio function's MSI-X structures, as its capability declares.
struct MsixModel {
    count: usize,
    table: u64,
    pba: u64,
    /// The table's bytes; `None` where a write went through the access
    /// window (whose data register the model does not follow).
    entries: Vec<Option<u8>>,
}

/// A BAR of the virtio function as the model computes it.
#[derive(Debug, Clone, Copy)]
struct Decode {
    io: bool,
    base: u64,
    size: u64,
    /// Enabled and at a usable address.
    live: bool,
}

impl Decode {
    fn overlaps(&self, base: u64, size: u64) -> bool {
        self.base < base.saturating_add(size) && base < self.base.saturating_add(self.size)
    }

    fn covers(&self, addr: u64) -> bool {
        self.overlaps(addr, 1)
    }
}

struct Model {
    address: u32,
    reset_control: u8,
    resets: usize,
    functions: Vec<Function>,
    msix: MsixModel,
    /// Offset of the virtio PCI configuration access capability.
    window: usize,
    rom: Vec<u8>,
    rom_size: u64,
}

fn overlaps(a: usize, alen: usize, b: usize, blen: usize) -> bool {
    a < b + blen && b < a + alen
}

impl Model {
    /// Reads both functions' configuration space through the ports and
    /// checks and records it, with the writable bits the spec gives the
    /// capabilities found.
    fn new(rig: &Rig, rom: Vec<u8>) -> Model {
        let mut functions = Vec::new();
        for slot in 0..FUNCTIONS {
            let mut bytes = [0u8; CONFIG_SIZE];
            for reg in (0..CONFIG_SIZE).step_by(4) {
                let address = 0x8000_0000 | (slot as u32) << 11 | reg as u32;
                assert!(rig.pio.write(CONFIG_PORTS_BASE, &address.to_le_bytes()));
                assert!(
                    rig.pio
                        .read(CONFIG_PORTS_BASE + 4, &mut bytes[reg..reg + 4])
                );
            }
            let mut writable = [0u8; CONFIG_SIZE];
            // I/O, memory, bus master, INTx disable.
            writable[COMMAND] = 0x07;
            writable[COMMAND + 1] = 0x04;
            // Cache line size, latency timer.
            writable[0x0c] = 0xff;
            writable[0x0d] = 0xff;
            let mut volatile = [0u8; CONFIG_SIZE];
            volatile[STATUS] = 0x08;
            functions.push(Function {
                bytes,
                writable,
                volatile,
            });
        }

        let bridge = &functions[0];
        assert_eq!(bridge.u32(0), 0x0666_0b5d, "host bridge identity");
        assert_eq!(bridge.bytes[0x0b], 0x06, "host bridge class");
        let virtio = &mut functions[VIRTIO];
        assert_eq!(virtio.u32(0), 0x1042_1af4, "virtio-blk identity");
        assert_eq!(virtio.u32(0x08), 0x0100_0001, "class 01/00, revision 1");
        assert_eq!(virtio.bytes[0x0e], 0, "type 0 header");
        assert_ne!(virtio.bytes[STATUS] & 0x10, 0, "a capability list");
        // BAR0: 4 KiB of ports; BAR1: 4 KiB of memory (MSI-X).
        assert_eq!(virtio.u32(BAR0) & 0x3, 0x1);
        assert_eq!(virtio.u32(BAR0 + 4) & 0xf, 0x0);
        let size_mask = !(layout::REGISTERS_BAR_SIZE as u32 - 1);
        virtio.set_writable(BAR0, size_mask);
        virtio.set_writable(BAR0 + 4, !(layout::MSIX_BAR_SIZE as u32 - 1));
        let rom_size = (rom.len() as u64).next_power_of_two().max(2048);
        virtio.set_writable(ROM, !(rom_size as u32 - 1) | 1);

        // Walk the capabilities.
        let mut msix = None;
        let mut window = None;
        let mut at = usize::from(virtio.bytes[CAPABILITIES]);
        for _ in 0..48 {
            if at == 0 {
                break;
            }
            assert!(at >= 0x40 && at % 4 == 0, "capability at {at:#x}");
            let (id, next) = (virtio.bytes[at], virtio.bytes[at + 1]);
            if id == MSIX_ID {
                // Message control: enable and function mask.
                virtio.writable[at + 3] = 0xc0;
                msix = Some(at);
            } else if id == VENDOR_ID && virtio.bytes[at + 3] == VIRTIO_PCI_CAP_PCI_CFG {
                // The access window: bar, offset, length and data.
                virtio.writable[at + 4] = 0xff;
                virtio.writable[at + 8..at + 20].fill(0xff);
                virtio.volatile[at + 16..at + 20].fill(0xff);
                window = Some(at);
            }
            at = usize::from(next);
        }
        assert_eq!(at, 0, "the capability list ends");
        let cap = msix.expect("an MSI-X capability");
        let window = window.expect("a PCI configuration access capability");
        let control = u16::from_le_bytes([virtio.bytes[cap + 2], virtio.bytes[cap + 3]]);
        assert_eq!(control & 0xc000, 0, "MSI-X starts disabled and unmasked");
        let count = usize::from(control & 0x7ff) + 1;
        let (table, pba) = (virtio.u32(cap + 4), virtio.u32(cap + 8));
        assert_eq!(table & 7, u32::from(layout::MSIX_BAR), "table BIR");
        assert_eq!(pba & 7, u32::from(layout::MSIX_BAR), "PBA BIR");
        let (table, pba) = (u64::from(table & !7), u64::from(pba & !7));
        assert!(table + 16 * count as u64 <= pba);
        assert!(pba + (count as u64).div_ceil(64) * 8 <= layout::MSIX_BAR_SIZE);

        let mut model = Model {
            address: 0x8000_0000 | (VIRTIO as u32) << 11 | (CONFIG_SIZE as u32 - 4),
            reset_control: 0,
            resets: 0,
            functions,
            msix: MsixModel {
                count,
                table,
                pba,
                entries: Vec::new(),
            },
            window,
            rom,
            rom_size,
        };
        // Every vector starts masked, with no message.
        let bar = model.decode()[1];
        assert!(bar.live, "the MSI-X BAR decodes from the start");
        for vector in 0..count {
            let mut entry = [0u8; 16];
            assert!(
                rig.mmio
                    .read(bar.base + table + 16 * vector as u64, &mut entry)
            );
            assert_eq!(entry, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
            model.msix.entries.extend(entry.map(Some));
        }
        model
    }

    /// BAR0, the MSI-X BAR and the ROM of the virtio function.
    fn decode(&self) -> [Decode; 3] {
        let f = &self.functions[VIRTIO];
        let command = f.bytes[COMMAND];
        let bar0 = u64::from(f.u32(BAR0) & !0x3);
        let bar1 = u64::from(f.u32(BAR0 + 4) & !0xf);
        let rom = f.u32(ROM);
        let rom_base = u64::from(rom & !0x7ff);
        [
            Decode {
                io: true,
                base: bar0,
                size: layout::REGISTERS_BAR_SIZE,
                live: command & COMMAND_IO != 0
                    && bar0 != 0
                    && bar0 + layout::REGISTERS_BAR_SIZE <= IO_END,
            },
            Decode {
                io: false,
                base: bar1,
                size: layout::MSIX_BAR_SIZE,
                live: command & COMMAND_MEMORY != 0 && bar1 != 0,
            },
            Decode {
                io: false,
                base: rom_base,
                size: self.rom_size,
                live: command & COMMAND_MEMORY != 0 && rom & 1 != 0 && rom_base != 0,
            },
        ]
    }

    /// Which of the three decode for sure: live and clear of everything
    /// else. `None`: which of two overlapping BARs got the range is the
    /// order of events' business.
    fn mapped(&self) -> [Option<bool>; 3] {
        let bars = self.decode();
        let ports = Decode {
            io: true,
            base: CONFIG_PORTS_BASE,
            size: CONFIG_PORTS_LEN,
            live: true,
        };
        let mut out = [Some(false); 3];
        for (i, bar) in bars.iter().enumerate() {
            if !bar.live {
                continue;
            }
            if bar.io {
                // The configuration ports were there first.
                out[i] = Some(!bar.overlaps(ports.base, ports.size));
            } else {
                let other = bars[3 - i];
                out[i] = if other.live && other.overlaps(bar.base, bar.size) {
                    None
                } else {
                    Some(true)
                };
            }
        }
        out
    }

    /// The buses agree with the BARs: a BAR that decodes answers at both
    /// ends, one that does not leaves nothing behind at its address.
    fn check_bars(&self, rig: &Rig) {
        let bars = self.decode();
        let mapped = self.mapped();
        for (i, bar) in bars.iter().enumerate() {
            let bus = if bar.io { &rig.pio } else { &rig.mmio };
            let mut byte = [0u8];
            match mapped[i] {
                Some(true) => {
                    assert!(
                        bus.read(bar.base, &mut byte),
                        "BAR {i} at {:#x} decodes but does not answer",
                        bar.base
                    );
                    if i == 2 {
                        assert_eq!(byte[0], self.rom.first().copied().unwrap_or(0xff));
                    }
                    assert!(bus.read(bar.base + bar.size - 1, &mut byte));
                }
                Some(false) => {
                    // Only where nothing else decodes.
                    let covered = bars.iter().zip(mapped).any(|(other, m)| {
                        other.io == bar.io && m != Some(false) && other.covers(bar.base)
                    }) || (bar.io
                        && bar.base.wrapping_sub(CONFIG_PORTS_BASE) < CONFIG_PORTS_LEN);
                    if !covered {
                        assert!(
                            !bus.read(bar.base, &mut byte),
                            "BAR {i} left behind at {:#x}",
                            bar.base
                        );
                    }
                }
                None => {}
            }
        }
        // The MSI-X table is where BAR1 says.
        if mapped[1] == Some(true) {
            let mut control = [0u8; 4];
            let at = bars[1].base + self.msix.table + 12;
            assert!(rig.mmio.read(at, &mut control));
            for (i, b) in control.iter().enumerate() {
                if let Some(expected) = self.msix.entries[12 + i] {
                    assert_eq!(*b, expected, "vector 0 control at BAR1");
                }
            }
        }
    }

    /// The function the address register selects and the register, if
    /// it is enabled and there is one.
    fn target(&self, data_offset: usize) -> Option<(usize, usize)> {
        let a = self.address;
        let (bus, slot, function) = ((a >> 16) & 0xff, (a >> 11) & 0x1f, (a >> 8) & 7);
        if a & 0x8000_0000 == 0 || bus != 0 || function != 0 || slot as usize >= FUNCTIONS {
            return None;
        }
        Some((slot as usize, (a & 0xfc) as usize + data_offset))
    }

    fn port_read(&mut self, rig: &Rig, offset: u64, width: usize) {
        let mut data = vec![0x5au8; width];
        let covered = offset + width as u64 <= CONFIG_PORTS_LEN;
        assert_eq!(rig.pio.read(CONFIG_PORTS_BASE + offset, &mut data), covered);
        if !covered {
            return;
        }
        match offset {
            0 if width == 4 => assert_eq!(data, self.address.to_le_bytes()),
            1 if width == 1 => assert_eq!(data[0], self.reset_control, "reset control"),
            4..=7 => match self.target(offset as usize - 4) {
                Some((slot, reg)) => {
                    let f = &self.functions[slot];
                    for (i, &b) in data.iter().enumerate() {
                        let at = reg + i;
                        assert_eq!(
                            (b ^ f.bytes[at]) & !f.volatile[at],
                            0,
                            "slot {slot} register {at:#x} reads {b:#x}, expected {:#x}",
                            f.bytes[at]
                        );
                    }
                    if slot == VIRTIO {
                        self.check_bar_registers(reg, &data);
                    }
                }
                None => assert!(data.iter().all(|&b| b == 0xff), "no function: all ones"),
            },
            _ => assert!(data.iter().all(|&b| b == 0xff)),
        }
    }

    /// What the BAR registers read must look like whatever was written:
    /// the type bits, and an address aligned to the size.
    fn check_bar_registers(&self, reg: usize, data: &[u8]) {
        let rom_mask = (self.rom_size as u32 - 1) & !1;
        let expect = [
            (BAR0, 0xfff, 0x1),
            (BAR0 + 4, 0xfff, 0x0),
            (BAR0 + 8, u32::MAX, 0),
            (BAR0 + 12, u32::MAX, 0),
            (BAR0 + 16, u32::MAX, 0),
            (BAR0 + 20, u32::MAX, 0),
            (ROM, rom_mask, 0),
        ];
        for (i, &b) in data.iter().enumerate() {
            let at = reg + i;
            for (bar, low, value) in expect {
                if (bar..bar + 4).contains(&at) {
                    let shift = 8 * (at - bar);
                    let (low, value) = ((low >> shift) as u8, (value >> shift) as u8);
                    assert_eq!(b & low, value, "BAR register byte {at:#x} reads {b:#x}");
                }
            }
        }
    }

    fn port_write(&mut self, rig: &Rig, offset: u64, data: &[u8]) {
        let covered = offset + data.len() as u64 <= CONFIG_PORTS_LEN;
        assert_eq!(rig.pio.write(CONFIG_PORTS_BASE + offset, data), covered);
        if !covered {
            return;
        }
        match offset {
            0 if data.len() == 4 => {
                self.address = u32::from_le_bytes(data.try_into().unwrap());
            }
            1 if data.len() == 1 => {
                self.reset_control = data[0] & 0x0e;
                if data[0] & 0x04 != 0 {
                    self.resets += 1;
                }
                assert_eq!(rig.resets.load(Ordering::SeqCst), self.resets, "resets");
            }
            4..=7 => {
                if let Some((slot, reg)) = self.target(offset as usize - 4) {
                    self.config_write(slot, reg, data);
                    self.check_bars(rig);
                }
            }
            _ => {}
        }
    }

    fn config_write(&mut self, slot: usize, reg: usize, data: &[u8]) {
        let f = &mut self.functions[slot];
        for (i, &v) in data.iter().enumerate() {
            let at = reg + i;
            f.bytes[at] = (f.bytes[at] & !f.writable[at]) | (v & f.writable[at]);
        }
        if slot == VIRTIO && overlaps(reg, data.len(), self.window + 16, 4) {
            // The window writes its data register (which the model does
            // not follow) into the BAR it points at.
            let f = &self.functions[VIRTIO];
            let bar = f.bytes[self.window + 4];
            let offset = u64::from(f.u32(self.window + 8));
            let len = u64::from(f.u32(self.window + 12).min(4));
            if bar == layout::MSIX_BAR {
                self.msix.forget(offset, len);
            }
        }
    }

    /// An access inside one of the virtio function's BARs.
    fn bar_access(&mut self, rig: &Rig, which: BarSel, offset: u16, width: u8, write: Option<u64>) {
        let index = match which {
            BarSel::Registers => 0,
            BarSel::Msix => 1,
            BarSel::Rom => 2,
        };
        let bar = self.decode()[index];
        let width = 1usize << (width % 4);
        let offset = u64::from(offset) % bar.size;
        let addr = bar.base.wrapping_add(offset);
        let bus = if bar.io { &rig.pio } else { &rig.mmio };
        let mapped = self.mapped()[index] == Some(true);
        let inside = offset + width as u64 <= bar.size;
        let mut data = write.unwrap_or(0).to_le_bytes()[..width].to_vec();
        let answered = if write.is_some() {
            bus.write(addr, &data)
        } else {
            bus.read(addr, &mut data)
        };
        if !mapped {
            // Whatever answered: if the MSI-X BAR may be there, the model
            // no longer knows the bytes written.
            let msix = self.decode()[1];
            if write.is_some() && !bar.io && self.mapped()[1] != Some(false) {
                let from = addr.max(msix.base);
                let to = addr.saturating_add(width as u64).min(msix.base + msix.size);
                if from < to {
                    self.msix.forget(from - msix.base, to - from);
                }
            }
            return;
        }
        assert_eq!(answered, inside, "access at {offset:#x} of BAR {index}");
        if !inside {
            return;
        }
        match (index, write) {
            (1, None) => self.msix.check_read(offset, &data),
            (1, Some(_)) => self.msix.write(offset, &data),
            (2, None) => {
                for (i, &b) in data.iter().enumerate() {
                    let expected = self.rom.get(offset as usize + i).copied().unwrap_or(0xff);
                    assert_eq!(b, expected, "ROM byte {:#x}", offset as usize + i);
                }
            }
            _ => {}
        }
    }

    fn cleanup(&mut self, rig: &Rig) {
        // Decoding off: the device takes its notification ioeventfds off
        // the shared VM.
        let address = 0x8000_0000 | (VIRTIO as u32) << 11 | COMMAND as u32;
        self.port_write(rig, 0, &address.to_le_bytes());
        self.port_write(rig, 4, &[0, 0]);
        // Everything still reads as the model says.
        for slot in 0..FUNCTIONS {
            for reg in (0..CONFIG_SIZE).step_by(4) {
                let address = 0x8000_0000 | (slot as u32) << 11 | reg as u32;
                self.port_write(rig, 0, &address.to_le_bytes());
                self.port_read(rig, 4, 4);
            }
        }
    }
}

impl MsixModel {
    fn forget(&mut self, offset: u64, len: u64) {
        for at in offset..offset + len {
            if let Some(i) = at.checked_sub(self.table)
                && let Some(byte) = self.entries.get_mut(i as usize)
            {
                *byte = None;
            }
        }
    }

    /// Accesses that cross from the table into the PBA are undefined.
    fn crosses(&self, offset: u64, len: usize) -> bool {
        offset < self.pba && offset + len as u64 > self.pba
    }

    fn check_read(&self, offset: u64, data: &[u8]) {
        if self.crosses(offset, data.len()) {
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            let at = offset + i as u64;
            if at >= self.pba {
                // No pending bits for vectors that do not exist.
                let first = (at - self.pba) * 8;
                let exists = (0..8)
                    .filter(|bit| first + bit < self.count as u64)
                    .fold(0u8, |acc, bit| acc | 1 << bit);
                assert_eq!(b & !exists, 0, "PBA byte {at:#x}");
            } else if let Some(expected) = at
                .checked_sub(self.table)
                .and_then(|i| self.entries.get(i as usize))
            {
                if let Some(expected) = expected {
                    assert_eq!(b, *expected, "MSI-X table byte {at:#x}");
                }
            } else {
                assert_eq!(b, 0, "outside the MSI-X table at {at:#x}");
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if self.crosses(offset, data.len()) {
            self.forget(offset, data.len() as u64);
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            let at = offset + i as u64;
            // The PBA is read-only.
            if at < self.pba
                && let Some(byte) = at
                    .checked_sub(self.table)
                    .and_then(|i| self.entries.get_mut(i as usize))
            {
                *byte = Some(b);
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let rom: Vec<u8> = (0..usize::from(input.rom_len) % 6000)
        .map(rom_byte)
        .collect();
    let rig = rig(rom.clone());
    let mut model = Model::new(&rig, rom);
    model.check_bars(&rig);

    for op in input.ops.iter().take(48) {
        match *op {
            Op::PortRead { offset, width } => {
                model.port_read(&rig, u64::from(offset % 8), width.bytes());
            }
            Op::PortWrite {
                offset,
                width,
                value,
            } => {
                let data = value.to_le_bytes();
                model.port_write(&rig, u64::from(offset % 8), &data[..width.bytes()]);
            }
            Op::ConfigRead { target, width } => {
                model.port_write(&rig, 0, &target.address().to_le_bytes());
                model.port_read(&rig, 4 + u64::from(target.register & 3), width.bytes());
            }
            Op::ConfigWrite {
                target,
                width,
                value,
            } => {
                model.port_write(&rig, 0, &target.address().to_le_bytes());
                let data = value.get().to_le_bytes();
                model.port_write(
                    &rig,
                    4 + u64::from(target.register & 3),
                    &data[..width.bytes()],
                );
            }
            Op::SizeBar { slot, bar, address } => {
                let slot = u32::from(slot % 2);
                let reg = match bar % 7 {
                    6 => ROM as u32,
                    n => BAR0 as u32 + 4 * u32::from(n),
                };
                let select = |model: &mut Model, reg: u32| {
                    let a = 0x8000_0000 | slot << 11 | reg;
                    model.port_write(&rig, 0, &a.to_le_bytes());
                };
                let command = model.functions[slot as usize].bytes[COMMAND];
                select(&mut model, COMMAND as u32);
                model.port_write(&rig, 4, &[command & !(COMMAND_IO | COMMAND_MEMORY)]);
                select(&mut model, reg);
                let old = model.functions[slot as usize].u32(reg as usize);
                model.port_write(&rig, 4, &u32::MAX.to_le_bytes());
                model.port_read(&rig, 4, 4);
                model.port_write(&rig, 4, &address.unwrap_or(old).to_le_bytes());
                select(&mut model, COMMAND as u32);
                model.port_write(&rig, 4, &[command]);
            }
            Op::BarAccess {
                bar,
                offset,
                width,
                write,
            } => model.bar_access(&rig, bar, offset, width, write),
        }
    }
    model.cleanup(&rig);
});
