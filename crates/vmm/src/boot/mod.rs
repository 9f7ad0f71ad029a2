//! What `-b` (or the default firmware) hands the VM, and how it is loaded.
//!
//! The image's kind is recognised from its contents (docs/direct-boot.md):
//!
//! | image | path | file |
//! |---|---|---|
//! | firmware (anything else) | copied below 4 GiB, vCPU at the reset vector | bios.rs |
//! | Linux bzImage with a protected-mode entry | the VMM is the boot loader: `boot_params`, 64-bit (or 32-bit) entry | bzimage.rs |
//! | bzImage without one (iPXE's `.lkrn`) | firmware first, then the kernel's real-mode setup code through an option ROM | realmode.rs |
//! | ELF with a PVH note (Linux `vmlinux`) | 32-bit PVH entry with `hvm_start_info` | pvh.rs |
//! | other ELF (OpenBSD), optionally gzip'ed | vmd's boot loader convention (docs/machine.md, "Boot") | openbsd.rs |
//!
//! Direct boots also get the platform tables in memory (tables.rs);
//! firmware boots get them through fw_cfg.

pub mod bios;
pub mod bzimage;
pub mod cpu_state;
pub mod elf;
pub mod initrd;
pub mod linuxboot_rom;
pub mod openbsd;
pub mod pvh;
pub mod realmode;
pub mod tables;

use std::fs::File;
use std::io::Read;

use linux_loader::loader::Cmdline;
use proto::ErrorCode;

use crate::acpi::AcpiTables;
use crate::acpi::table_loader;
use crate::devices::fw_cfg::FwCfg;
use crate::memory::GuestRam;
use crate::platform::Platform;
use cpu_state::EntryState;
use initrd::Initrd;

/// Largest image accepted after decompression.
pub const MAX_IMAGE: u64 = 256 * 1024 * 1024;

/// The kinds of boot image, recognised from their contents (docs/direct-boot.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A firmware image placed below 4 GiB.
    Bios,
    /// A Linux bzImage (boot protocol header at 0x1f1, "HdrS" at 0x202).
    BzImage,
    /// An ELF kernel.
    Elf,
    /// A gzip-compressed kernel.
    Gzip,
}

impl ImageKind {
    pub fn detect(image: &[u8]) -> ImageKind {
        if image.starts_with(b"\x7fELF") {
            ImageKind::Elf
        } else if image.starts_with(&[0x1f, 0x8b]) {
            ImageKind::Gzip
        } else if image.len() > 0x206 && &image[0x202..0x206] == b"HdrS" {
            ImageKind::BzImage
        } else {
            ImageKind::Bios
        }
    }
}

/// Why a boot image cannot be booted: the code vmctl shows, and the detail
/// for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootError {
    pub code: ErrorCode,
    pub message: String,
}

impl BootError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> BootError {
        BootError {
            code,
            message: message.into(),
        }
    }

    /// A malformed or unsupported image.
    pub fn image(message: impl Into<String>) -> BootError {
        BootError::new(ErrorCode::ENOEXEC, message)
    }

    /// Guest memory could not hold what had to be loaded.
    pub fn memory(what: &str, err: impl std::fmt::Display) -> BootError {
        BootError::new(
            ErrorCode::KERNEL_TOO_LARGE,
            format!("{what} does not fit in guest memory: {err}"),
        )
    }
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BootError {}

/// What came with the launch for booting.
pub struct BootRequest {
    pub image: Vec<u8>,
    pub cmdline: Option<String>,
    pub initrd: Option<File>,
    /// The default firmware, for kernels that need BIOS services.
    pub firmware: Option<File>,
    /// The first NIC's MAC, when the boot device is `net` (OpenBSD's
    /// BOOTARG_BOOTMAC).
    pub boot_mac: Option<[u8; 6]>,
}

/// How vCPU 0 starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Real mode at the firmware's reset vector.
    ResetVector,
    /// At a kernel's entry point, in the state it expects.
    Kernel(EntryState),
}

/// A recognised, checked boot image, not loaded yet.
pub enum BootImage {
    Firmware(Vec<u8>),
    Linux(bzimage::Kernel),
    LinuxThroughFirmware(realmode::Kernel),
    Pvh(pvh::Kernel),
    OpenBsd(openbsd::Kernel),
}

/// Reads a whole file (the firmware sent along with a kernel).
fn read_file(mut file: &File, what: &str) -> Result<Vec<u8>, BootError> {
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| BootError::new(ErrorCode::from_io(&e), format!("{what}: {e}")))?;
    Ok(data)
}

