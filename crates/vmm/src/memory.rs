//! Guest physical memory: the layout of docs/machine.md, "Memory map", backed by one memfd.
//!
//! | range                   | kind     |
//! |-------------------------|----------|
//! | 0 – 0x9FFFF             | RAM      |
//! | 0xA0000 – 0xFFFFF       | reserved (backed: low BIOS copy, option ROMs) |
//! | 1 MiB – low top         | RAM      |
//! | 0xF000_0000 – 0xFFBF_FFFF | PCI MMIO window (not backed) |
//! | 0xFFC0_0000 – 4 GiB     | reserved (backed: BIOS, reset vector) |
//! | 4 GiB –                 | RAM (the rest) |
//!
//! The memfd is mapped `MAP_SHARED | MAP_NORESERVE` and never touched by the
//! VMM at start, so a 16 GiB guest costs the host nothing until the guest
//! uses its memory. vmd keeps a duplicate of the memfd and reads its
//! allocated size for the CURMEM column.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress,
};

pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// End of conventional memory (`LOWMEM_KB` = 640).
pub const LOWMEM_END: u64 = 0xA_0000;
/// Start of RAM above the legacy hole.
pub const HIGHMEM_START: u64 = MIB;
/// Start of the PCI MMIO window; RAM below 4 GiB ends here at most.
pub const PCI_HOLE_START: u64 = 0xF000_0000;
/// The BIOS area at the top of 4 GiB (grows down for firmware images
/// larger than 4 MiB).
pub const BIOS_AREA_START: u64 = 0xFFC0_0000;
pub const BIOS_AREA_SIZE: u64 = 4 * MIB;
/// Largest firmware image (docs/machine.md, "Boot").
pub const MAX_BIOS_SIZE: u64 = 16 * MIB;
pub const FOUR_GIB: u64 = 4 * GIB;

/// Where KVM on Intel keeps the real-mode TSS and identity map: unused
/// addresses inside the MMIO window.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xFEFF_C000;
pub const KVM_TSS_ADDR: u64 = 0xFEFF_D000;

/// Kinds of e820 entries handed to firmware and kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeKind {
    Ram,
    Reserved,
}

impl RangeKind {
    /// The e820 type number.
    pub fn e820_type(self) -> u32 {
        match self {
            RangeKind::Ram => 1,
            RangeKind::Reserved => 2,
        }
    }
}

/// One range of the guest physical map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub size: u64,
    pub kind: RangeKind,
}

/// A guest-physical region backed by part of the memfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackedRegion {
    pub guest_addr: u64,
    pub size: u64,
    /// Offset of the region in the memfd.
    pub file_offset: u64,
}

/// The computed map for a guest of a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Requested memory in bytes (counts the 384 KiB legacy hole).
    pub memory: u64,
    /// The e820-style map, in address order.
    pub ranges: Vec<Range>,
    /// What KVM maps, and where each part lives in the memfd.
    pub regions: Vec<BackedRegion>,
}

impl Layout {
    /// Computes the map of docs/machine.md, "Memory map" for `memory` bytes (a MiB multiple,
    /// at least 1 MiB).
    pub fn new(memory: u64) -> Layout {
        Layout::with_bios_size(memory, 0)
    }

