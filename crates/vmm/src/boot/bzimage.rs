//! Linux bzImage direct boot (Documentation/arch/x86/boot.rst, protocol
//! 2.06 and later): the VMM does what a boot loader does after the
//! real-mode setup code would have run. linux-loader reads the setup
//! header, loads the protected-mode kernel at 1 MiB, writes the command
//! line and the zero page; this file decides the layout, fills
//! `boot_params` (e820 map from our memory layout, initrd, RSDP) and picks
//! the entry: 64-bit at load + 0x200 when the kernel offers it
//! (XLF_KERNEL_64), else 32-bit at `code32_start`.
//!
//! Low memory used (all below 640 KiB, free RAM for the kernel later):
//! the GDT at 0x500, the zero page at 0x7000, page tables from 0x9000,
//! the command line at 0x20000.

use std::io::Cursor;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{BzImage, Cmdline, KernelLoader, load_cmdline};
use proto::ErrorCode;
use vm_memory::{ByteValued, GuestAddress};

use super::cpu_state::{EntryState, Paging, Segment, identity_map_long};
use super::initrd::{self, Initrd, Placement};
use super::{BootError, command_line};
use crate::memory::{FOUR_GIB, GuestRam, HIGHMEM_START, Layout};

pub const GDT_ADDR: u64 = 0x500;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const PML4_ADDR: u64 = 0x9000;
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// The room left for the command line below the EBDA-free 640 KiB.
const CMDLINE_ROOM: usize = 0x1_0000;

const HEADER_OFFSET: usize = 0x1f1;
const MIN_PROTOCOL: u16 = 0x0206;
/// loadflags: the protected-mode kernel is loaded at 1 MiB.
const LOADED_HIGH: u8 = 0x01;
/// xloadflags: a 64-bit entry point sits at load address + 0x200.
const XLF_KERNEL_64: u16 = 0x01;
const ENTRY_64_OFFSET: u64 = 0x200;
/// type_of_loader: "undefined" boot loader.
const LOADER_UNDEFINED: u8 = 0xff;
/// initrd_addr_max of kernels older than protocol 2.03.
const OLD_INITRD_MAX: u32 = 0x37ff_ffff;

/// The Linux boot protocol GDT: __BOOT_CS = 0x10, __BOOT_DS = 0x18.
const BOOT_CS: usize = 2;
const BOOT_DS: usize = 3;

/// The setup header of a bzImage, and what its fields mean for the
/// protocol version it declares.
#[derive(Clone, Copy)]
pub struct Header(pub setup_header);

impl Header {
    /// Reads and checks the header: "HdrS", protocol 2.06 or later, a
    /// kernel loaded high.
    pub fn parse(image: &[u8]) -> Result<Header, BootError> {
        let size = std::mem::size_of::<setup_header>();
        let bytes = image
            .get(HEADER_OFFSET..HEADER_OFFSET + size)
            .ok_or_else(|| BootError::image("bzImage is too short for its header"))?;
        let header = setup_header::from_slice(bytes)
            .copied()
            .ok_or_else(|| BootError::image("bzImage header is unreadable"))?;
        let version = header.version;
        if version < MIN_PROTOCOL {
            return Err(BootError::image(format!(
                "bzImage boot protocol {}.{:02} is too old (2.06 or later is needed)",
                version >> 8,
                version & 0xff
            )));
        }
        if header.loadflags & LOADED_HIGH == 0 {
            return Err(BootError::image(
                "this zImage loads below 1 MiB; only bzImages are supported",
            ));
        }
        Ok(Header(header))
    }

    pub fn version(&self) -> u16 {
        self.0.version
    }

    /// Whether the kernel can be entered in protected mode at
    /// `code32_start`: a loaded-high kernel's entry lies in its
    /// protected-mode part, at or above 1 MiB. A value below says the
    /// kernel must start in its real-mode setup code (iPXE: 0).
    pub fn has_protected_mode_entry(&self) -> bool {
        u64::from(self.0.code32_start) >= HIGHMEM_START
    }

