//! Hostile boot images: whatever a user passes to `vmctl start -b` (a
//! bzImage, an ELF kernel with or without a PVH note, OpenBSD's, gzip'ed
//! or not, or anything else), with a command line, an initrd and the
//! firmware a real-mode kernel needs, recognised and checked by
//! `BootImage::prepare` and loaded by `BootImage::load` into a guest of
//! 2 to 48 MiB, as the VM process does it.
//!
//! Input: four bytes of options, the image, then the command line.
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | bit 0 command line, 1 initrd, 2 firmware, 3 boot MAC, 4 gzip the image, 5 a large sparse initrd, 6–7 guest memory |
//! | 1 | command line length, taken from the end of the input |
//! | 2 | initrd size |
//! | 3 | firmware size (64 KiB blocks, or a bad size) |
//!
//! What must hold: nothing panics, allocates without bound or hangs;
//! the result is a clean `BootError` or a loaded image, and then what
//! was loaded lies in guest RAM (the layout's RAM ranges, not the
//! reserved areas or outside memory): the bzImage's protected-mode part
//! at its load address with its bytes, every loaded ELF segment and
//! OpenBSD's symbol area, the initrd (page-aligned, with its bytes); the
//! command line and the boot structures are where the boot protocol says;
//! a real-mode kernel's pieces are in fw_cfg as they were given.

#![no_main]

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use linux_loader::loader::bootparam::boot_params;
use vm_memory::{Bytes, GuestAddress};
use vmm::boot::elf;
use vmm::boot::{BootImage, BootRequest, Entry, ImageKind, bzimage, openbsd, pvh};
use vmm::bus::BusDevice;
use vmm::devices::fw_cfg::{FILE_DIR, FwCfg, FwCfgPorts};
use vmm::memory::{GuestRam, Layout, MIB, RangeKind};
use vmm::platform::Platform;

const MEMORY: [u64; 4] = [2 * MIB, 8 * MIB, 16 * MIB, 48 * MIB];
const PAGE: u64 = 0x1000;
const PT_LOAD: u32 = 1;

fn memfd(name: &std::ffi::CStr) -> File {
    // SAFETY: a NUL-terminated name and flags; the descriptor is ours.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: a fresh descriptor owned by nobody else.
    unsafe { File::from_raw_fd(fd) }
}

fn initrd_byte(i: u64) -> u8 {
    (i * 29 + i / 4093 + 1) as u8
}

/// Whether `[start, start + len)` lies in one RAM range of `layout`.
fn in_ram(layout: &Layout, start: u64, len: u64) -> bool {
    let Some(end) = start.checked_add(len) else {
        return false;
    };
    layout
        .ranges
        .iter()
        .any(|r| r.kind == RangeKind::Ram && start >= r.start && end <= r.start + r.size)
}

/// With BOOT_FUZZ_DEBUG set (reproducing a crash), says how far an input
/// got.
fn debug(what: std::fmt::Arguments) {
    if std::env::var_os("BOOT_FUZZ_DEBUG").is_some() {
        eprintln!("{what}");
    }
}

/// Whether another loaded segment overlaps `segment` in memory (then
/// which one's bytes are there is the order of loading's business).
fn overlapping(image: &elf::ElfImage, segment: &elf::Segment) -> bool {
    let end = segment.paddr + segment.filesz;
    image.segments.iter().any(|o| {
        o != segment
            && o.kind == PT_LOAD
            && o.filesz != 0
            && o.paddr < end
            && segment.paddr < o.paddr + o.filesz
    })
}

fn read(ram: &GuestRam, addr: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    ram.mem.read_slice(&mut out, GuestAddress(addr)).unwrap();
    out
}

