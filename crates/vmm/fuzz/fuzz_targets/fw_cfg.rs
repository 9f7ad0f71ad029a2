//! A hostile guest driving fw_cfg: selector and data-port accesses of
//! every width at and around 0x510–0x51b, and DMA requests whose
//! descriptor address, control word (select, read, skip, write and
//! undefined bits), selector, length and buffer address are the fuzzer's,
//! against 1 MiB of guest memory with a hole in it. Host-side files (names
//! too long, duplicates, any contents) are added first.
//!
//! A model of the interface (QEMU's docs/specs/fw_cfg.rst) follows along.
//! What must hold: nothing panics; an access is answered exactly when a
//! register covers it; the data port and DMA reads return the selected
//! item's bytes (zeros past its end), the directory lists the files as
//! added; a DMA request writes its status back to its control word (0, or
//! the error bit for a write request, a buffer outside guest memory or a
//! descriptor that cannot be read whole) and changes no guest byte outside
//! its buffer and that control word; a failed transfer leaves each buffer
//! byte either untouched or holding the item's byte.

#![no_main]

#[path = "common/width.rs"]
mod width;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm::bus::{Bus, shared};
use vmm::devices::fw_cfg::{self, FILE_DIR, FILE_FIRST, FwCfg, FwCfgDma, FwCfgError, FwCfgPorts};
use vmm::memory::{GuestMemoryMmap, Layout, MIB};
use width::Width;

/// Guest RAM: two regions with a one-page hole between them.
const REGIONS: [(u64, u64); 2] = [(0, 0xc_0000), (0xc_1000, 0x10_0000)];
const MEM_END: u64 = 0x10_0000;
/// What guest memory holds before the guest writes anything.
const FILL: u8 = 0xa5;

const PORTS: u16 = fw_cfg::FW_CFG_BASE as u16;
const DMA_PORTS: u16 = fw_cfg::FW_CFG_DMA_BASE as u16;
const DMA_ERROR: u32 = 0x01;
const DMA_READ: u32 = 0x02;
const DMA_SKIP: u32 = 0x04;
const DMA_SELECT: u32 = 0x08;
const DMA_WRITE: u32 = 0x10;
const FILE_NAME_LEN: usize = 56;
const PATTERN_LEN: usize = 4099;

/// Buffers of guest memory's size kept between runs: a fresh megabyte
/// or two per run would cost more than the run itself.
static BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn buffer(fill: u8) -> Vec<u8> {
    let mut buf = BUFFERS.lock().unwrap().pop().unwrap_or_default();
    buf.clear();
    buf.resize(MEM_END as usize, fill);
    buf
}

fn give_back(buf: Vec<u8>) {
    BUFFERS.lock().unwrap().push(buf);
}

fn memory() -> &'static GuestMemoryMmap {
    static MEM: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEM.get_or_init(|| {
        let ranges: Vec<_> = REGIONS
            .iter()
            .map(|&(start, end)| (GuestAddress(start), (end - start) as usize))
            .collect();
        GuestMemoryMmap::from_ranges(&ranges).unwrap()
    })
}

/// Guest memory region `index` as host memory, for filling and comparing
/// at memcpy speed.
fn region(index: usize) -> &'static mut [u8] {
    let (start, end) = REGIONS[index];
    let host = memory().get_host_address(GuestAddress(start)).unwrap();
    // SAFETY: the region is one mapping of `end - start` bytes that lives
    // as long as the process; the device only touches it while the
    // target calls into it, never while this slice is used.
    unsafe { std::slice::from_raw_parts_mut(host, (end - start) as usize) }
}

/// Whether `[addr, addr + len)` lies in one region of guest memory.
fn in_memory(addr: u64, len: u64) -> bool {
    let end = u128::from(addr) + u128::from(len);
    REGIONS
        .iter()
        .any(|&(start, stop)| addr >= start && end <= u128::from(stop))
}

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    /// Around the 55-byte limit.
    Long(u8),
    Raw(String),
}

