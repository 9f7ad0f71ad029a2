//! Image chains: a top image and the backing files below it.
//!
//! Opening is split in two because the process that runs a disk device
//! may open no file by name:
//!
//! 1. The daemon calls [`ImageChain::open`] with the path: it opens and
//!    locks the top image, reads its header, opens each backing file
//!    read-only (relative names resolved against the directory of the image
//!    that names them), and checks every header on the way.
//! 2. The VM process receives the descriptors (top first) and calls
//!    [`ImageChain::from_files`], which re-reads the headers from the
//!    descriptors alone to learn each layer's format, and then
//!    [`ImageChain::into_backend`] for the device.
//!
//! Both sides derive the chain with the same code from the same bytes, so
//! only the descriptors, the top image's format and path (for messages)
//! and the access mode need to cross the process boundary.

use std::collections::HashSet;
use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use proto::control::DiskFormat;

use crate::backend::BlockBackend;
use crate::error::{DiskError, Problem};
use crate::format::QCOW2_MAGIC;
use crate::image_file::{ImageFile, PastEof};
use crate::lock::{LockMode, lock_image};
use crate::open::{Expect, check_opened, open_checked};
use crate::qcow2::{Layer, Qcow2Backend, open_layers};
use crate::qcow2_header::{self, BackingRef};
use crate::raw::RawBackend;

/// How the top image is opened. Backing files are always read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and write the top image, locked exclusively.
    ReadWrite,
    /// Only read; locked shared so that no writer can have it meanwhile.
    ReadOnly,
}

/// One open image of a chain.
#[derive(Debug)]
pub struct ChainImage {
    /// The open file, with its `flock` held by the open file description.
    pub file: File,
    pub format: DiskFormat,
    /// The name the file was opened under (daemon side) or the name the
    /// image above gives it (VM side). For messages only.
    pub path: PathBuf,
}

/// An image and its backing files, top first, all open.
#[derive(Debug)]
pub struct ImageChain {
    images: Vec<ChainImage>,
    access: Access,
}

impl ImageChain {
    /// Opens the image at `path` in `format` and all its backing files.
    /// Daemon side: this is where every path is looked up.
    pub fn open(
        path: impl AsRef<Path>,
        format: DiskFormat,
        access: Access,
    ) -> Result<ImageChain, DiskError> {
        ImageChain::open_with(path, format, access, &|path, write| {
            open_checked(path, write, Expect::Image)
        })
    }

    /// [`ImageChain::open`], with every image of the chain opened by
    /// `opener(path, write)`: vmd opens a user's images with that user's
    /// credentials, backing files included, so that a chain cannot reach
    /// a file its user could not open. Whatever the opener returns is
    /// checked to be a regular file or a block device.
    pub fn open_with(
        path: impl AsRef<Path>,
        format: DiskFormat,
        access: Access,
        opener: &dyn Fn(&Path, bool) -> std::io::Result<File>,
    ) -> Result<ImageChain, DiskError> {
        let mut walk = Walk::new(access);
        let mut next = Some((path.as_ref().to_path_buf(), Some(format)));
        let mut referrer: Option<PathBuf> = None;
        while let Some((path, format)) = next.take() {
            let write = walk.is_top() && access == Access::ReadWrite;
            let lock = if write {
                LockMode::Exclusive
            } else {
                LockMode::Shared
            };
            let step = opener(&path, write)
                .and_then(|file| check_opened(&file, Expect::Image).map(|()| file))
                .map_err(|e| DiskError::io(&path, e))
                .and_then(|file| walk.push(file, format, path.clone(), Some(lock)));
            let backing = match (step, &referrer) {
                (Ok(backing), _) => backing,
                (Err(err), None) => return Err(err),
                (Err(err), Some(above)) => {
                    return Err(DiskError::new(above, Problem::Backing(Box::new(err))));
                }
            };
            if let Some(backing) = backing {
                next = Some((resolve_backing_name(&path, &backing.name), backing.format));
            }
            referrer = Some(path);
        }
        Ok(walk.finish())
    }

