//! Errors that name the image file they are about.
//!
//! Every failure to open or validate an image is reported as
//! `<path>: <problem>`, so that a user with a chain of four files knows
//! which one is at fault.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What is wrong with one image file.
#[derive(Debug)]
pub enum Problem {
    /// A system call failed (open, read, stat, …).
    Io(io::Error),
    /// Another process (a running VM, or a conversion) holds a conflicting
    /// `flock` on the file.
    Locked,
    /// The file is shorter than its own header or tables say it must be.
    Truncated(String),
    /// The file is not an image of the format it was opened as.
    BadMagic,
    /// The image's metadata is inconsistent (tables outside the file,
    /// misaligned offsets, impossible sizes, …).
    Corrupt(String),
    /// The image uses a feature this implementation does not support
    /// (encryption, external data files, …).
    Unsupported(String),
    /// The backing chain refers back to an image already in it.
    BackingLoop,
    /// The backing file named in the header could not be used; the inner
    /// error names it.
    Backing(Box<DiskError>),
    /// The open descriptors handed over do not match the chain the headers
    /// describe (VM side, no path to look anything up by).
    ChainMismatch(String),
}

/// An error about one image file.
#[derive(Debug)]
pub struct DiskError {
    path: PathBuf,
    problem: Problem,
}

impl DiskError {
    pub fn new(path: impl Into<PathBuf>, problem: Problem) -> Self {
        DiskError {
            path: path.into(),
            problem,
        }
    }

    pub(crate) fn io(path: &Path, err: io::Error) -> Self {
        DiskError::new(path, Problem::Io(err))
    }

    pub(crate) fn corrupt(path: &Path, what: impl Into<String>) -> Self {
        DiskError::new(path, Problem::Corrupt(what.into()))
    }

    pub(crate) fn unsupported(path: &Path, what: impl Into<String>) -> Self {
        DiskError::new(path, Problem::Unsupported(what.into()))
    }

    /// The file the error is about (for a backing problem: the image that
    /// refers to the backing file; [`DiskError::innermost`] names the
    /// backing file itself).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// The error at the end of a chain of backing errors.
    pub fn innermost(&self) -> &DiskError {
        match &self.problem {
            Problem::Backing(inner) => inner.innermost(),
            _ => self,
        }
    }

    /// True when the image (or one of its backing files) is locked by
    /// another process.
    pub fn is_locked(&self) -> bool {
        matches!(self.innermost().problem, Problem::Locked)
    }

    /// The errno to report for this error where only a number fits (the
    /// daemon's replies): the system error if there was one, otherwise
    /// EBUSY for a lock and EINVAL for a bad image.
    pub fn errno(&self) -> i32 {
        match &self.innermost().problem {
            Problem::Io(err) => err.raw_os_error().unwrap_or(libc::EIO),
            Problem::Locked => libc::EBUSY,
            Problem::Unsupported(_) => libc::ENOTSUP,
            _ => libc::EINVAL,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Io(err) => match err.raw_os_error() {
                Some(errno) => f.write_str(&proto::error::strerror(errno)),
                None => write!(f, "{err}"),
            },
            Problem::Locked => f.write_str("image is in use by another process (locked)"),
            Problem::Truncated(what) => write!(f, "file is truncated: {what}"),
            Problem::BadMagic => f.write_str("not a qcow2 image (bad magic)"),
            Problem::Corrupt(what) => write!(f, "corrupt qcow2 image: {what}"),
            Problem::Unsupported(what) => write!(f, "unsupported qcow2 image: {what}"),
            Problem::BackingLoop => {
                f.write_str("backing chain loops back to an image already in it")
            }
            Problem::Backing(inner) => write!(f, "backing file: {inner}"),
            Problem::ChainMismatch(what) => write!(f, "backing chain does not match: {what}"),
        }
    }
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for DiskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            Problem::Io(err) => Some(err),
            Problem::Backing(inner) => Some(inner.as_ref()),
            _ => None,
        }
    }
}

impl From<DiskError> for io::Error {
    fn from(err: DiskError) -> io::Error {
        let kind = match err.innermost().problem {
            Problem::Io(ref e) => e.kind(),
            Problem::Locked => io::ErrorKind::WouldBlock,
            Problem::Unsupported(_) => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err.to_string())
    }
}