    /// Longest command line, without the NUL.
    pub fn cmdline_limit(&self) -> usize {
        self.0.cmdline_size as usize
    }

    /// Highest address the initrd may occupy.
    pub fn initrd_max(&self) -> u64 {
        u64::from(if self.version() >= 0x0203 {
            self.0.initrd_addr_max
        } else {
            OLD_INITRD_MAX
        })
    }

    pub fn has_64bit_entry(&self) -> bool {
        self.version() >= 0x020c && self.0.xloadflags & XLF_KERNEL_64 != 0
    }

    /// Bytes of the real-mode part (boot sector and setup sectors).
    pub fn setup_len(&self) -> usize {
        let sectors = match self.0.setup_sects {
            0 => 4,
            n => usize::from(n),
        };
        (sectors + 1) * 512
    }

    /// The end of the memory the kernel needs while it decompresses and
    /// relocates itself when loaded at `load`: protocol 2.10 says how
    /// much (`init_size`) from where it will run (`pref_address` for a
    /// relocatable kernel loaded below it). Saturates: `pref_address` is
    /// the image's to choose, and anything past the guest's RAM is too
    /// much anyway.
    pub fn memory_end(&self, load: u64, payload: u64) -> u64 {
        let loaded_end = load.saturating_add(payload);
        if self.version() < 0x020a {
            return loaded_end;
        }
        let runs_at = if self.0.relocatable_kernel != 0 {
            load.max(self.0.pref_address)
        } else {
            load
        };
        runs_at
            .saturating_add(u64::from(self.0.init_size))
            .max(loaded_end)
    }
}

/// The e820 map the kernel gets: the memory layout as is.
pub fn e820(layout: &Layout) -> Vec<boot_e820_entry> {
    layout
        .ranges
        .iter()
        .map(|r| boot_e820_entry {
            addr: r.start,
            size: r.size,
            r#type: r.kind.e820_type(),
        })
        .collect()
}

/// A bzImage and what comes with it, checked, ready to load.
pub struct Kernel {
    pub(super) image: Vec<u8>,
    pub(super) header: Header,
    pub(super) cmdline: Cmdline,
    pub(super) initrd: Option<Initrd>,
}

impl Kernel {
    /// A kernel entered in protected mode, its command line at
    /// [`CMDLINE_ADDR`].
    pub fn prepare(
        image: Vec<u8>,
        header: Header,
        cmdline: Option<&str>,
        initrd: Option<Initrd>,
    ) -> Result<Kernel, BootError> {
        Kernel::prepare_with_room(image, header, cmdline, initrd, CMDLINE_ROOM)
    }

    /// Checks the command line against the kernel's limit and the `room`
    /// the loader has for it (NUL included), whichever is smaller.
    pub fn prepare_with_room(
        image: Vec<u8>,
        header: Header,
        cmdline: Option<&str>,
        initrd: Option<Initrd>,
        room: usize,
    ) -> Result<Kernel, BootError> {
        let limit = header.cmdline_limit().min(room - 1);
        Ok(Kernel {
            cmdline: command_line(cmdline, limit)?,
            image,
            header,
            initrd,
        })
    }