impl Name {
    fn text(&self) -> String {
        const KNOWN: [&str; 5] = [
            "etc/e820",
            "bootorder",
            "etc/sercon-port",
            "etc/table-loader",
            "genroms/vmd-linuxboot.bin",
        ];
        match self {
            Name::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].to_string(),
            Name::Long(n) => "n".repeat(50 + usize::from(*n % 10)),
            Name::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct HostFile {
    name: Name,
    data: Vec<u8>,
    /// Repeats `data` up to this many 16-byte blocks (files beyond the
    /// 64 KiB a zero-fill chunk covers).
    grow: Option<u16>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Selector {
    /// One of the items that exist.
    Known(u8),
    Raw(u16),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    /// Anywhere in guest memory or just past it.
    Near(u32),
    /// Close to an edge of a region.
    Edge(u8, i16),
    Wild(u64),
}

impl Addr {
    fn resolve(self) -> u64 {
        match self {
            Addr::Near(a) => u64::from(a) % (MEM_END + 0x2000),
            Addr::Edge(which, delta) => {
                let edges = [0, REGIONS[0].1, REGIONS[1].0, REGIONS[1].1];
                edges[usize::from(which) % edges.len()].wrapping_add_signed(i64::from(delta))
            }
            Addr::Wild(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Length {
    Small(u8),
    Medium(u16),
    Any(u32),
}

impl Length {
    fn resolve(self) -> u32 {
        match self {
            Length::Small(n) => u32::from(n),
            Length::Medium(n) => u32::from(n),
            Length::Any(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Request {
    Read,
    Skip,
    Write,
    /// The control word's low 16 bits: any combination, undefined bits.
    Raw(u16),
}

impl Request {
    fn bits(self) -> u32 {
        match self {
            Request::Read => DMA_READ,
            Request::Skip => DMA_SKIP,
            Request::Write => DMA_WRITE,
            Request::Raw(bits) => u32::from(bits),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Dma {
    descriptor: Addr,
    request: Request,
    /// Selects `selector` first.
    select: bool,
    selector: Selector,
    length: Length,
    buffer: Addr,
    /// Writes the high address register first (else the last value
    /// written there counts).
    write_high: bool,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Select { selector: Selector, byte_wide: bool },
    ReadData { count: u8 },
    PortRead { port: u8, width: Width },
    PortWrite { port: u8, width: Width, value: u32 },
    Dma(Dma),
}

#[derive(Arbitrary, Debug)]
struct Input {
    vcpus: u16,
    files: Vec<HostFile>,
    ops: Vec<Op>,
}

/// What the interface should do, tracked independently of the device.
struct Model {
    items: BTreeMap<u16, Vec<u8>>,
    files: Vec<(String, u16)>,
    selected: u16,
    /// The read position; unknown after a failed transfer (how far it
    /// got is the device's business) until the next selection.
    offset: Option<u64>,
    dma_high: u32,
    /// Guest memory as it must be.
    shadow: Vec<u8>,
}

impl Model {
    fn new(vcpus: u16) -> Model {
        let mut items = BTreeMap::new();
        items.insert(fw_cfg::SIGNATURE, b"QEMU".to_vec());
        // Traditional interface and DMA.
        items.insert(fw_cfg::ID, 3u32.to_le_bytes().to_vec());
        items.insert(fw_cfg::RAM_SIZE, MIB.to_le_bytes().to_vec());
        items.insert(fw_cfg::NOGRAPHIC, 1u16.to_le_bytes().to_vec());
        items.insert(fw_cfg::NB_CPUS, vcpus.to_le_bytes().to_vec());
        items.insert(fw_cfg::MAX_CPUS, vcpus.to_le_bytes().to_vec());
        items.insert(fw_cfg::BOOT_MENU, 0u16.to_le_bytes().to_vec());
        let mut model = Model {
            items,
            files: Vec::new(),
            selected: 0,
            offset: Some(0),
            dma_high: 0,
            shadow: buffer(FILL),
        };
        model.directory();
        model
    }

    /// The directory: a big-endian count, then {size, selector,
    /// reserved, name[56]} per file.
    fn directory(&mut self) {
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (name, selector) in &self.files {
            dir.extend((self.items[selector].len() as u32).to_be_bytes());
            dir.extend(selector.to_be_bytes());
            dir.extend([0, 0]);
            let mut field = [0u8; FILE_NAME_LEN];
            field[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend(field);
        }
        self.items.insert(FILE_DIR, dir);
    }

    fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, FwCfgError> {
        if name.len() >= FILE_NAME_LEN {
            return Err(FwCfgError::NameTooLong(name.to_string()));
        }
        if self.files.iter().any(|(n, _)| n == name) {
            return Err(FwCfgError::Duplicate(name.to_string()));
        }
        let selector = FILE_FIRST + self.files.len() as u16;
        self.files.push((name.to_string(), selector));
        self.items.insert(selector, data);
        self.directory();
        Ok(selector)
    }

    fn selector(&self, s: Selector) -> u16 {
        match s {
            Selector::Known(i) => {
                let known: Vec<u16> = self.items.keys().copied().collect();
                known[usize::from(i) % known.len()]
            }
            Selector::Raw(s) => s,
        }
    }

    fn select(&mut self, selector: u16) {
        self.selected = selector;
        self.offset = Some(0);
    }

    /// The selected item's byte at the read position; zero past its end.
    fn byte_at(&self) -> Option<u8> {
        let item = self.items.get(&self.selected).map_or(&[][..], |d| d);
        let at = usize::try_from(self.offset?).ok();
        Some(at.and_then(|at| item.get(at)).copied().unwrap_or(0))
    }

    fn read_byte(&mut self) -> Option<u8> {
        let byte = self.byte_at();
        self.offset = self.offset.map(|o| o.saturating_add(1));
        byte
    }

    /// Checks what a DMA request with its descriptor at `addr` did to
    /// guest memory and follows its effect on the selection.
    fn dma(&mut self, addr: u64, mem: &GuestMemoryMmap) {
        let control_word = |mem: &GuestMemoryMmap| {
            let mut word = [0u8; 4];
            mem.read_slice(&mut word, GuestAddress(addr)).unwrap();
            word
        };
        if !in_memory(addr, 16) {
            if in_memory(addr, 4) {
                // A descriptor that cannot be read is a failed request;
                // its control word says so if it is in memory at all.
                let status = DMA_ERROR.to_be_bytes();
                assert_eq!(control_word(mem), status, "unreadable descriptor status");
                self.shadow[addr as usize..addr as usize + 4].copy_from_slice(&status);
            }
            return;
        }
        let at = addr as usize;
        let raw = &self.shadow[at..at + 16];
        let control = u32::from_be_bytes(raw[0..4].try_into().unwrap());
        let length = u64::from(u32::from_be_bytes(raw[4..8].try_into().unwrap()));
        let target = u64::from_be_bytes(raw[8..16].try_into().unwrap());
        if control & DMA_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let status = if control & DMA_WRITE != 0 {
            // Nothing is writable.
            DMA_ERROR
        } else if control & DMA_READ != 0 {
            let ok = length == 0 || in_memory(target, length);
            let end = u128::from(target) + u128::from(length);
            for (index, &(start, stop)) in REGIONS.iter().enumerate() {
                let lo = target.max(start);
                let hi = end.min(u128::from(stop)) as u64;
                if hi <= lo {
                    continue;
                }
                let (lo, hi) = (lo as usize, hi as usize);
                let actual = &region(index)[lo - start as usize..hi - start as usize];
                let old = &mut self.shadow[lo..hi];
                // The item's bytes from the read position on, zeros past
                // its end.
                let expected = self.offset.map(|offset| {
                    let from = offset.saturating_add(lo as u64 - target);
                    let item = self.items.get(&self.selected).map_or(&[][..], |d| d);
                    let mut bytes = usize::try_from(from)
                        .ok()
                        .and_then(|from| item.get(from..))
                        .unwrap_or_default()
                        .to_vec();
                    bytes.resize(hi - lo, 0);
                    bytes.truncate(hi - lo);
                    bytes
                });
                // The status overwrites the data in the control word.
                let mut expected = expected;
                for a in addr.max(lo as u64)..(addr + 4).min(hi as u64) {
                    let i = a as usize - lo;
                    old[i] = actual[i];
                    if let Some(e) = expected.as_mut() {
                        e[i] = actual[i];
                    }
                }
                if let Some(expected) = expected {
                    if ok {
                        if actual != expected {
                            let at = first_difference(actual, &expected).unwrap();
                            panic!(
                                "DMA read at {:#x}: {:#x}, the item has {:#x}",
                                lo + at,
                                actual[at],
                                expected[at]
                            );
                        }
                    } else {
                        // A failed transfer got some way: the item's
                        // bytes, then what was there.
                        let done = first_difference(actual, &expected).unwrap_or(actual.len());
                        if actual[done..] != old[done..] {
                            let at =
                                done + first_difference(&actual[done..], &old[done..]).unwrap();
                            panic!(
                                "failed DMA read left {:#x} at {:#x} (was {:#x}, the item has {:#x})",
                                actual[at],
                                lo + at,
                                old[at],
                                expected[at]
                            );
                        }
                    }
                }
                old.copy_from_slice(actual);
            }
            if ok {
                self.offset = self.offset.map(|o| o.saturating_add(length));
                0
            } else {
                self.offset = None;
                DMA_ERROR
            }
        } else {
            if control & DMA_SKIP != 0 {
                self.offset = self.offset.map(|o| o.saturating_add(length));
            }
            0
        };
        let status = status.to_be_bytes();
        assert_eq!(
            control_word(mem),
            status,
            "DMA status for control {control:#x}, length {length:#x}, buffer {target:#x}"
        );
        self.shadow[at..at + 4].copy_from_slice(&status);
    }
}

/// Where two slices of one length first differ, comparing a page at a
/// time (a byte loop is slow under coverage instrumentation).
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    const STEP: usize = 4096;
    let chunk = a
        .chunks(STEP)
        .zip(b.chunks(STEP))
        .position(|(x, y)| x != y)?;
    let from = chunk * STEP;
    (from..a.len()).find(|&i| a[i] != b[i])
}

/// Whether a register covers `[port, port + len)`.
fn covered(port: u16, len: usize) -> Option<(u16, u16)> {
    let end = u32::from(port) + len as u32;
    for (base, size) in [
        (PORTS, fw_cfg::FW_CFG_PORTS_LEN as u16),
        (DMA_PORTS, fw_cfg::FW_CFG_DMA_LEN as u16),
    ] {
        if port >= base && end <= u32::from(base + size) {
            return Some((base, port - base));
        }
    }
    None
}

fuzz_target!(|input: Input| {
    let mem = memory();
    for index in 0..REGIONS.len() {
        region(index).fill(FILL);
    }
    let layout = Layout::new(MIB);
    let mut device = FwCfg::new(mem.clone(), &layout, input.vcpus);
    let mut model = Model::new(input.vcpus);
    // One file whose every byte says where it is, so a read from the
    // wrong position shows.
    let pattern: Vec<u8> = (0..PATTERN_LEN).map(|i| (i * 7 + i / 251) as u8).collect();
    assert_eq!(
        device.add_file("etc/fuzz-pattern", pattern.clone()),
        model.add_file("etc/fuzz-pattern", pattern)
    );
    for file in input.files.iter().take(8) {
        let name = file.name.text();
        let mut data = file.data.clone();
        if let (Some(blocks), false) = (file.grow, data.is_empty()) {
            let len = usize::from(blocks) * 16;
            data = data.repeat(len.div_ceil(data.len()));
            data.truncate(len);
        }
        let got = device.add_file(&name, data.clone());
        assert_eq!(got, model.add_file(&name, data), "adding {name:?}");
    }
    let device = Arc::new(Mutex::new(device));
    let bus = Bus::new();
    bus.insert(
        fw_cfg::FW_CFG_BASE,
        fw_cfg::FW_CFG_PORTS_LEN,
        shared(FwCfgPorts(device.clone())),
    )
    .unwrap();
    bus.insert(
        fw_cfg::FW_CFG_DMA_BASE,
        fw_cfg::FW_CFG_DMA_LEN,
        shared(FwCfgDma(device)),
    )
    .unwrap();

    let port_write = |model: &mut Model, port: u16, data: &[u8]| {
        let target = covered(port, data.len());
        assert_eq!(bus.write(u64::from(port), data), target.is_some());
        match target {
            Some((PORTS, 0)) if data.len() >= 2 => {
                model.select(u16::from_le_bytes([data[0], data[1]]))
            }
            Some((PORTS, 0)) => model.select(u16::from(data[0])),
            Some((DMA_PORTS, offset)) if data.len() == 4 => {
                let value = u32::from_be_bytes(data.try_into().unwrap());
                if offset == 0 {
                    model.dma_high = value;
                } else if offset == 4 {
                    let addr = (u64::from(model.dma_high) << 32) | u64::from(value);
                    model.dma_high = 0;
                    model.dma(addr, mem);
                }
            }
            _ => {}
        }
    };

    for op in input.ops.iter().take(64) {
        match *op {
            Op::Select {
                selector,
                byte_wide,
            } => {
                let s = model.selector(selector);
                if byte_wide {
                    port_write(&mut model, PORTS, &[s as u8]);
                } else {
                    port_write(&mut model, PORTS, &s.to_le_bytes());
                }
            }
            Op::ReadData { count } => {
                for _ in 0..count {
                    let mut byte = [0u8];
                    assert!(bus.read(u64::from(PORTS) + 1, &mut byte));
                    if let Some(expected) = model.read_byte() {
                        assert_eq!(byte[0], expected, "data port, item {:#x}", model.selected);
                    }
                }
            }
            Op::PortRead { port, width } => {
                let port = PORTS - 8 + u16::from(port % 0x18);
                let mut data = vec![0xeeu8; width.bytes()];
                let target = covered(port, data.len());
                assert_eq!(bus.read(u64::from(port), &mut data), target.is_some());
                match target {
                    Some((PORTS, 0)) => assert!(data.iter().all(|&b| b == 0)),
                    Some((PORTS, _)) => {
                        if let Some(expected) = model.read_byte() {
                            assert_eq!(data, [expected]);
                        }
                    }
                    Some((_, offset)) => {
                        let sig = b"QEMU CFG";
                        assert_eq!(data, sig[offset as usize..offset as usize + data.len()]);
                    }
                    None => {}
                }
            }
            Op::PortWrite { port, width, value } => {
                let port = PORTS - 8 + u16::from(port % 0x18);
                port_write(&mut model, port, &value.to_le_bytes()[..width.bytes()]);
            }
            Op::Dma(ref dma) => {
                let addr = dma.descriptor.resolve();
                let mut control = dma.request.bits();
                if dma.select {
                    control |= DMA_SELECT;
                }
                if control & DMA_SELECT != 0 {
                    control |= u32::from(model.selector(dma.selector)) << 16;
                }
                let mut descriptor = Vec::with_capacity(16);
                descriptor.extend(control.to_be_bytes());
                descriptor.extend(dma.length.resolve().to_be_bytes());
                descriptor.extend(dma.buffer.resolve().to_be_bytes());
                if in_memory(addr, 16) {
                    mem.write_slice(&descriptor, GuestAddress(addr)).unwrap();
                    model.shadow[addr as usize..addr as usize + 16].copy_from_slice(&descriptor);
                }
                if dma.write_high {
                    port_write(&mut model, DMA_PORTS, &((addr >> 32) as u32).to_be_bytes());
                }
                port_write(&mut model, DMA_PORTS + 4, &(addr as u32).to_be_bytes());
            }
        }
    }

    // Nothing outside the buffers and control words changed.
    for (index, &(start, end)) in REGIONS.iter().enumerate() {
        let actual = region(index);
        let expected = &model.shadow[start as usize..end as usize];
        if actual != expected {
            let at = (0..actual.len())
                .find(|&a| actual[a] != expected[a])
                .unwrap();
            panic!("guest memory changed at {:#x}", start + at as u64);
        }
    }
    give_back(std::mem::take(&mut model.shadow));
});
