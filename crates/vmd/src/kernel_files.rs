//! The files that come with a direct kernel boot besides the kernel: the
//! initrd (`--initrd`, vm.conf `initrd`) and the default firmware, which
//! kernels that run on BIOS services boot through.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use proto::ErrorCode;
use proto::error::{Failed, error_text};

use crate::daemon::DEFAULT_BIOS_PATHS;
use crate::permissions;

/// Opens the initrd at `path`. It must be a regular file; when a user
/// other than root chose it (`chosen_by`), the file's mode bits must let
/// that user read it (vmd.md §4.4). The checks run on the opened file, so
/// the path cannot be swapped in between. A failure says which file and
/// why.
pub fn open_initrd(path: &str, chosen_by: Option<u32>) -> Result<OwnedFd, Failed> {
    let missing = |e: std::io::Error| {
        tracing::warn!("can't open initrd {path}: {e}");
        Failed::because(
            ErrorCode::INITRD_MISSING,
            format!("{path}: {}", error_text(&e)),
        )
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(missing)?;
    let meta = file.metadata().map_err(missing)?;
    if !meta.is_file() {
        tracing::warn!("initrd {path} is not a regular file");
        return Err(Failed::because(
            ErrorCode::INITRD_MISSING,
            format!("{path}: not a regular file"),
        ));
    }
    if let Some(uid) = chosen_by
        && !permissions::may_read(uid, &meta)
    {
        tracing::warn!("uid {uid} may not read initrd {path}");
        return Err(Failed::because(
            ErrorCode::EPERM,
            format!("{path}: not readable by uid {uid}"),
        ));
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
            Some(Failed::because(
                ErrorCode::INITRD_MISSING,
                "/nonexistent/initrd: No such file or directory"
            ))
        );
        assert_eq!(
            open_initrd("/tmp", None).err(),
            Some(Failed::because(
                ErrorCode::INITRD_MISSING,
                "/tmp: not a regular file"
            ))
        );
        let path = std::env::temp_dir().join(format!("vmd-initrd-{}", std::process::id()));
        std::fs::write(&path, b"initrd").unwrap();
        assert!(open_initrd(path.to_str().unwrap(), None).is_ok());
        assert!(open_initrd(path.to_str().unwrap(), Some(0)).is_ok());
        std::fs::remove_file(path).unwrap();
    }
}