    /// Loads the kernel, initrd, command line and zero page; `rsdp` is
    /// where the platform tables were put.
    pub fn load(
        mut self,
        ram: &GuestRam,
        rsdp: u64,
    ) -> Result<(EntryState, Option<Placement>), BootError> {
        let mem = &ram.mem;
        let loaded = BzImage::load(
            mem,
            None,
            &mut Cursor::new(&self.image),
            Some(GuestAddress(HIGHMEM_START)),
        )
        .map_err(|e| BootError::memory("the kernel", e))?;
        let load = loaded.kernel_load.0;
        let payload = loaded.kernel_end - load;
        let needed = self.header.memory_end(load, payload);
        if needed > ram.layout.low_ram_end() {
            return Err(BootError::new(
                ErrorCode::KERNEL_TOO_LARGE,
                format!(
                    "this kernel needs RAM up to {needed:#x} to decompress; the guest's ends at {:#x}",
                    ram.layout.low_ram_end()
                ),
            ));
        }

        let highest = self.header.initrd_max().min(FOUR_GIB - 1);
        let initrd = initrd::place_and_load(ram, self.initrd.as_mut(), needed, highest)?;

        load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &self.cmdline)
            .map_err(|e| BootError::memory("the command line", e))?;
        let params = zero_page(
            &loaded.setup_header.unwrap_or(self.header.0),
            &ram.layout,
            initrd,
            rsdp,
        );
        LinuxBootConfigurator::write_bootparams::<crate::memory::GuestMemoryMmap>(
            &BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR)),
            mem,
        )
        .map_err(|e| BootError::memory("the zero page", e))?;

        let state = if self.header.has_64bit_entry() {
            identity_map_long(mem, PML4_ADDR, 4)
                .map_err(|e| BootError::memory("page tables", e))?;
            entry(
                Segment::Code64,
                Paging::Long { cr3: PML4_ADDR },
                load + ENTRY_64_OFFSET,
            )
        } else {
            entry(Segment::Code32, Paging::Off, load)
        };
        state
            .write_gdt(mem)
            .map_err(|e| BootError::memory("the GDT", e))?;
        Ok((state, initrd))
    }
}

fn entry(code: Segment, paging: Paging, rip: u64) -> EntryState {
    let mut gdt = vec![None; 4];
    gdt[BOOT_CS] = Some(code);
    gdt[BOOT_DS] = Some(Segment::Data);
    EntryState {
        gdt_addr: GDT_ADDR,
        gdt,
        code: BOOT_CS,
        data: BOOT_DS,
        paging,
        rip,
        rsp: 0,
        rsi: ZERO_PAGE_ADDR,
        rbx: 0,
    }
}