    /// The map for a firmware image of `bios_size` bytes: the BIOS area is
    /// 4 MiB, or the image size rounded up to a MiB if larger.
    pub fn with_bios_size(memory: u64, bios_size: u64) -> Layout {
        let bios_area = bios_size.min(MAX_BIOS_SIZE).div_ceil(MIB).max(4) * MIB;
        let bios_start = FOUR_GIB - bios_area;
        let above_1m = memory.saturating_sub(HIGHMEM_START);
        let mut ranges = vec![
            Range {
                start: 0,
                size: LOWMEM_END,
                kind: RangeKind::Ram,
            },
            Range {
                start: LOWMEM_END,
                size: HIGHMEM_START - LOWMEM_END,
                kind: RangeKind::Reserved,
            },
        ];
        let low_ram = if above_1m <= BIOS_AREA_SIZE {
            // vmd's degenerate case: tiny guests get no RAM above 1 MiB.
            0
        } else {
            above_1m.min(PCI_HOLE_START - HIGHMEM_START)
        };
        let high_ram = if low_ram == 0 { 0 } else { above_1m - low_ram };
        if low_ram > 0 {
            ranges.push(Range {
                start: HIGHMEM_START,
                size: low_ram,
                kind: RangeKind::Ram,
            });
            ranges.push(Range {
                start: PCI_HOLE_START,
                size: bios_start - PCI_HOLE_START,
                kind: RangeKind::Reserved,
            });
        }
        ranges.push(Range {
            start: bios_start,
            size: bios_area,
            kind: RangeKind::Reserved,
        });
        if high_ram > 0 {
            ranges.push(Range {
                start: FOUR_GIB,
                size: high_ram,
                kind: RangeKind::Ram,
            });
        }

        let low_size = HIGHMEM_START + low_ram;
        let mut regions = vec![
            BackedRegion {
                guest_addr: 0,
                size: low_size,
                file_offset: 0,
            },
            BackedRegion {
                guest_addr: bios_start,
                size: bios_area,
                file_offset: low_size,
            },
        ];
        if high_ram > 0 {
            regions.push(BackedRegion {
                guest_addr: FOUR_GIB,
                size: high_ram,
                file_offset: low_size + bios_area,
            });
        }
        Layout {
            memory,
            ranges,
            regions,
        }
    }

    /// Bytes of memfd the layout needs.
    pub fn backing_size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// Start of the BIOS area below 4 GiB.
    pub fn bios_area_start(&self) -> u64 {
        self.regions[1].guest_addr
    }

    /// RAM between 1 MiB and the PCI hole (range 2).
    pub fn low_ram_above_1m(&self) -> u64 {
        self.ram_in(HIGHMEM_START, PCI_HOLE_START)
    }

    /// RAM above 4 GiB (range 5).
    pub fn ram_above_4g(&self) -> u64 {
        self.ram_in(FOUR_GIB, u64::MAX)
    }

    /// End of RAM below 4 GiB.
    pub fn low_ram_end(&self) -> u64 {
        self.ranges
            .iter()
            .filter(|r| r.kind == RangeKind::Ram && r.start < FOUR_GIB)
            .map(|r| r.start + r.size)
            .max()
            .unwrap_or(0)
    }

    /// Whether `[start, start + len)` lies in one RAM range: where a boot
    /// loader may put what the guest is to use, unlike the reserved areas
    /// (which are partly backed, for firmware) and unlike no memory at all.
    pub fn in_ram(&self, start: u64, len: u64) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        self.ranges
            .iter()
            .any(|r| r.kind == RangeKind::Ram && start >= r.start && end <= r.start + r.size)
    }

    fn ram_in(&self, from: u64, to: u64) -> u64 {
        self.ranges
            .iter()
            .filter(|r| r.kind == RangeKind::Ram && r.start >= from && r.start < to)
            .map(|r| r.size)
            .sum()
    }
}

/// Guest memory: the memfd and its mapping.
pub struct GuestRam {
    pub layout: Layout,
    pub memfd: File,
    pub mem: GuestMemoryMmap,
}