fn gunzip(image: &[u8]) -> Result<Vec<u8>, BootError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(image)
        .take(MAX_IMAGE + 1)
        .read_to_end(&mut out)
        .map_err(|e| BootError::image(format!("gzip-compressed boot image: {e}")))?;
    if out.len() as u64 > MAX_IMAGE {
        return Err(BootError::image("decompressed boot image is too large"));
    }
    Ok(out)
}

/// Checks a command line against the kernel's limit (`limit` bytes, not
/// counting the terminating NUL) with linux-loader's validator.
pub fn command_line(cmdline: Option<&str>, limit: usize) -> Result<Cmdline, BootError> {
    let mut line = Cmdline::new(limit + 1).map_err(|e| BootError::image(e.to_string()))?;
    if let Some(text) = cmdline.filter(|t| !t.trim().is_empty()) {
        line.insert_str(text).map_err(|e| match e {
            linux_loader::cmdline::Error::TooLarge => BootError::new(
                ErrorCode::CMDLINE_TOO_LONG,
                format!(
                    "command line is {} bytes, this kernel accepts at most {limit}",
                    text.trim().len()
                ),
            ),
            other => BootError::new(ErrorCode::CMDLINE_INVALID, format!("command line: {other}")),
        })?;
    }
    Ok(line)
}

impl BootImage {
    /// Recognises the image and checks everything that can be checked
    /// before guest memory exists: headers, the command line's length,
    /// that the image kind takes a command line and initrd at all.
    pub fn prepare(request: BootRequest) -> Result<BootImage, BootError> {
        let BootRequest {
            image,
            cmdline,
            initrd,
            firmware,
            boot_mac,
        } = request;
        let initrd = initrd.map(Initrd::new).transpose()?;
        let kind = ImageKind::detect(&image);
        let (image, compressed) = match kind {
            ImageKind::Gzip => (gunzip(&image)?, true),
            _ => (image, false),
        };
        let no_kernel_args = |what: &str| {
            if cmdline.is_some() || initrd.is_some() {
                Err(BootError::new(
                    ErrorCode::KERNEL_ARGS_UNSUPPORTED,
                    format!("{what} takes no command line or initrd"),
                ))
            } else {
                Ok(())
            }
        };
        match ImageKind::detect(&image) {
            ImageKind::Elf => match elf::inspect(&image)? {
                elf::Flavor::Pvh => Ok(BootImage::Pvh(pvh::Kernel::prepare(
                    image,
                    cmdline.as_deref(),
                    initrd,
                )?)),
                elf::Flavor::LinuxWithoutPvh => Err(BootError::image(
                    "this Linux ELF kernel has no PVH entry note; boot its bzImage instead",
                )),
                elf::Flavor::Other => {
                    no_kernel_args("an OpenBSD ELF kernel")?;
                    Ok(BootImage::OpenBsd(openbsd::Kernel::prepare(
                        image, boot_mac,
                    )?))
                }
            },
            _ if compressed => Err(BootError::image(
                "a gzip-compressed boot image must be an ELF kernel",
            )),
            ImageKind::BzImage => {
                let header = bzimage::Header::parse(&image)?;
                if header.has_protected_mode_entry() {
                    Ok(BootImage::Linux(bzimage::Kernel::prepare(
                        image,
                        header,
                        cmdline.as_deref(),
                        initrd,
                    )?))
                } else {
                    let firmware = firmware.ok_or_else(|| {
                        BootError::new(
                            ErrorCode::BIOS_MISSING,
                            "this kernel runs on BIOS services and no firmware is installed",
                        )
                    })?;
                    let firmware = read_file(&firmware, "firmware")?;
                    Ok(BootImage::LinuxThroughFirmware(realmode::Kernel::prepare(
                        image,
                        header,
                        cmdline.as_deref(),
                        initrd,
                        firmware,
                    )?))
                }
            }
            ImageKind::Bios | ImageKind::Gzip => {
                no_kernel_args("a BIOS image")?;
                bios::validate(&image).map_err(|e| BootError::image(e.to_string()))?;
                Ok(BootImage::Firmware(image))
            }
        }
    }

    /// Bytes of firmware placed below 4 GiB (sizes the memory layout's
    /// BIOS area); 0 for direct boots.
    pub fn firmware_size(&self) -> u64 {
        match self {
            BootImage::Firmware(image) => image.len() as u64,
            BootImage::LinuxThroughFirmware(kernel) => kernel.firmware_size(),
            _ => 0,
        }
    }