/// The zero page: the kernel's header as loaded, plus what a boot loader
/// fills in.
fn zero_page(
    header: &setup_header,
    layout: &Layout,
    initrd: Option<Placement>,
    rsdp: u64,
) -> boot_params {
    let mut params = boot_params {
        hdr: *header,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    if let Some(placement) = initrd {
        params.hdr.ramdisk_image = placement.addr as u32;
        params.hdr.ramdisk_size = placement.size as u32;
    }
    // Read by kernels of protocol 2.14 and later; older ones find the RSDP
    // by scanning the BIOS area, where it is too.
    params.acpi_rsdp_addr = rsdp;
    let map = e820(layout);
    params.e820_entries = map.len() as u8;
    params.e820_table[..map.len()].copy_from_slice(&map);
    params
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::MIB;
    use vm_memory::Bytes;

    /// A minimal bzImage: header fields as a 2.15 kernel has them, one
    /// setup sector, and `payload` as the protected-mode part.
    pub fn fake_bzimage(code32_start: u32, payload: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 2 * 512];
        let mut h = setup_header {
            setup_sects: 1,
            boot_flag: 0xaa55,
            header: 0x5372_6448,
            version: 0x020f,
            loadflags: LOADED_HIGH,
            code32_start,
            initrd_addr_max: 0x7fff_ffff,
            kernel_alignment: 0x20_0000,
            relocatable_kernel: 1,
            xloadflags: XLF_KERNEL_64,
            cmdline_size: 2047,
            pref_address: 0x100_0000,
            init_size: 0x40_0000,
            ..Default::default()
        };
        h.syssize = (payload.len() / 16) as u32;
        image[HEADER_OFFSET..HEADER_OFFSET + std::mem::size_of::<setup_header>()]
            .copy_from_slice(h.as_slice());
        image.extend_from_slice(payload);
        image
    }

    #[test]
    fn header_checks() {
        let image = fake_bzimage(0x10_0000, &[0x90; 64]);
        let h = Header::parse(&image).unwrap();
        assert!(h.has_protected_mode_entry());
        assert!(h.has_64bit_entry());
        assert_eq!(h.setup_len(), 1024);
        assert_eq!(h.memory_end(0x10_0000, 64), 0x140_0000);
        assert!(
            !Header::parse(&fake_bzimage(0, &[0; 16]))
                .unwrap()
                .has_protected_mode_entry()
        );

        let mut old = image.clone();
        old[0x206] = 0x05;
        let err = Header::parse(&old).err().unwrap();
        assert!(err.message.contains("2.05 is too old"), "{}", err.message);
        let mut low = image.clone();
        low[0x211] = 0;
        assert!(Header::parse(&low).is_err());
    }

    #[test]
    fn loads_the_zero_page_command_line_and_initrd() {
        let ram = GuestRam::new(Layout::new(128 * MIB), "bz-test").unwrap();
        let image = fake_bzimage(0x10_0000, &[0xf4; 4096]);
        let header = Header::parse(&image).unwrap();
        let dir = testkit::tmp::TempDir::new("bz");
        let initrd_path = dir.join("initrd");
        std::fs::write(&initrd_path, vec![0x5a; 3 * 4096 + 7]).unwrap();
        let initrd = Initrd::new(std::fs::File::open(&initrd_path).unwrap()).unwrap();
        let kernel =
            Kernel::prepare(image, header, Some("console=ttyS0 quiet"), Some(initrd)).unwrap();
        let (state, placement) = kernel.load(&ram, 0xe0000).unwrap();
        assert!(placement.is_some());
        assert_eq!(state.rip, 0x10_0200, "64-bit entry");
        assert_eq!(state.rsi, ZERO_PAGE_ADDR);

        let params: boot_params = ram.mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        assert_eq!(params.hdr.type_of_loader, LOADER_UNDEFINED);
        assert_eq!({ params.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(params.e820_entries as usize, ram.layout.ranges.len());
        let ramdisk = u64::from(params.hdr.ramdisk_image);
        assert_eq!({ params.hdr.ramdisk_size }, 3 * 4096 + 7);
        assert_eq!(ramdisk % 4096, 0);
        assert!(ramdisk + 3 * 4096 + 7 <= 128 * MIB);
        assert_eq!(ram.mem.read_obj::<u8>(GuestAddress(ramdisk)).unwrap(), 0x5a);
        let mut line = [0u8; 20];
        ram.mem
            .read_slice(&mut line, GuestAddress(CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&line, b"console=ttyS0 quiet\0");
        assert_eq!(
            ram.mem.read_obj::<u8>(GuestAddress(0x10_0000)).unwrap(),
            0xf4
        );
    }

    #[test]
    fn a_preferred_address_near_the_top_is_too_large_not_an_overflow() {
        // Was an overflowing `pref_address + init_size`: a panic in debug
        // builds, a wrapped (small) end in release ones.
        let mut image = fake_bzimage(0x10_0000, &[0xf4; 64]);
        image[0x258..0x260].copy_from_slice(&(u64::MAX - 0x1000).to_le_bytes());
        let header = Header::parse(&image).unwrap();
        assert_eq!(header.memory_end(0x10_0000, 64), u64::MAX);
        let ram = GuestRam::new(Layout::new(16 * MIB), "bz-pref").unwrap();
        let kernel = Kernel::prepare(image, header, None, None).unwrap();
        let err = kernel.load(&ram, 0xe0000).err().unwrap();
        assert_eq!(err.code, ErrorCode::KERNEL_TOO_LARGE);
    }

    #[test]
    fn limits_are_clear_errors() {
        let image = fake_bzimage(0x10_0000, &[0; 16]);
        let header = Header::parse(&image).unwrap();
        let long = "x".repeat(2048);
        let err = Kernel::prepare(image.clone(), header, Some(&long), None)
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::CMDLINE_TOO_LONG);
        assert!(err.message.contains("at most 2047"), "{}", err.message);

        // 16 MiB of guest memory: the kernel wants RAM up to 20 MiB.
        let ram = GuestRam::new(Layout::new(16 * MIB), "bz-small").unwrap();
        let kernel = Kernel::prepare(image, header, None, None).unwrap();
        let err = kernel.load(&ram, 0xe0000).err().unwrap();
        assert_eq!(err.code, ErrorCode::KERNEL_TOO_LARGE);
    }
}
