//! Disk images for vmd: raw and qcow2 images behind one block-backend
//! interface, image chains opened by the daemon and adopted by the VM
//! process, image creation and conversion.
//!
//! * [`BlockBackend`]: what a device reads and writes through.
//! * [`ImageChain::open`] (daemon) / [`ImageChain::from_files`] and
//!   [`ImageChain::into_backend`] (VM process).
//! * [`create_raw`], [`create_qcow2`], [`convert()`]: `vmctl create`.

pub mod backend;
pub mod chain;
pub mod convert;
pub mod create;
pub mod error;
pub mod format;
mod image_file;
pub mod lock;
pub mod open;
mod qcow2;
mod qcow2_header;
mod raw;

pub use backend::{BlockBackend, BlockStatus};
pub use chain::{
    Access, ChainImage, ImageChain, ImageSummary, describe_chain, resolve_backing_name,
};
pub use convert::{ConvertError, convert};
pub use create::{
    BaseError, base_image_size, create_image, create_overlay, create_qcow2_with_cluster_size,
};
pub use error::{DiskError, Problem};
pub use format::{detect_format, split_format_prefix};
pub use open::{Expect, check_opened, open_checked};
pub use proto::control::DiskFormat;
pub use qcow2::Qcow2Backend;
pub use qcow2_header::{BackingRef, Qcow2Info};
pub use raw::RawBackend;