/// A file from fw_cfg through its ports, as firmware reads it.
fn fw_cfg_file(cfg: FwCfg, name: &str) -> Option<Vec<u8>> {
    let mut ports = FwCfgPorts(Arc::new(Mutex::new(cfg)));
    let read_bytes = |ports: &mut FwCfgPorts, n: usize| {
        let mut out = vec![0u8; n];
        for b in out.iter_mut() {
            let mut one = [0u8];
            ports.read(1, &mut one);
            *b = one[0];
        }
        out
    };
    ports.write(0, &FILE_DIR.to_le_bytes());
    let count = u32::from_be_bytes(read_bytes(&mut ports, 4).try_into().unwrap());
    let mut found = None;
    for _ in 0..count {
        let entry = read_bytes(&mut ports, 64);
        let size = u32::from_be_bytes(entry[0..4].try_into().unwrap());
        let selector = u16::from_be_bytes([entry[4], entry[5]]);
        let len = entry[8..].iter().position(|&b| b == 0).unwrap_or(56);
        if &entry[8..8 + len] == name.as_bytes() {
            found = Some((selector, size as usize));
        }
    }
    let (selector, size) = found?;
    ports.write(0, &selector.to_le_bytes());
    Some(read_bytes(&mut ports, size))
}

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, cmdline_len, initrd_size, firmware_size], rest)) = data.split_first_chunk()
    else {
        return;
    };
    let cmdline_len = usize::from(cmdline_len).min(rest.len());
    let (image, cmdline) = rest.split_at(rest.len() - cmdline_len);
    let cmdline = (flags & 1 != 0).then(|| String::from_utf8_lossy(cmdline).into_owned());

    let initrd = (flags & 2 != 0).then(|| {
        let file = memfd(c"initrd");
        if flags & 0x20 != 0 {
            // Sparse, up to 255 MiB: placement limits, not contents.
            file.set_len(u64::from(initrd_size) << 20).unwrap();
        } else {
            let len = u64::from(initrd_size) * 37;
            let bytes: Vec<u8> = (0..len).map(initrd_byte).collect();
            (&file).write_all(&bytes).unwrap();
        }
        file
    });
    let initrd_len = initrd.as_ref().map(|f| f.metadata().unwrap().len());
    let firmware = (flags & 4 != 0).then(|| {
        let file = memfd(c"firmware");
        let len = match firmware_size % 8 {
            0 => 1000,
            n => u64::from(n) << 16,
        };
        file.set_len(len).unwrap();
        file
    });
    let mut image = image.to_vec();
    if flags & 0x10 != 0 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&image).unwrap();
        image = gz.finish().unwrap();
    }
    let original = image.clone();
    let request = BootRequest {
        image,
        cmdline: cmdline.clone(),
        initrd,
        firmware,
        boot_mac: (flags & 8 != 0).then_some([2, 0, 0, 0, 0, 1]),
    };

    let boot = match BootImage::prepare(request) {
        Ok(boot) => boot,
        Err(e) => return debug(format_args!("prepare: {e}")),
    };
    let kind = match &boot {
        BootImage::Firmware(_) => "firmware",
        BootImage::Linux(_) => "bzImage",
        BootImage::LinuxThroughFirmware(_) => "real-mode bzImage",
        BootImage::Pvh(_) => "PVH",
        BootImage::OpenBsd(_) => "OpenBSD",
    };
    // The kernel as loaded (decompressed).
    let kernel = if ImageKind::detect(&original) == ImageKind::Gzip {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&original[..]), &mut out)
            .unwrap();
        out
    } else {
        original
    };
    let memory = MEMORY[usize::from(flags >> 6)];
    let layout = Layout::with_bios_size(memory, boot.firmware_size());
    let ram = GuestRam::new(layout, "fuzz-boot").unwrap();
    let platform = Platform {
        cpus: 1,
        cpu_signature: 0,
        cpu_features: 0,
        pci_interrupts: Vec::new(),
    };
    let mut fw_cfg = FwCfg::new(ram.mem.clone(), &ram.layout, 1);
    let loaded = match boot.load(&ram, &platform, &mut fw_cfg) {
        Ok(loaded) => loaded,
        Err(e) => return debug(format_args!("load {kind}: {e}")),
    };
    debug(format_args!("loaded {kind}: {loaded:?}"));
    let layout = &ram.layout;

    // The initrd: page-aligned in RAM below 4 GiB, all of it.
    if let Some(p) = loaded.initrd {
        assert_eq!(Some(p.size), initrd_len, "{kind}: the initrd's size");
        assert_eq!(p.addr % PAGE, 0, "{kind}: initrd at {:#x}", p.addr);
        assert!(
            in_ram(layout, p.addr, p.size) && p.addr + p.size <= 1 << 32,
            "{kind}: initrd at {:#x}+{:#x}",
            p.addr,
            p.size
        );
        if flags & 0x20 == 0 && kind != "real-mode bzImage" {
            let expected: Vec<u8> = (0..p.size).map(initrd_byte).collect();
            assert!(
                read(&ram, p.addr, p.size as usize) == expected,
                "{kind}: initrd bytes"
            );
        }
    } else {
        assert!(
            initrd_len.is_none() || kind == "OpenBSD" || kind == "firmware",
            "{kind}: the initrd was dropped"
        );
    }
    let line = cmdline
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or("");
    let cmdline_at = |addr: u64| {
        let mut expected = line.as_bytes().to_vec();
        expected.push(0);
        assert!(
            read(&ram, addr, expected.len()) == expected,
            "{kind}: the command line"
        );
    };

    match (kind, &loaded.entry) {
        ("bzImage", Entry::Kernel(state)) => {
            let header = bzimage::Header::parse(&kernel).unwrap();
            let load = u64::from(header.0.code32_start);
            let payload = &kernel[header.setup_len()..];
            assert!(
                in_ram(layout, load, payload.len() as u64),
                "bzImage loaded at {load:#x}+{:#x}",
                payload.len()
            );
            assert!(
                read(&ram, load, payload.len()) == payload,
                "the kernel's bytes"
            );
            let params: boot_params = ram
                .mem
                .read_obj(GuestAddress(bzimage::ZERO_PAGE_ADDR))
                .unwrap();
            assert_eq!(state.rsi, bzimage::ZERO_PAGE_ADDR);
            assert_eq!({ params.hdr.type_of_loader }, 0xff);
            assert_eq!({ params.hdr.cmd_line_ptr }, bzimage::CMDLINE_ADDR as u32);
            assert_eq!(usize::from(params.e820_entries), layout.ranges.len());
            if let Some(p) = loaded.initrd {
                assert_eq!({ params.hdr.ramdisk_image }, p.addr as u32);
                assert_eq!({ params.hdr.ramdisk_size }, p.size as u32);
                assert!(p.addr >= header.memory_end(load, payload.len() as u64));
            }
            cmdline_at(bzimage::CMDLINE_ADDR);
        }
        ("PVH", Entry::Kernel(state)) => {
            let image = elf::parse(&kernel).unwrap();
            for s in &image.segments {
                if s.kind == PT_LOAD && s.filesz != 0 {
                    let (addr, len) = (s.paddr, s.filesz.max(s.memsz));
                    assert!(
                        in_ram(layout, addr, len),
                        "PVH segment at {addr:#x}+{len:#x}"
                    );
                    assert!(
                        pvh::LOADER_AREAS
                            .iter()
                            .all(|a| addr + len <= a.start || a.end <= addr),
                        "PVH segment at {addr:#x}+{len:#x} under the loader's data"
                    );
                    // What linux-loader copied is still there.
                    let at = s.offset as usize;
                    let bytes = &kernel[at..at + s.filesz as usize];
                    assert!(
                        read(&ram, addr, bytes.len()) == bytes || overlapping(&image, s),
                        "PVH segment at {addr:#x}: its bytes"
                    );
                }
            }
            assert_eq!(state.rbx, pvh::START_INFO_ADDR);
            let magic: u32 = ram
                .mem
                .read_obj(GuestAddress(pvh::START_INFO_ADDR))
                .unwrap();
            assert_eq!(magic, 0x336e_c578);
            cmdline_at(pvh::CMDLINE_ADDR);
        }
        ("OpenBSD", Entry::Kernel(state)) => {
            let image = elf::parse(&kernel).unwrap();
            let mut end = 0;
            for s in &image.segments {
                if s.kind == PT_LOAD && s.flags & 7 != 0 {
                    let addr = s.paddr & openbsd::LOAD_MASK;
                    let len = s.filesz.max(s.memsz);
                    assert!(
                        in_ram(layout, addr, len),
                        "OpenBSD segment at {addr:#x}+{len:#x}"
                    );
                    assert!(
                        len == 0
                            || openbsd::LOADER_AREAS
                                .iter()
                                .all(|a| addr + len <= a.start || a.end <= addr),
                        "OpenBSD segment at {addr:#x}+{len:#x} under the loader's data"
                    );
                    end = end.max(addr + s.memsz);
                }
            }
            // The symbol area, from the kernel's end to `esym` (the
            // argument stack's fifth slot).
            let esym: u32 = ram.mem.read_obj(GuestAddress(state.rsp + 16)).unwrap();
            let word = if image.class64 { 8 } else { 4 };
            let symbols = end.next_multiple_of(word);
            assert!(
                u64::from(esym) >= symbols && in_ram(layout, symbols, u64::from(esym) - symbols),
                "OpenBSD symbols at {symbols:#x}..{esym:#x}"
            );
            assert_eq!(
                read(&ram, symbols, image.header.len())[..4],
                *b"\x7fELF",
                "the ELF header copy"
            );
            assert_eq!(state.rip, image.entry & openbsd::LOAD_MASK);
        }
        ("real-mode bzImage", Entry::ResetVector) => {
            let header = bzimage::Header::parse(&kernel).unwrap();
            let payload = kernel[header.setup_len()..].to_vec();
            let got = fw_cfg_file(fw_cfg, "etc/vmd/linux-kernel");
            assert!(got == Some(payload), "the kernel in fw_cfg");
        }
        ("firmware", Entry::ResetVector) => {
            let top = (1u64 << 32) - kernel.len() as u64;
            assert!(
                read(&ram, top, kernel.len()) == kernel,
                "the firmware below 4 GiB"
            );
        }
        (kind, entry) => panic!("{kind} boots with {entry:?}"),
    }
});