impl GuestRam {
    /// Creates the memfd, sizes it and maps every backed region. Nothing is
    /// touched, so no host memory is used yet.
    pub fn new(layout: Layout, name: &str) -> std::io::Result<GuestRam> {
        let cname = std::ffi::CString::new(format!("vmd-{name}"))
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: memfd_create with a valid NUL-terminated name; the result
        // is checked before use.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nothing else.
        let memfd = unsafe { File::from_raw_fd(fd) };
        memfd.set_len(layout.backing_size())?;
        let mem = GuestMemoryMmap::from_regions(
            layout
                .regions
                .iter()
                .map(|r| {
                    let offset = FileOffset::new(memfd.try_clone()?, r.file_offset);
                    GuestRegionMmap::from_range(
                        GuestAddress(r.guest_addr),
                        r.size as usize,
                        Some(offset),
                    )
                    .map_err(|e| std::io::Error::other(e.to_string()))
                })
                .collect::<std::io::Result<Vec<_>>>()?,
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        for region in mem.iter() {
            if let Ok(at) = region.get_host_address(MemoryRegionAddress(0)) {
                advise_huge_pages(at, region.len() as usize);
            }
        }
        Ok(GuestRam { layout, memfd, mem })
    }

    /// Bytes of guest memory the host has actually allocated.
    pub fn resident_bytes(&self) -> u64 {
        resident_bytes_of(&self.memfd)
    }
}

/// Asks for transparent huge pages on a mapping of the memfd. Guest RAM
/// stays a shared memfd (send and receive read and fill it through its
/// descriptor, vmd reads its allocated size), and shmem gets huge pages
/// only where /sys/kernel/mm/transparent_hugepage/shmem_enabled allows:
/// `advise` or `within_size` take this hint, `always` needs none, `never`
/// (the kernel's default) ignores it. With 2 MiB host pages KVM maps the
/// guest with 2 MiB entries too: far fewer nested page walks and faults,
/// as anonymous memory (QEMU's) gets where THP is on for `madvise`. The
/// kernel places a shmem mapping on a 2 MiB boundary itself when huge
/// pages are possible, and for a guest of an even number of MiB each
/// region's offset in the memfd agrees with its guest address modulo
/// 2 MiB, so host and guest huge pages line up. vmd does not change the
/// host's setting; vmd(8) ("Guest memory") says what to set. A failure (a
/// kernel without THP) leaves 4 KiB pages, as before.
fn advise_huge_pages(at: *mut u8, len: usize) {
    // SAFETY: madvise on the whole of a live mapping we made; MADV_HUGEPAGE
    // only sets a flag on it and moves or frees nothing.
    unsafe { libc::madvise(at.cast(), len, libc::MADV_HUGEPAGE) };
}

/// Allocated size of a memfd: the memory a guest has touched.
pub fn resident_bytes_of(memfd: &impl AsRawFd) -> u64 {
    // SAFETY: `stat` is plain data, for which all zeroes is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a valid descriptor into a stat buffer of ours.
    if unsafe { libc::fstat(memfd.as_raw_fd(), &mut st) } != 0 {
        return 0;
    }
    (st.st_blocks as u64) * 512
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn small_guest() {
        let l = Layout::new(512 * MIB);
        assert_eq!(
            l.ranges,
            vec![
                Range {
                    start: 0,
                    size: 0xA0000,
                    kind: RangeKind::Ram
                },
                Range {
                    start: 0xA0000,
                    size: 0x60000,
                    kind: RangeKind::Reserved
                },
                Range {
                    start: MIB,
                    size: 511 * MIB,
                    kind: RangeKind::Ram
                },
                Range {
                    start: PCI_HOLE_START,
                    size: BIOS_AREA_START - PCI_HOLE_START,
                    kind: RangeKind::Reserved
                },
                Range {
                    start: BIOS_AREA_START,
                    size: 4 * MIB,
                    kind: RangeKind::Reserved
                },
            ]
        );
        assert_eq!(l.backing_size(), 516 * MIB);
        assert_eq!(l.low_ram_end(), 512 * MIB);
        assert_eq!(l.ram_above_4g(), 0);
    }

    #[test]
    fn large_guest_splits_around_the_hole() {
        let l = Layout::new(16 * GIB);
        assert_eq!(l.low_ram_above_1m(), PCI_HOLE_START - MIB);
        assert_eq!(l.ram_above_4g(), 16 * GIB - PCI_HOLE_START);
        // RAM plus the legacy hole adds up to the requested size.
        let ram: u64 = l
            .ranges
            .iter()
            .filter(|r| r.kind == RangeKind::Ram)
            .map(|r| r.size)
            .sum();
        assert_eq!(ram + (MIB - LOWMEM_END), 16 * GIB);
        assert_eq!(l.regions.len(), 3);
        assert_eq!(l.backing_size(), 16 * GIB + 4 * MIB);
    }

    #[test]
    fn in_ram_is_within_one_ram_range() {
        let l = Layout::new(512 * MIB);
        assert!(l.in_ram(0, LOWMEM_END));
        assert!(l.in_ram(MIB, 511 * MIB));
        assert!(l.in_ram(MIB, 0));
        assert!(!l.in_ram(LOWMEM_END - 1, 2), "into the legacy hole");
        assert!(!l.in_ram(0xE0000, 16), "the BIOS area below 1 MiB");
        assert!(!l.in_ram(0, MIB + 1), "across the legacy hole");
        assert!(!l.in_ram(512 * MIB - 1, 2), "past the end of RAM");
        assert!(!l.in_ram(BIOS_AREA_START, 16), "the firmware below 4 GiB");
        assert!(!l.in_ram(u64::MAX, 2), "wrapping around");
    }

    #[test]
    fn big_firmware_grows_the_bios_area() {
        let l = Layout::with_bios_size(512 * MIB, 16 * MIB);
        assert_eq!(l.bios_area_start(), FOUR_GIB - 16 * MIB);
        assert_eq!(
            Layout::with_bios_size(512 * MIB, 256 * 1024).bios_area_start(),
            BIOS_AREA_START
        );
    }

    #[test]
    fn tiny_guest_has_no_ram_above_1m() {
        let l = Layout::new(5 * MIB);
        assert_eq!(l.low_ram_above_1m(), 0);
        assert_eq!(l.regions.len(), 2);
        let l = Layout::new(6 * MIB);
        assert_eq!(l.low_ram_above_1m(), 5 * MIB);
    }

    /// The `VmFlags` of the mapping of this process that starts at `at`.
    fn vm_flags(at: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((start, _)) = range.split_once('-')
                && let Ok(start) = usize::from_str_radix(start, 16)
            {
                inside = start == at;
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.trim().to_string();
            }
        }
        panic!("no mapping at {at:#x}");
    }