    /// Loads everything into guest memory (and fw_cfg) and says how vCPU 0
    /// starts.
    pub fn load(
        self,
        ram: &GuestRam,
        platform: &Platform,
        fw_cfg: &mut FwCfg,
    ) -> Result<Loaded, BootError> {
        let (entry, initrd) = match self {
            BootImage::Firmware(image) => {
                bios::load(&ram.mem, &image).map_err(|e| BootError::image(e.to_string()))?;
                offer_tables_to_firmware(platform, fw_cfg)?;
                (Entry::ResetVector, None)
            }
            BootImage::LinuxThroughFirmware(kernel) => {
                let initrd = kernel.load(ram, fw_cfg)?;
                offer_tables_to_firmware(platform, fw_cfg)?;
                (Entry::ResetVector, initrd)
            }
            BootImage::Linux(kernel) => {
                let rsdp = tables::write(&ram.mem, platform)?;
                let (state, initrd) = kernel.load(ram, rsdp)?;
                (Entry::Kernel(state), initrd)
            }
            BootImage::Pvh(kernel) => {
                let rsdp = tables::write(&ram.mem, platform)?;
                let (state, initrd) = kernel.load(ram, rsdp)?;
                (Entry::Kernel(state), initrd)
            }
            BootImage::OpenBsd(kernel) => {
                tables::write(&ram.mem, platform)?;
                (Entry::Kernel(kernel.load(ram)?), None)
            }
        };
        Ok(Loaded { entry, initrd })
    }
}

/// What loading produced.
#[derive(Debug)]
pub struct Loaded {
    pub entry: Entry,
    /// Where the initrd went, if there is one.
    pub initrd: Option<initrd::Placement>,
}

/// The ACPI tables for SeaBIOS to install (it writes its own MP table).
fn offer_tables_to_firmware(platform: &Platform, fw_cfg: &mut FwCfg) -> Result<(), BootError> {
    let tables = AcpiTables::build(platform, 0);
    for (name, data) in table_loader::files(&tables) {
        fw_cfg
            .add_file(name, data)
            .map_err(|e| BootError::new(ErrorCode::EINVAL, e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection() {
        assert_eq!(ImageKind::detect(b"\x7fELF\x02\x01"), ImageKind::Elf);
        assert_eq!(ImageKind::detect(&[0x1f, 0x8b, 8]), ImageKind::Gzip);
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(ImageKind::detect(&bz), ImageKind::BzImage);
        assert_eq!(ImageKind::detect(&[0u8; 65536]), ImageKind::Bios);
    }

    #[test]
    fn command_line_limits_and_characters() {
        let line = command_line(Some("console=ttyS0 quiet"), 19).unwrap();
        assert_eq!(
            line.as_cstring().unwrap().as_bytes(),
            b"console=ttyS0 quiet"
        );
        let err = command_line(Some("console=ttyS0 quiet"), 18).unwrap_err();
        assert_eq!(err.code, ErrorCode::CMDLINE_TOO_LONG);
        assert!(err.message.contains("19 bytes"), "{}", err.message);
        let err = command_line(Some("caf\u{e9}"), 100).unwrap_err();
        assert_eq!(err.code, ErrorCode::CMDLINE_INVALID);
        assert_eq!(
            command_line(None, 10)
                .unwrap()
                .as_cstring()
                .unwrap()
                .as_bytes(),
            b""
        );
    }

    fn request(image: Vec<u8>) -> BootRequest {
        BootRequest {
            image,
            cmdline: None,
            initrd: None,
            firmware: None,
            boot_mac: None,
        }
    }

    #[test]
    fn firmware_takes_no_kernel_arguments() {
        let mut r = request(vec![0u8; 65536]);
        r.cmdline = Some("console=ttyS0".into());
        let err = BootImage::prepare(r).err().unwrap();
        assert_eq!(err.code, ErrorCode::KERNEL_ARGS_UNSUPPORTED);
        assert!(BootImage::prepare(request(vec![0u8; 65536])).is_ok());
    }

    #[test]
    fn compressed_images_must_be_elf() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[0u8; 65536]).unwrap();
        let err = BootImage::prepare(request(gz.finish().unwrap()))
            .err()
            .unwrap();
        assert_eq!(err.code, ErrorCode::ENOEXEC);
        let err = BootImage::prepare(request(vec![0x1f, 0x8b, 0, 1, 2]))
            .err()
            .unwrap();
        assert!(err.message.contains("gzip"), "{}", err.message);
    }
}
