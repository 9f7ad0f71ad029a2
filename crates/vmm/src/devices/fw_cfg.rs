//! QEMU's firmware configuration interface (docs/machine.md, "fw_cfg"), the way SeaBIOS
//! learns the memory map, CPU count, boot order and serial console.
//!
//! Ports: 0x510 selector (16-bit write), 0x511 data (byte reads), and the
//! DMA interface at 0x514 (address high, big-endian) / 0x518 (address low,
//! triggers the transfer). Files get selectors from 0x20 upward in the order
//! they are added; the directory at 0x19 lists them.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::bus::BusDevice;
use crate::memory::{GuestMemoryMmap, Layout};

mod persist;

pub const FW_CFG_BASE: u64 = 0x510;
/// Selector and data ports.
pub const FW_CFG_PORTS_LEN: u64 = 2;
pub const FW_CFG_DMA_BASE: u64 = 0x514;
pub const FW_CFG_DMA_LEN: u64 = 8;

pub const SIGNATURE: u16 = 0x00;
pub const ID: u16 = 0x01;
pub const RAM_SIZE: u16 = 0x03;
pub const NOGRAPHIC: u16 = 0x04;
pub const NB_CPUS: u16 = 0x05;
pub const MAX_CPUS: u16 = 0x0f;
pub const BOOT_MENU: u16 = 0x0e;
pub const FILE_DIR: u16 = 0x19;
pub const FILE_FIRST: u16 = 0x20;

/// ID bits: the traditional interface and DMA.
const ID_TRADITIONAL: u32 = 1;
const ID_DMA: u32 = 2;
/// What reading the DMA address registers returns: "QEMU CFG".
const DMA_SIGNATURE: u64 = 0x5145_4d55_2043_4647;

const DMA_ERROR: u32 = 0x01;
const DMA_READ: u32 = 0x02;
const DMA_SKIP: u32 = 0x04;
const DMA_SELECT: u32 = 0x08;
const DMA_WRITE: u32 = 0x10;

/// Longest file name, including the NUL.
const FILE_NAME_LEN: usize = 56;
/// Most files the directory can hold before selectors run out.
const MAX_FILES: usize = 0x4000 - FILE_FIRST as usize;

#[derive(Debug, PartialEq, Eq)]
pub enum FwCfgError {
    NameTooLong(String),
    Duplicate(String),
    TooManyFiles,
}

impl std::fmt::Display for FwCfgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FwCfgError::NameTooLong(n) => write!(f, "fw_cfg file name too long: {n}"),
            FwCfgError::Duplicate(n) => write!(f, "fw_cfg file added twice: {n}"),
            FwCfgError::TooManyFiles => f.write_str("too many fw_cfg files"),
        }
    }
}

impl std::error::Error for FwCfgError {}

pub struct FwCfg {
    /// Item contents by selector.
    items: Vec<(u16, Vec<u8>)>,
    files: Vec<(String, u16)>,
    selected: u16,
    offset: usize,
    dma_high: u32,
    mem: GuestMemoryMmap,
}

impl FwCfg {
    /// The fixed items every VM has.
    pub fn new(mem: GuestMemoryMmap, layout: &Layout, vcpus: u16) -> FwCfg {
        let mut cfg = FwCfg {
            items: Vec::new(),
            files: Vec::new(),
            selected: 0,
            offset: 0,
            dma_high: 0,
            mem,
        };
        cfg.set_item(SIGNATURE, b"QEMU".to_vec());
        cfg.set_item(ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());
        cfg.set_item(RAM_SIZE, layout.memory.to_le_bytes().to_vec());
        cfg.set_item(NOGRAPHIC, 1u16.to_le_bytes().to_vec());
        cfg.set_item(NB_CPUS, vcpus.to_le_bytes().to_vec());
        cfg.set_item(MAX_CPUS, vcpus.to_le_bytes().to_vec());
        cfg.set_item(BOOT_MENU, 0u16.to_le_bytes().to_vec());
        cfg.rebuild_directory();
        cfg
    }

    fn set_item(&mut self, selector: u16, data: Vec<u8>) {
        match self.items.iter_mut().find(|(s, _)| *s == selector) {
            Some(item) => item.1 = data,
            None => self.items.push((selector, data)),
        }
    }