    #[test]
    fn guest_ram_asks_for_huge_pages() {
        let ram = GuestRam::new(Layout::new(6 * GIB), "thp-test").unwrap();
        assert_eq!(ram.mem.num_regions(), 3);
        for region in ram.mem.iter() {
            let at = region.get_host_address(MemoryRegionAddress(0)).unwrap() as usize;
            let flags = vm_flags(at);
            // "hg": MADV_HUGEPAGE; "sh": still the shared memfd.
            assert!(
                flags.split_whitespace().any(|f| f == "hg") && flags.contains("sh"),
                "region at {:#x}: VmFlags {flags}",
                region.start_addr().0
            );
        }
    }

    #[test]
    fn mapping_is_lazy_and_addressable() {
        let ram = GuestRam::new(Layout::new(16 * GIB), "test").unwrap();
        assert!(ram.resident_bytes() < 4 * MIB);
        ram.mem
            .write_obj(0x1234_5678u32, GuestAddress(5 * GIB))
            .unwrap();
        ram.mem
            .write_obj(0xAAu8, GuestAddress(0xFFFF_FFF0))
            .unwrap();
        assert_eq!(
            ram.mem.read_obj::<u32>(GuestAddress(5 * GIB)).unwrap(),
            0x1234_5678
        );
        assert!(
            ram.mem
                .read_obj::<u8>(GuestAddress(PCI_HOLE_START))
                .is_err()
        );
        assert!(ram.mem.address_in_range(GuestAddress(0xFFC0_0000)));
        assert!(ram.resident_bytes() >= 8192);
        assert!(ram.resident_bytes() < 4 * MIB);
    }
}
