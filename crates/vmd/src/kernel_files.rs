//! The files that come with a direct kernel boot besides the kernel: the
//! initrd (`--initrd`, vm.conf `initrd`) and the default firmware, which
//! kernels that run on BIOS services boot through.

use std::os::fd::OwnedFd;
use std::path::Path;

use proto::ErrorCode;
use proto::error::{Failed, error_text};

use crate::open_as::OpenAs;

/// Firmware used when a VM names no boot image (vmd(8), "Firmware").
pub const DEFAULT_BIOS_PATHS: [&str; 3] = [
    "/etc/firmware/vmm-bios",
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/seabios/bios.bin",
];

/// Opens the initrd at `path` with the rights of whoever chose it (see
/// open_as.rs): it must be a regular file that user may open. What was
/// checked is what is used: nothing looks the path up again. A failure
/// says which file and why.
pub fn open_initrd(path: &str, chosen_by: OpenAs) -> Result<OwnedFd, Failed> {
    let file = chosen_by
        .open(Path::new(path), false, disk::Expect::RegularFile)
        .map_err(|e| {
            tracing::warn!("can't open initrd {path}: {e}");
            let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
                ErrorCode::EPERM
            } else {
                ErrorCode::INITRD_MISSING
            };
            Failed::because(code, format!("{path}: {}", error_text(&e)))
        })?;
    Ok(OwnedFd::from(file))
}

/// The first default firmware that opens, if any.
pub fn open_default_firmware() -> Option<OwnedFd> {
    DEFAULT_BIOS_PATHS.iter().find_map(|path| {
        OpenAs::Root
            .open(Path::new(path), false, disk::Expect::RegularFile)
            .ok()
            .map(OwnedFd::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_must_exist_and_be_a_regular_file() {
        assert_eq!(
            open_initrd("/nonexistent/initrd", OpenAs::Root).err(),
            Some(Failed::because(
                ErrorCode::INITRD_MISSING,
                "/nonexistent/initrd: No such file or directory"
            ))
        );
        assert_eq!(
            open_initrd("/tmp", OpenAs::Root).err(),
            Some(Failed::because(
                ErrorCode::INITRD_MISSING,
                "/tmp: a directory, not a regular file"
            ))
        );
        let path = std::env::temp_dir().join(format!("vmd-initrd-{}", std::process::id()));
        std::fs::write(&path, b"initrd").unwrap();
        assert!(open_initrd(path.to_str().unwrap(), OpenAs::Root).is_ok());
        assert!(open_initrd(path.to_str().unwrap(), OpenAs::chooser(0)).is_ok());
        std::fs::remove_file(path).unwrap();
    }
}
