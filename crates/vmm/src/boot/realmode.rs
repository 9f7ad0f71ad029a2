//! bzImages that must start in their real-mode setup code on a BIOS: iPXE's
//! `ipxe.lkrn` is one (it has no protected-mode entry: `code32_start` is
//! 0, and it runs on BIOS services). The firmware boots as usual; an
//! option ROM (linuxboot_rom.rs) loads the kernel from fw_cfg once POST is
//! over and jumps to the setup code, which is what a BIOS boot loader
//! would do.
//!
//! Layout, as the boot protocol suggests for a loaded-high kernel: the
//! setup code at 0x10000 with its heap and stack up to 0x1E000 and the
//! command line there, the protected-mode part at 1 MiB, the initrd as
//! high as allowed, clear of the firmware's tables at the top of RAM.

use proto::ErrorCode;
use vm_memory::ByteValued;

use super::bzimage::{self, Header};
use super::initrd::{self, Initrd, Placement};
use super::linuxboot_rom::{self, Transfer};
use super::{BootError, bios};
use crate::devices::fw_cfg::FwCfg;
use crate::memory::{FOUR_GIB, GuestRam, HIGHMEM_START, MIB};

/// The setup code's segment (address 0x10000).
pub const SETUP_SEGMENT: u16 = 0x1000;
const SETUP_ADDR: u64 = (SETUP_SEGMENT as u64) << 4;
/// The heap ends (and the stack starts) here, relative to the setup code.
const HEAP_END: u16 = 0xe000;
/// `heap_end_ptr`: where the setup code's heap ends (the space above is
/// its stack), relative to the setup code.
const SETUP_HEAP_END: u16 = HEAP_END - 0x200;
/// The command line follows the heap, up to the next 64 KiB.
const CMDLINE_ADDR: u64 = SETUP_ADDR + HEAP_END as u64;
const CMDLINE_ROOM: usize = 0x1_0000 - HEAP_END as usize;
/// The firmware keeps its tables at the top of RAM below 4 GiB.
const FIRMWARE_TOP_RESERVE: u64 = MIB;

const HEADER_OFFSET: usize = 0x1f1;
const LOADER_UNDEFINED: u8 = 0xff;
/// loadflags: the boot loader set heap_end_ptr.
const CAN_USE_HEAP: u8 = 0x80;

pub const ROM_FILE: &str = "genroms/vmd-linuxboot.bin";
const SETUP_FILE: &str = "etc/vmd/linux-setup";
const KERNEL_FILE: &str = "etc/vmd/linux-kernel";
const CMDLINE_FILE: &str = "etc/vmd/linux-cmdline";
const INITRD_FILE: &str = "etc/vmd/linux-initrd";

pub struct Kernel {
    linux: bzimage::Kernel,
    firmware: Vec<u8>,
}

impl Kernel {
    pub fn prepare(
        image: Vec<u8>,
        header: Header,
        cmdline: Option<&str>,
        initrd: Option<Initrd>,
        firmware: Vec<u8>,
    ) -> Result<Kernel, BootError> {
        bios::validate(&firmware).map_err(|e| BootError::image(format!("firmware: {e}")))?;
        if image.len() <= header.setup_len() {
            return Err(BootError::image("bzImage has no protected-mode part"));
        }
        // The heap follows the setup code, the command line the heap: a
        // longer setup would have both written over it.
        if header.setup_len() > usize::from(SETUP_HEAP_END) {
            return Err(BootError::image(format!(
                "bzImage setup code of {} bytes is more than the {} bytes below its heap's end",
                header.setup_len(),
                SETUP_HEAP_END
            )));
        }
        Ok(Kernel {
            linux: bzimage::Kernel::prepare_with_room(
                image,
                header,
                cmdline,
                initrd,
                CMDLINE_ROOM,
            )?,
            firmware,
        })
    }

    pub fn firmware_size(&self) -> u64 {
        self.firmware.len() as u64
    }

