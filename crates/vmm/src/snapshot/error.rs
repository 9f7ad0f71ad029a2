//! What can go wrong moving a VM's state, and what vmctl is told.

use proto::ErrorCode;

use crate::devices::persist::PersistError;

#[derive(Debug)]
pub enum StreamError {
    /// The stream ended before its trailer.
    Truncated,
    /// Bytes that are not a well-formed stream of this version: bad magic
    /// or checksum, frames out of order, values no VM can have.
    Corrupt(String),
    /// A stream of another version.
    Version(u32),
    /// The guest uses CPU features this host's KVM cannot give it.
    Incompatible(String),
    /// A disk image is not what the guest was using.
    DiskChanged(String),
    /// Taking the state failed (a device could not save, KVM refused).
    Save(String),
    /// Setting the state failed on this host.
    Restore(String),
    /// Reading or writing the stream's descriptor failed.
    Io(std::io::Error),
}

impl StreamError {
    pub fn corrupt(what: impl Into<String>) -> StreamError {
        StreamError::Corrupt(what.into())
    }

    /// The code vmctl turns into its message (docs/send-stream.md).
    pub fn code(&self) -> ErrorCode {
        match self {
            StreamError::Truncated => ErrorCode::STREAM_TRUNCATED,
            StreamError::Corrupt(_) => ErrorCode::STREAM_CORRUPT,
            StreamError::Version(_) => ErrorCode::STREAM_VERSION,
            StreamError::Incompatible(_) => ErrorCode::CPU_INCOMPATIBLE,
            StreamError::DiskChanged(_) => ErrorCode::DISK_CHANGED,
            StreamError::Save(_) | StreamError::Restore(_) => ErrorCode::EIO,
            StreamError::Io(e) => ErrorCode::from_io(e),
        }
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Truncated => f.write_str("the stream ends early"),
            StreamError::Corrupt(what) => write!(f, "corrupt stream: {what}"),
            StreamError::Version(v) => write!(f, "stream version {v} is not supported"),
            StreamError::Incompatible(what) => write!(f, "incompatible host: {what}"),
            StreamError::DiskChanged(what) => write!(f, "disk changed: {what}"),
            StreamError::Save(what) => write!(f, "cannot save the vm: {what}"),
            StreamError::Restore(what) => write!(f, "cannot restore the vm: {what}"),
            StreamError::Io(e) => write!(f, "stream: {e}"),
        }
    }
}

impl std::error::Error for StreamError {}

impl From<std::io::Error> for StreamError {
    fn from(e: std::io::Error) -> StreamError {
        StreamError::Io(e)
    }
}

impl From<PersistError> for StreamError {
    /// A state the stream carried that its device refuses: as far as the
    /// stream is concerned, it is corrupt.
    fn from(e: PersistError) -> StreamError {
        StreamError::Corrupt(e.0)
    }
}
