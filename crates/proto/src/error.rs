//! Result codes carried in replies: an errno, or one of vmd's own codes
//! (vmd.md §5), whose numeric values are fixed.

use serde::{Deserialize, Serialize};

/// An errno value, or a vmd-specific code of 1001 and above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    pub const BIOS_MISSING: ErrorCode = ErrorCode(1001);
    pub const DISK_MISSING: ErrorCode = ErrorCode(1002);
    pub const STOP_INVALID: ErrorCode = ErrorCode(1004);
    pub const CDROM_MISSING: ErrorCode = ErrorCode(1005);
    pub const CDROM_INVALID: ErrorCode = ErrorCode(1006);
    pub const PARENT_INVALID: ErrorCode = ErrorCode(1007);
    // Linux extensions (interface.md: `--cmdline`, `--initrd`).
    pub const INITRD_MISSING: ErrorCode = ErrorCode(1101);
    pub const INITRD_TOO_LARGE: ErrorCode = ErrorCode(1102);
    pub const CMDLINE_TOO_LONG: ErrorCode = ErrorCode(1103);
    pub const CMDLINE_INVALID: ErrorCode = ErrorCode(1104);
    pub const KERNEL_ARGS_UNSUPPORTED: ErrorCode = ErrorCode(1105);
    pub const KERNEL_TOO_LARGE: ErrorCode = ErrorCode(1106);
    // Linux: `vmctl receive` (docs/send-stream.md).
    pub const STREAM_TRUNCATED: ErrorCode = ErrorCode(1107);
    pub const STREAM_CORRUPT: ErrorCode = ErrorCode(1108);
    pub const STREAM_VERSION: ErrorCode = ErrorCode(1109);
    pub const CPU_INCOMPATIBLE: ErrorCode = ErrorCode(1110);
    pub const DISK_CHANGED: ErrorCode = ErrorCode(1111);

    pub const EPERM: ErrorCode = ErrorCode(libc::EPERM);
    pub const ENOENT: ErrorCode = ErrorCode(libc::ENOENT);
    pub const EINTR: ErrorCode = ErrorCode(libc::EINTR);
    pub const EIO: ErrorCode = ErrorCode(libc::EIO);
    pub const ENOMEM: ErrorCode = ErrorCode(libc::ENOMEM);
    pub const EBUSY: ErrorCode = ErrorCode(libc::EBUSY);
    pub const EEXIST: ErrorCode = ErrorCode(libc::EEXIST);
    pub const EINVAL: ErrorCode = ErrorCode(libc::EINVAL);
    pub const ENOSPC: ErrorCode = ErrorCode(libc::ENOSPC);
    pub const ENOEXEC: ErrorCode = ErrorCode(libc::ENOEXEC);
    pub const EALREADY: ErrorCode = ErrorCode(libc::EALREADY);
    pub const ENOTSUP: ErrorCode = ErrorCode(libc::ENOTSUP);
    pub const ENODEV: ErrorCode = ErrorCode(libc::ENODEV);

    pub fn from_io(err: &std::io::Error) -> ErrorCode {
        ErrorCode(err.raw_os_error().unwrap_or(libc::EIO))
    }

    /// vmd's own text for its codes; `None` for plain errno values.
    pub fn vmd_message(self) -> Option<&'static str> {
        Some(match self {
            ErrorCode::BIOS_MISSING => "vmm bios firmware file not found.",
            ErrorCode::DISK_MISSING => "could not open disk image(s)",
            ErrorCode::STOP_INVALID => "cannot stop vm that is not running",
            ErrorCode::CDROM_MISSING => "could not find specified iso image",
            ErrorCode::CDROM_INVALID => "specified iso image is not a regular file",
            ErrorCode::PARENT_INVALID => "invalid template",
            ErrorCode::INITRD_MISSING => "could not open initrd",
            ErrorCode::INITRD_TOO_LARGE => "initrd does not fit in guest memory",
            ErrorCode::CMDLINE_TOO_LONG => "kernel command line longer than the kernel accepts",
            ErrorCode::CMDLINE_INVALID => "kernel command line must be printable ASCII",
            ErrorCode::KERNEL_ARGS_UNSUPPORTED => {
                "command line and initrd need a Linux kernel booted with -b"
            }
            ErrorCode::KERNEL_TOO_LARGE => "kernel does not fit in guest memory",
            ErrorCode::STREAM_TRUNCATED => "vm state stream is truncated",
            ErrorCode::STREAM_CORRUPT => "vm state stream is corrupt",
            ErrorCode::STREAM_VERSION => "vm state stream has an unsupported version",
            ErrorCode::CPU_INCOMPATIBLE => "this host's CPU lacks features the vm uses",
            ErrorCode::DISK_CHANGED => "a disk image differs from the one the vm was sent with",
            _ => return None,
        })
    }

    /// `strerror(3)` of an errno value, as the C library prints it.
    pub fn strerror(self) -> String {
        strerror(self.0)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.vmd_message() {
            Some(text) => f.write_str(text),
            None => f.write_str(&self.strerror()),
        }
    }
}

/// The C library's message for `errno`.
pub fn strerror(errno: i32) -> String {
    // SAFETY: strerror returns a pointer to a NUL-terminated string that
    // stays valid until the next strerror call on this thread; we copy it
    // out at once.
    unsafe {
        let ptr = libc::strerror(errno);
        if ptr.is_null() {
            return format!("Unknown error {errno}");
        }
        std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(ErrorCode::EPERM.to_string(), "Operation not permitted");
        assert_eq!(
            ErrorCode::EALREADY.to_string(),
            "Operation already in progress"
        );
        assert_eq!(
            ErrorCode::DISK_MISSING.to_string(),
            "could not open disk image(s)"
        );
    }
}