    /// Loads the firmware and offers the kernel's pieces and the ROM
    /// through fw_cfg.
    pub fn load(self, ram: &GuestRam, fw_cfg: &mut FwCfg) -> Result<Option<Placement>, BootError> {
        bios::load(&ram.mem, &self.firmware).map_err(|e| BootError::image(e.to_string()))?;
        let linux = self.linux;
        let setup_len = linux.header.setup_len();
        let kernel = &linux.image[setup_len..];
        let kernel_end = linux.header.memory_end(HIGHMEM_START, kernel.len() as u64);
        if kernel_end > ram.layout.low_ram_end() {
            return Err(BootError::new(
                ErrorCode::KERNEL_TOO_LARGE,
                "the kernel does not fit in guest memory",
            ));
        }

        let mut initrd_data = None;
        let placement = match linux.initrd {
            Some(mut file) => {
                let highest = linux.header.initrd_max().min(FOUR_GIB - 1);
                let placement = initrd::place(
                    &ram.layout,
                    file.size,
                    kernel_end,
                    highest,
                    FIRMWARE_TOP_RESERVE,
                )?;
                initrd_data = Some(initrd::read(&mut file)?);
                Some(placement)
            }
            None => None,
        };

        let mut header = linux.header.0;
        header.type_of_loader = LOADER_UNDEFINED;
        header.loadflags |= CAN_USE_HEAP;
        header.heap_end_ptr = SETUP_HEAP_END;
        header.cmd_line_ptr = CMDLINE_ADDR as u32;
        if let Some(p) = placement {
            header.ramdisk_image = p.addr as u32;
            header.ramdisk_size = p.size as u32;
        }
        let mut setup = linux.image[..setup_len].to_vec();
        let header_bytes = header.as_slice();
        // Only the header the kernel declares (up to the end its jump
        // skips) is written back; the rest is the kernel's setup code.
        let declared =
            (0x202 + usize::from(linux.image[0x201])).min(HEADER_OFFSET + header_bytes.len());
        setup[HEADER_OFFSET..declared].copy_from_slice(&header_bytes[..declared - HEADER_OFFSET]);

        let cmdline = linux
            .cmdline
            .as_cstring()
            .map_err(|e| BootError::image(e.to_string()))?
            .into_bytes_with_nul();
        let mut add = |name: &str, data: Vec<u8>, addr: u64| -> Result<Transfer, BootError> {
            let len = data.len() as u32;
            let selector = fw_cfg
                .add_file(name, data)
                .map_err(|e| BootError::new(ErrorCode::EINVAL, e.to_string()))?;
            Ok(Transfer {
                selector,
                len,
                addr,
            })
        };
        let mut transfers = vec![
            add(SETUP_FILE, setup, SETUP_ADDR)?,
            add(KERNEL_FILE, kernel.to_vec(), HIGHMEM_START)?,
            add(CMDLINE_FILE, cmdline, CMDLINE_ADDR)?,
        ];
        if let (Some(data), Some(p)) = (initrd_data, placement) {
            transfers.push(add(INITRD_FILE, data, p.addr)?);
        }
        let rom = linuxboot_rom::build(&transfers, SETUP_SEGMENT, HEAP_END);
        fw_cfg
            .add_file(ROM_FILE, rom)
            .map_err(|e| BootError::new(ErrorCode::EINVAL, e.to_string()))?;
        Ok(placement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::bzimage::tests::fake_bzimage;

    fn prepare(setup_sects: u8) -> Result<Kernel, BootError> {
        let mut image = fake_bzimage(0, &[0xf4; 64]);
        image[HEADER_OFFSET] = setup_sects;
        let header = Header::parse(&image).unwrap();
        image.resize(header.setup_len() + 64, 0xf4);
        Kernel::prepare(image, header, None, None, vec![0; bios::BIOS_GRANULE])
    }

    #[test]
    fn setup_code_must_end_below_its_heap() {
        // 111 sectors and the boot sector: 0xe000 bytes, over 0xde00.
        let err = prepare(111).err().unwrap();
        assert!(err.message.contains("setup code"), "{}", err.message);
        // Linux's own limit is 64 sectors; 110 leave 0x200 bytes of heap.
        prepare(110).unwrap();
        prepare(64).unwrap();
    }
}
