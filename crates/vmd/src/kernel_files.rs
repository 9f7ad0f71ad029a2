//! The files that come with a direct kernel boot besides the kernel: the
//! initrd (`--initrd`, vm.conf `initrd`) and the default firmware, which
//! kernels that run on BIOS services boot through.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use proto::ErrorCode;

use crate::daemon::DEFAULT_BIOS_PATHS;
use crate::permissions;

/// Opens the initrd at `path`. It must be a regular file; when a user
/// other than root chose it (`chosen_by`), the file's mode bits must let
/// that user read it (vmd.md §4.4). The checks run on the opened file, so
/// the path cannot be swapped in between.
pub fn open_initrd(path: &str, chosen_by: Option<u32>) -> Result<OwnedFd, ErrorCode> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            tracing::warn!("can't open initrd {path}: {e}");
            ErrorCode::INITRD_MISSING
        })?;
    let meta = file.metadata().map_err(|e| {
        tracing::warn!("can't open initrd {path}: {e}");
        ErrorCode::INITRD_MISSING
    })?;
    if !meta.is_file() {
        tracing::warn!("initrd {path} is not a regular file");
        return Err(ErrorCode::INITRD_MISSING);
    }
    if let Some(uid) = chosen_by
        && !permissions::may_read(uid, &meta)
    {
        tracing::warn!("uid {uid} may not read initrd {path}");
        return Err(ErrorCode::EPERM);
    }
    Ok(OwnedFd::from(file))
}

/// The first default firmware that opens, if any.
pub fn open_default_firmware() -> Option<OwnedFd> {
    DEFAULT_BIOS_PATHS.iter().find_map(|path| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .ok()
            .map(|f: File| OwnedFd::from(f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_must_exist_and_be_a_regular_file() {
        assert_eq!(
            open_initrd("/nonexistent/initrd", None).err(),
            Some(ErrorCode::INITRD_MISSING)
        );
        assert_eq!(
            open_initrd("/tmp", None).err(),
            Some(ErrorCode::INITRD_MISSING)
        );
        let path = std::env::temp_dir().join(format!("vmd-initrd-{}", std::process::id()));
        std::fs::write(&path, b"initrd").unwrap();
        assert!(open_initrd(path.to_str().unwrap(), None).is_ok());
        assert!(open_initrd(path.to_str().unwrap(), Some(0)).is_ok());
        std::fs::remove_file(path).unwrap();
    }
}