    /// Adopts descriptors opened by [`ImageChain::open`] in another
    /// process, top first. VM side: reads headers through the descriptors
    /// and looks up no path. `top_path` only labels messages.
    pub fn from_files(
        top_path: impl AsRef<Path>,
        top_format: DiskFormat,
        access: Access,
        files: Vec<File>,
    ) -> Result<ImageChain, DiskError> {
        let top_path = top_path.as_ref().to_path_buf();
        let mut files = files.into_iter();
        let mut walk = Walk::new(access);
        let mut next = Some((top_path.clone(), Some(top_format)));
        while let Some((path, format)) = next.take() {
            let Some(file) = files.next() else {
                let above = walk
                    .images
                    .last()
                    .map(|i| i.path.clone())
                    .unwrap_or(top_path);
                return Err(DiskError::new(
                    above,
                    Problem::ChainMismatch(format!(
                        "no descriptor was passed for backing file {}",
                        path.display()
                    )),
                ));
            };
            if walk.is_top() && access == Access::ReadWrite && !open_for_writing(&file) {
                return Err(DiskError::new(
                    &path,
                    Problem::ChainMismatch("the descriptor is not open for writing".into()),
                ));
            }
            if let Some(backing) = walk.push(file, format, path.clone(), None)? {
                next = Some((resolve_backing_name(&path, &backing.name), backing.format));
            }
        }
        let extra = files.count();
        if extra > 0 {
            return Err(DiskError::new(
                top_path,
                Problem::ChainMismatch(format!(
                    "{extra} more descriptor(s) than the chain has images"
                )),
            ));
        }
        Ok(walk.finish())
    }

    /// The backend of a raw image another process opened, only to be
    /// read (a CD-ROM's ISO image): no format probe, no backing file.
    pub fn raw_read_only(
        label: impl AsRef<Path>,
        file: File,
    ) -> Result<Box<dyn BlockBackend>, DiskError> {
        ImageChain::from_files(label, DiskFormat::Raw, Access::ReadOnly, vec![file])
            .and_then(ImageChain::into_backend)
    }

    /// The images, top first.
    pub fn images(&self) -> &[ChainImage] {
        &self.images
    }

    /// The images, top first, to hand their descriptors to another process.
    pub fn into_images(self) -> Vec<ChainImage> {
        self.images
    }

    pub fn access(&self) -> Access {
        self.access
    }

    /// The top image's format.
    pub fn format(&self) -> DiskFormat {
        self.images[0].format
    }

    /// Builds the block backend over the open files; no path is looked up.
    pub fn into_backend(self) -> Result<Box<dyn BlockBackend>, DiskError> {
        let writable = self.access == Access::ReadWrite;
        let top_path = self.images[0].path.clone();
        let has_backing = self.images.len() > 1;
        if self.images[0].format == DiskFormat::Raw {
            let image = self
                .images
                .into_iter()
                .next()
                .expect("a chain has a top image");
            let file = ImageFile::new(image.file, &image.path, writable, PastEof::Zeroes)
                .map_err(|e| DiskError::io(&image.path, e))?;
            return Ok(Box::new(RawBackend::new(file)));
        }

        let (mut version, mut cluster_size) = (3, 0);
        let mut layers = Vec::with_capacity(self.images.len());
        for (index, image) in self.images.into_iter().enumerate() {
            let top = index == 0;
            let past_eof = match image.format {
                DiskFormat::Qcow2 => PastEof::SectorSlack,
                DiskFormat::Raw => PastEof::Zeroes,
            };
            let file = ImageFile::new(image.file, &image.path, top && writable, past_eof)
                .map_err(|e| DiskError::io(&image.path, e))?;
            if top {
                let info = qcow2_header::inspect(&file)?;
                (version, cluster_size) = (info.version, info.cluster_size);
            }
            layers.push(Layer {
                file,
                format: image.format,
            });
        }
        let image = open_layers(layers).map_err(|e| DiskError::io(&top_path, e))?;
        Ok(Box::new(Qcow2Backend::new(
            image,
            version,
            cluster_size,
            has_backing,
        )))
    }
}

/// One image of a chain as [`describe_chain`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub path: PathBuf,
    pub format: DiskFormat,
    /// The size the guest sees: a raw image's length, a qcow2 image's
    /// virtual size.
    pub virtual_size: u64,
}