    /// Adds a named file; selectors are handed out in call order.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, FwCfgError> {
        if name.len() >= FILE_NAME_LEN {
            return Err(FwCfgError::NameTooLong(name.to_string()));
        }
        if self.files.iter().any(|(n, _)| n == name) {
            return Err(FwCfgError::Duplicate(name.to_string()));
        }
        if self.files.len() >= MAX_FILES {
            return Err(FwCfgError::TooManyFiles);
        }
        let selector = FILE_FIRST + self.files.len() as u16;
        self.files.push((name.to_string(), selector));
        self.set_item(selector, data);
        self.rebuild_directory();
        Ok(selector)
    }

    fn rebuild_directory(&mut self) {
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (name, selector) in &self.files {
            let size = self
                .items
                .iter()
                .find(|(s, _)| s == selector)
                .map_or(0, |(_, d)| d.len());
            dir.extend((size as u32).to_be_bytes());
            dir.extend(selector.to_be_bytes());
            dir.extend([0u8; 2]);
            let mut field = [0u8; FILE_NAME_LEN];
            field[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend(field);
        }
        self.set_item(FILE_DIR, dir);
    }

    fn current(&self) -> &[u8] {
        self.items
            .iter()
            .find(|(s, _)| *s == self.selected)
            .map_or(&[][..], |(_, d)| d.as_slice())
    }

    fn select(&mut self, selector: u16) {
        self.selected = selector;
        self.offset = 0;
    }

    fn read_byte(&mut self) -> u8 {
        let byte = self.current().get(self.offset).copied().unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        byte
    }

    /// Runs the DMA request whose descriptor is at `addr` and writes the
    /// resulting control word back. Guest addresses are checked by
    /// vm-memory: a descriptor or buffer outside guest RAM is an error, never
    /// an access outside it.
    fn dma(&mut self, addr: u64) {
        let desc = GuestAddress(addr);
        let mut raw = [0u8; 16];
        if self.mem.read_slice(&mut raw, desc).is_err() {
            // As QEMU does: the error bit goes to the control word if that
            // much of the descriptor is in memory, so a guest polling it
            // does not wait forever. Never part of the word: a write cut off
            // by the end of memory would leave its first bytes.
            if GuestMemoryBackend::check_range(&self.mem, desc, 4) {
                let _ = self.mem.write_slice(&DMA_ERROR.to_be_bytes(), desc);
            }
            return;
        }
        let control = u32::from_be_bytes(raw[0..4].try_into().unwrap_or_default());
        let mut length = u32::from_be_bytes(raw[4..8].try_into().unwrap_or_default()) as usize;
        let mut target = u64::from_be_bytes(raw[8..16].try_into().unwrap_or_default());

        if control & DMA_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let mut status = 0;
        if control & DMA_WRITE != 0 {
            status = DMA_ERROR;
        } else if control & (DMA_READ | DMA_SKIP) != 0 {
            while length > 0 {
                let data = self.current();
                let available = data.len().saturating_sub(self.offset);
                let chunk = length.min(if available == 0 { length } else { available });
                if control & DMA_READ != 0 {
                    let result = if available == 0 {
                        // Past the end the item reads as zeros.
                        let zeros = vec![0u8; chunk.min(64 * 1024)];
                        let n = zeros.len();
                        let r = self.mem.write_slice(&zeros, GuestAddress(target));
                        length -= n;
                        target = target.wrapping_add(n as u64);
                        self.offset = self.offset.saturating_add(n);
                        r
                    } else {
                        let slice = data[self.offset..self.offset + chunk].to_vec();
                        let r = self.mem.write_slice(&slice, GuestAddress(target));
                        length -= chunk;
                        target = target.wrapping_add(chunk as u64);
                        self.offset += chunk;
                        r
                    };
                    if result.is_err() {
                        status = DMA_ERROR;
                        break;
                    }
                } else {
                    self.offset = self.offset.saturating_add(length);
                    length = 0;
                }
            }
        }
        let _ = self.mem.write_slice(&status.to_be_bytes(), desc);
    }
}

