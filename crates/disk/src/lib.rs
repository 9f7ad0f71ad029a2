//! Disk images for vmd: format detection, and (with the block layer) raw and
//! qcow2 images behind one interface.

pub mod format;

pub use format::{detect_format, split_format_prefix};
pub use proto::control::DiskFormat;