/// The images of the chain at `path`, top first, for showing them
/// (`vmctl status -v`). Reads headers only and takes no lock, so a chain
/// in use by a running VM can be described too.
pub fn describe_chain(path: &Path, format: DiskFormat) -> Result<Vec<ImageSummary>, DiskError> {
    let mut walk = Walk::new(Access::ReadOnly);
    let mut next = Some((path.to_path_buf(), Some(format)));
    while let Some((path, format)) = next.take() {
        let file = open_one(&path, false)?;
        if let Some(backing) = walk.push(file, format, path.clone(), None)? {
            next = Some((resolve_backing_name(&path, &backing.name), backing.format));
        }
    }
    walk.images
        .into_iter()
        .map(|image| {
            let virtual_size = match image.format {
                DiskFormat::Raw => image.file.metadata().map(|m| m.len()),
                DiskFormat::Qcow2 => {
                    let view = ImageFile::new(image.file, &image.path, false, PastEof::SectorSlack)
                        .map_err(|e| DiskError::io(&image.path, e))?;
                    return qcow2_header::inspect(&view).map(|info| ImageSummary {
                        path: image.path,
                        format: image.format,
                        virtual_size: info.virtual_size,
                    });
                }
            }
            .map_err(|e| DiskError::io(&image.path, e))?;
            Ok(ImageSummary {
                path: image.path,
                format: image.format,
                virtual_size,
            })
        })
        .collect()
}

/// The state of a chain being followed downwards.
struct Walk {
    images: Vec<ChainImage>,
    seen: HashSet<(u64, u64)>,
    access: Access,
}

impl Walk {
    fn new(access: Access) -> Self {
        Walk {
            images: Vec::new(),
            seen: HashSet::new(),
            access,
        }
    }

    fn is_top(&self) -> bool {
        self.images.is_empty()
    }

    /// Checks the next image of the chain and keeps it; returns what it
    /// names as its backing file. `format` is `None` for a backing file
    /// whose referrer records no format. The loop check comes before the
    /// lock: an image met twice would otherwise just look locked (by us).
    fn push(
        &mut self,
        file: File,
        format: Option<DiskFormat>,
        path: PathBuf,
        lock: Option<LockMode>,
    ) -> Result<Option<BackingRef>, DiskError> {
        let meta = file.metadata().map_err(|e| DiskError::io(&path, e))?;
        if !self.seen.insert((meta.dev(), meta.ino())) {
            return Err(DiskError::new(&path, Problem::BackingLoop));
        }
        if let Some(mode) = lock {
            lock_image(&file, mode).map_err(|e| {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    DiskError::new(&path, Problem::Locked)
                } else {
                    DiskError::io(&path, e)
                }
            })?;
        }
        let format = match format {
            Some(format) => format,
            None => probe_format(&file, &path)?,
        };
        let backing = match format {
            DiskFormat::Raw => None,
            DiskFormat::Qcow2 => {
                // A throwaway view for reading the header; the File itself
                // is kept for the chain.
                let dup = file.try_clone().map_err(|e| DiskError::io(&path, e))?;
                let view = ImageFile::new(dup, &path, false, PastEof::SectorSlack)
                    .map_err(|e| DiskError::io(&path, e))?;
                qcow2_header::inspect(&view)?.backing
            }
        };
        self.images.push(ChainImage { file, format, path });
        Ok(backing)
    }

    fn finish(self) -> ImageChain {
        ImageChain {
            images: self.images,
            access: self.access,
        }
    }
}

/// Opens one image of the chain (not yet locked) as root would.
fn open_one(path: &Path, write: bool) -> Result<File, DiskError> {
    open_checked(path, write, Expect::Image).map_err(|e| DiskError::io(path, e))
}

/// A backing file without a recorded format: qcow2 if it has the magic.
fn probe_format(file: &File, path: &Path) -> Result<DiskFormat, DiskError> {
    let mut magic = [0u8; 4];
    let dup = file.try_clone().map_err(|e| DiskError::io(path, e))?;
    let view =
        ImageFile::new(dup, path, false, PastEof::Zeroes).map_err(|e| DiskError::io(path, e))?;
    view.read_vectored_at(&mut [IoSliceMut::new(&mut magic)], 0)
        .map_err(|e| DiskError::io(path, e))?;
    Ok(if magic == QCOW2_MAGIC {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    })
}

/// A backing file name as stored in `image`'s header, as a path: relative
/// names are relative to the directory of `image`, not to the current
/// directory. Pure string work; nothing is looked up.
pub fn resolve_backing_name(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_path_buf();
    }
    match image.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => name.to_path_buf(),
    }
}

fn open_for_writing(file: &File) -> bool {
    // SAFETY: F_GETFL on a descriptor we own takes no pointer.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && (flags & libc::O_ACCMODE) != libc::O_RDONLY
}
