//! Result codes carried in replies: an errno, or one of vmd's own codes
//! (docs/lifecycle.md, "Result codes"), whose numeric values are fixed; and the failures and
//! notices that carry, besides a code, what vmd found out about the cause.

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
    // Linux extensions (docs/direct-boot.md: `--cmdline`, `--initrd`).
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

/// Longest [`Line`], in characters: a path and an error fit easily, a
/// peer cannot make vmctl print pages.
pub const MAX_LINE: usize = 512;

/// Most cause lines one [`Failed`] keeps (a configuration file's errors).
pub const MAX_CAUSE_LINES: usize = 20;

/// One line of text vmd tells a user: no control characters (they are
/// shown escaped, so a file name cannot drive the user's terminal or fake
/// a line of output), at most [`MAX_LINE`] characters. A line decoded from
/// the wire is bounded the same way, whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Line(String);

impl Line {
    pub fn new(text: impl AsRef<str>) -> Line {
        let mut out = String::new();
        for c in text.as_ref().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        // Bounding twice changes nothing: a message that decoded encodes
        // back to the same message.
        if out.chars().count() > MAX_LINE {
            out = out.chars().take(MAX_LINE - 3).collect();
            out.push_str("...");
        }
        Line(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Line {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Line, D::Error> {
        String::deserialize(deserializer).map(Line::new)
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A failed request: the code vmctl turns into OpenBSD's message, and
/// what vmd knows of the cause, one [`Line`] each (a path and its error,
/// a configuration file's `file:line` errors), possibly none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub code: ErrorCode,
    #[serde(deserialize_with = "few_lines")]
    pub cause: Vec<Line>,
}

impl Failed {
    /// A failure with a one-line cause.
    pub fn because(code: ErrorCode, cause: impl AsRef<str>) -> Failed {
        Failed {
            code,
            cause: vec![Line::new(cause)],
        }
    }

    /// A failure with a cause of several lines, the first
    /// [`MAX_CAUSE_LINES`] kept.
    pub fn because_of_lines<S: AsRef<str>>(
        code: ErrorCode,
        lines: impl IntoIterator<Item = S>,
    ) -> Failed {
        Failed {
            code,
            cause: lines
                .into_iter()
                .take(MAX_CAUSE_LINES)
                .map(Line::new)
                .collect(),
        }
    }
}

/// A failure whose cause vmd does not know better than its code says.
impl From<ErrorCode> for Failed {
    fn from(code: ErrorCode) -> Failed {
        Failed {
            code,
            cause: Vec::new(),
        }
    }
}

impl std::fmt::Display for Failed {
    /// The code's text, then the cause's lines after `: `; code 0 (no
    /// errno) is the cause alone.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut lines = self.cause.iter();
        match (self.code.0, lines.next()) {
            (0, Some(first)) => write!(f, "{first}")?,
            (0, None) => f.write_str("failed")?,
            (_, first) => {
                write!(f, "{}", self.code)?;
                first
                    .into_iter()
                    .try_for_each(|line| write!(f, ": {line}"))?;
            }
        }
        lines.try_for_each(|line| write!(f, ": {line}"))
    }
}

fn few_lines<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Line>, D::Error> {
    let mut lines = Vec::<Line>::deserialize(deserializer)?;
    lines.truncate(MAX_CAUSE_LINES);
    Ok(lines)
}

/// An I/O error as the C library words it (`No such file or directory`,
/// without Rust's `(os error 2)`); an error without an errno, as it is.
pub fn error_text(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => strerror(errno),
        None => err.to_string(),
    }
}

/// The C library's message for `errno`.
pub fn strerror(errno: i32) -> String {
    // SAFETY: strerror takes any number and returns a pointer.
    let ptr = unsafe { libc::strerror(errno) };
    if ptr.is_null() {
        return format!("Unknown error {errno}");
    }
    // SAFETY: the pointer is to a NUL-terminated string that stays valid
    // until the next strerror call on this thread; it is copied out at
    // once.
    unsafe { std::ffi::CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
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

    #[test]
    fn lines_are_bounded_and_printable_however_they_arrive() {
        let sneaky = "a\x1b[2Jb\nvmctl: started";
        assert_eq!(Line::new(sneaky).as_str(), "a\\u{1b}[2Jb\\nvmctl: started");
        let long = "x".repeat(10 * MAX_LINE);
        let line = Line::new(&long);
        assert_eq!(line.as_str().chars().count(), MAX_LINE);
        assert!(line.as_str().ends_with("..."));
        assert_eq!(
            Line::new(line.as_str()),
            line,
            "bounding twice changes nothing"
        );

        // A peer's oversized cause is cut down on decoding.
        #[derive(Serialize)]
        struct Raw {
            code: ErrorCode,
            cause: Vec<String>,
        }
        let raw = Raw {
            code: ErrorCode::DISK_MISSING,
            cause: vec![long.clone(); 3 * MAX_CAUSE_LINES],
        };
        let bytes = postcard::to_stdvec(&raw).unwrap();
        let failed: Failed = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(failed.cause.len(), MAX_CAUSE_LINES);
        assert!(failed.cause.iter().all(|l| l.as_str().len() == MAX_LINE));
        let again: Failed = postcard::from_bytes(&postcard::to_stdvec(&failed).unwrap()).unwrap();
        assert_eq!(again, failed);
    }

    #[test]
    fn failures_read_code_then_cause() {
        let failed = Failed::because(
            ErrorCode::DISK_MISSING,
            "/d/a.img: No such file or directory",
        );
        assert_eq!(
            failed.to_string(),
            "could not open disk image(s): /d/a.img: No such file or directory"
        );
        assert_eq!(
            Failed::from(ErrorCode::EPERM).to_string(),
            "Operation not permitted"
        );
        let rejected = Failed::because_of_lines(ErrorCode(0), ["/a.conf:1: x", "/a.conf:2: y"]);
        assert_eq!(rejected.to_string(), "/a.conf:1: x: /a.conf:2: y");
        assert_eq!(Failed::from(ErrorCode(0)).to_string(), "failed");
    }
}