/// The selector and data ports (0x510, 0x511).
pub struct FwCfgPorts(pub std::sync::Arc<std::sync::Mutex<FwCfg>>);
/// The DMA address registers (0x514..0x51b).
pub struct FwCfgDma(pub std::sync::Arc<std::sync::Mutex<FwCfg>>);

fn lock(cfg: &std::sync::Mutex<FwCfg>) -> std::sync::MutexGuard<'_, FwCfg> {
    cfg.lock().unwrap_or_else(|e| e.into_inner())
}

impl BusDevice for FwCfgPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut cfg = lock(&self.0);
        match offset {
            // Reading the selector port returns 0.
            0 => data.fill(0),
            _ => {
                for b in data.iter_mut() {
                    *b = cfg.read_byte();
                }
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.len() >= 2 {
            lock(&self.0).select(u16::from_le_bytes([data[0], data[1]]));
        } else if offset == 0 && data.len() == 1 {
            lock(&self.0).select(u16::from(data[0]));
        }
        // Writes to the data port are ignored.
    }
}

impl BusDevice for FwCfgDma {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let sig = DMA_SIGNATURE.to_be_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = sig.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 4 {
            return;
        }
        let value = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let mut cfg = lock(&self.0);
        match offset {
            0 => cfg.dma_high = value,
            4 => {
                let addr = (u64::from(cfg.dma_high) << 32) | u64::from(value);
                cfg.dma_high = 0;
                cfg.dma(addr);
            }
            _ => {}
        }
    }
}

