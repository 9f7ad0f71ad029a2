//! Creating images: sparse raw files, empty qcow2 v3 images, qcow2
//! overlays on a base image.
//!
//! New files are created exclusively (an existing file is never
//! overwritten) with mode 0600 before the umask, locked exclusively while
//! they are being written, and removed again if formatting fails.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use imago::qcow2::Qcow2;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatCreateBuilder, FormatDriverBuilder};
use proto::control::DiskFormat;

use crate::backend::BlockBackend;
use crate::chain::{Access, ImageChain, resolve_backing_name};
use crate::error::{DiskError, Problem};
use crate::image_file::{ImageFile, PastEof};
use crate::lock::{LockMode, lock_image};
use crate::qcow2::Qcow2Backend;
use crate::raw::RawBackend;

/// Cluster size of the qcow2 images we create (vmctl(8), create).
pub const QCOW2_CLUSTER_SIZE: usize = 65536;

/// Creates an image of `size` bytes with no backing file and returns it
/// open for writing (the conversion target). A raw image is a sparse file;
/// a qcow2 image is version 3 with 64 KiB clusters and 16-bit refcounts.
pub fn create_image(
    path: &Path,
    format: DiskFormat,
    size: u64,
) -> io::Result<Box<dyn BlockBackend>> {
    let file = create_file(path)?;
    let result = format_image(file, path, format, size);
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Creates an empty qcow2 v3 image with the given cluster size (a power of
/// two from 512 B to 2 MiB) and returns it open for writing. For tests
/// and fuzzing; `vmctl create` always uses [`QCOW2_CLUSTER_SIZE`].
pub fn create_qcow2_with_cluster_size(
    path: &Path,
    size: u64,
    cluster_size: usize,
) -> io::Result<Box<dyn BlockBackend>> {
    let file = create_file(path)?;
    let result = format_qcow2(file, path, size, cluster_size);
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn format_qcow2(
    file: File,
    path: &Path,
    size: u64,
    cluster_size: usize,
) -> io::Result<Box<dyn BlockBackend>> {
    let file = ImageFile::new(file, path, true, PastEof::SectorSlack)?;
    let qcow2 = Qcow2::<ImageFile>::create_builder(file)
        .cluster_size(cluster_size)
        .refcount_width(16)
        .size(size)
        .create_open(DenyImplicitOpenGate::default(), |file| {
            Ok(Qcow2::<ImageFile>::builder(file).backing(None).write(true))
        })?;
    let image = FormatAccess::new(qcow2);
    image.flush()?;
    Ok(Box::new(Qcow2Backend::new(
        image,
        3,
        cluster_size as u64,
        false,
    )))
}

fn format_image(
    file: File,
    path: &Path,
    format: DiskFormat,
    size: u64,
) -> io::Result<Box<dyn BlockBackend>> {
    match format {
        DiskFormat::Raw => {
            file.set_len(size)?;
            let file = ImageFile::new(file, path, true, PastEof::Zeroes)?;
            Ok(Box::new(RawBackend::new(file)))
        }
        DiskFormat::Qcow2 => format_qcow2(file, path, size, QCOW2_CLUSTER_SIZE),
    }
}

/// Creates a qcow2 overlay of `size` bytes whose backing file is `base`,
/// stored in the header exactly as given, with backing format qcow2. The
/// base is not opened here; see [`base_image_size`]. `size` may exceed
/// the base's: what lies past the base's end reads as zeros until it is
/// written, and is then allocated in the overlay like any other cluster
/// (qemu reads such an overlay the same way).
pub fn create_overlay(path: &Path, base: &str, size: u64) -> io::Result<()> {
    let file = create_file(path)?;
    let result = (|| {
        let file = ImageFile::new(file, path, true, PastEof::SectorSlack)?;
        Qcow2::<ImageFile>::create_builder(file)
            .cluster_size(QCOW2_CLUSTER_SIZE)
            .refcount_width(16)
            .backing(base.to_string(), "qcow2".to_string())
            .size(size)
            .create()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Why a base image cannot carry an overlay.
#[derive(Debug)]
pub enum BaseError {
    /// The base could not be opened or read.
    Unreadable(DiskError),
    /// The base is not a qcow2 image.
    NotQcow2,
    /// The base (or a file below it) is a damaged or unsupported image.
    Invalid(DiskError),
}

/// The virtual size of the base image that an overlay at `overlay` naming
/// `base` would have. A relative `base` is taken relative to the overlay's
/// directory, as it will be when the overlay is used. The base and its own
/// backing files are opened read-only and checked.
pub fn base_image_size(overlay: &Path, base: &str) -> Result<u64, BaseError> {
    let path = resolve_backing_name(overlay, base);
    match ImageChain::open(&path, DiskFormat::Qcow2, Access::ReadOnly) {
        Ok(chain) => chain
            .into_backend()
            .map(|b| b.size())
            .map_err(BaseError::Invalid),
        Err(err) => Err(match err.problem() {
            Problem::Io(_) | Problem::Locked => BaseError::Unreadable(err),
            Problem::BadMagic => BaseError::NotQcow2,
            _ => BaseError::Invalid(err),
        }),
    }
}

/// Creates `path` exclusively, mode 0600 before the umask, and locks it.
fn create_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    if let Err(err) = lock_image(&file, LockMode::Exclusive) {
        let _ = std::fs::remove_file(path);
        return Err(err);
    }
    Ok(file)
}