/// The `etc/e820` file: one {address, length, type} entry (little-endian
/// 8 + 8 + 4 bytes) per range of the layout.
pub fn e820_file(layout: &Layout) -> Vec<u8> {
    let mut out = Vec::new();
    for range in &layout.ranges {
        out.extend(range.start.to_le_bytes());
        out.extend(range.size.to_le_bytes());
        out.extend(range.kind.e820_type().to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestRam, MIB};
    use std::sync::{Arc, Mutex};

    fn setup() -> (GuestRam, Arc<Mutex<FwCfg>>) {
        let ram = GuestRam::new(Layout::new(64 * MIB), "fwcfg-test").unwrap();
        let cfg = FwCfg::new(ram.mem.clone(), &ram.layout, 2);
        (ram, Arc::new(Mutex::new(cfg)))
    }

    fn read_item(ports: &mut FwCfgPorts, selector: u16, len: usize) -> Vec<u8> {
        ports.write(0, &selector.to_le_bytes());
        let mut out = vec![0u8; len];
        for b in out.iter_mut() {
            let mut one = [0u8];
            ports.read(1, &mut one);
            *b = one[0];
        }
        out
    }

    #[test]
    fn signature_id_and_directory() {
        let (_ram, cfg) = setup();
        lock(&cfg)
            .add_file("etc/sercon-port", 0x3f8u16.to_le_bytes().to_vec())
            .unwrap();
        lock(&cfg).add_file("bootorder", b"HALT".to_vec()).unwrap();
        let mut ports = FwCfgPorts(cfg.clone());
        assert_eq!(read_item(&mut ports, SIGNATURE, 4), b"QEMU");
        assert_eq!(read_item(&mut ports, ID, 4), 3u32.to_le_bytes());
        assert_eq!(read_item(&mut ports, NB_CPUS, 2), 2u16.to_le_bytes());
        let dir = read_item(&mut ports, FILE_DIR, 4 + 2 * 64);
        assert_eq!(&dir[0..4], &2u32.to_be_bytes());
        assert_eq!(&dir[4..8], &2u32.to_be_bytes());
        assert_eq!(&dir[8..10], &0x20u16.to_be_bytes());
        assert_eq!(&dir[12..27], b"etc/sercon-port");
        assert_eq!(&dir[68 + 4..68 + 6], &0x21u16.to_be_bytes());
        assert_eq!(
            read_item(&mut ports, 0x21, 6),
            b"HALT\0\0",
            "zeros past the end"
        );
        assert_eq!(
            lock(&cfg).add_file("bootorder", vec![]),
            Err(FwCfgError::Duplicate("bootorder".into()))
        );
        assert!(lock(&cfg).add_file(&"x".repeat(56), vec![]).is_err());
    }

    #[test]
    fn dma_read_skip_and_bad_addresses() {
        let (ram, cfg) = setup();
        let sel = lock(&cfg)
            .add_file("etc/test", b"0123456789".to_vec())
            .unwrap();
        let mut dma = FwCfgDma(cfg.clone());
        let mut sig = [0u8; 8];
        dma.read(0, &mut sig);
        assert_eq!(&sig, b"QEMU CFG");

        let desc = 0x1000u64;
        let buf = 0x2000u64;
        let write_desc = |control: u32, len: u32, addr: u64| {
            let mut d = Vec::new();
            d.extend(control.to_be_bytes());
            d.extend(len.to_be_bytes());
            d.extend(addr.to_be_bytes());
            ram.mem.write_slice(&d, GuestAddress(desc)).unwrap();
        };
        let kick = |dma: &mut FwCfgDma| {
            dma.write(0, &0u32.to_be_bytes());
            dma.write(4, &(desc as u32).to_be_bytes());
        };
        write_desc((u32::from(sel) << 16) | DMA_SELECT | DMA_SKIP, 3, 0);
        kick(&mut dma);
        write_desc(DMA_READ, 4, buf);
        kick(&mut dma);
        let mut got = [0u8; 4];
        ram.mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
        assert_eq!(&got, b"3456");
        assert_eq!(ram.mem.read_obj::<u32>(GuestAddress(desc)).unwrap(), 0);

        // A buffer in the PCI hole: error status, nothing written anywhere.
        write_desc(DMA_READ, 4, 0xF000_0000);
        kick(&mut dma);
        assert_eq!(
            u32::from_be(ram.mem.read_obj::<u32>(GuestAddress(desc)).unwrap()),
            DMA_ERROR
        );
        // A write request is refused.
        write_desc(DMA_WRITE, 4, buf);
        kick(&mut dma);
        assert_eq!(
            u32::from_be(ram.mem.read_obj::<u32>(GuestAddress(desc)).unwrap()),
            DMA_ERROR
        );
        // A descriptor outside guest memory is ignored.
        dma.write(0, &0u32.to_be_bytes());
        dma.write(4, &0xF000_0000u32.to_be_bytes());
    }

    #[test]
    fn dma_descriptor_cut_off_by_the_end_of_ram_fails_in_its_control_word() {
        let (ram, cfg) = setup();
        let mut dma = FwCfgDma(cfg);
        // The last 8 bytes of RAM below the PCI hole: the control word is
        // in memory, the buffer address is not.
        let desc = ram.layout.low_ram_end() - 8;
        let control = DMA_READ.to_be_bytes();
        ram.mem.write_slice(&control, GuestAddress(desc)).unwrap();
        dma.write(0, &0u32.to_be_bytes());
        dma.write(4, &(desc as u32).to_be_bytes());
        let mut word = [0u8; 4];
        ram.mem.read_slice(&mut word, GuestAddress(desc)).unwrap();
        assert_eq!(u32::from_be_bytes(word), DMA_ERROR);

        // A control word cut off by the end of RAM is left alone.
        let desc = ram.layout.low_ram_end() - 2;
        ram.mem
            .write_slice(&[0x5a, 0x5a], GuestAddress(desc))
            .unwrap();
        dma.write(0, &0u32.to_be_bytes());
        dma.write(4, &(desc as u32).to_be_bytes());
        let mut tail = [0u8; 2];
        ram.mem.read_slice(&mut tail, GuestAddress(desc)).unwrap();
        assert_eq!(tail, [0x5a, 0x5a]);
    }

    #[test]
    fn e820_layout() {
        let layout = Layout::new(64 * MIB);
        let e820 = e820_file(&layout);
        assert_eq!(e820.len(), 20 * layout.ranges.len());
        assert_eq!(&e820[0..8], &0u64.to_le_bytes());
        assert_eq!(&e820[8..16], &0xA0000u64.to_le_bytes());
        assert_eq!(&e820[16..20], &1u32.to_le_bytes());
    }
}
