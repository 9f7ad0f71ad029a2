//! qcow2 images (v2 and v3, with backing chains) through imago.
//!
//! imago does all qcow2 work: mapping lookups, cluster allocation, copy on
//! write from backing images, compressed cluster reads, metadata caching
//! and write ordering. This module builds an imago image from files that
//! are already open (every backing layer supplied explicitly, so imago
//! never opens anything by name) and adapts it to [`BlockBackend`]. A
//! read or write that one mapping covers (nearly all) moves its data
//! between the guest's buffers and the mapped file range itself, after
//! imago has looked up or prepared that mapping.

use std::io::{self, IoSlice, IoSliceMut};
use std::sync::RwLock;

use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, Mapping, Storage};
use proto::control::DiskFormat;

use crate::backend::{BlockBackend, BlockStatus, check_range, iov_len, read_only_error};
use crate::image_file::ImageFile;

pub(crate) type Image = FormatAccess<ImageFile>;

/// One layer of a chain, ready for imago.
pub(crate) struct Layer {
    pub file: ImageFile,
    pub format: DiskFormat,
}

/// Builds the imago image for `layers` (top first). Only the top layer
/// may be writable; the others are opened read-only by imago as well as
/// by the file system.
pub(crate) fn open_layers(layers: Vec<Layer>) -> io::Result<Image> {
    let mut below: Option<Image> = None;
    for layer in layers.into_iter().rev() {
        let writable = layer.file.is_writable();
        let image = match layer.format {
            DiskFormat::Raw => {
                if below.is_some() {
                    return Err(io::Error::other("a raw image cannot have a backing file"));
                }
                FormatAccess::new(
                    Raw::builder(layer.file)
                        .write(writable)
                        .open(DenyImplicitOpenGate::default())?,
                )
            }
            DiskFormat::Qcow2 => FormatAccess::new(
                Qcow2::<ImageFile>::builder(layer.file)
                    .backing(below.take())
                    .data_file(None)
                    .write(writable)
                    .open(DenyImplicitOpenGate::default())?,
            ),
        };
        below = Some(image);
    }
    below.ok_or_else(|| io::Error::other("empty image chain"))
}

/// Whether `file` needs aligned I/O, which imago then does with bounce
/// buffers and read-modify-write cycles: the direct path of reads and
/// writes that one mapping covers is only for files that need none
/// (every file today; one opened for direct I/O would not be).
fn needs_alignment(file: &ImageFile) -> bool {
    file.mem_align() > 1 || file.req_align() > 1
}

/// A qcow2 image and its backing chain as a block backend.
pub struct Qcow2Backend {
    /// Reads, writes and zeroing share the image; discarding frees
    /// clusters a concurrent request could still be using, so it takes
    /// the image exclusively (imago's safe `&mut` discard).
    image: RwLock<Image>,
    size: u64,
    writable: bool,
    /// v2 images have no zero clusters.
    has_zero_clusters: bool,
    has_backing: bool,
    cluster_size: u64,
}

impl Qcow2Backend {
    pub(crate) fn new(image: Image, version: u32, cluster_size: u64, has_backing: bool) -> Self {
        let size = image.size();
        let writable = image.inner().writable();
        Qcow2Backend {
            image: RwLock::new(image),
            size,
            writable,
            has_zero_clusters: version >= 3,
            has_backing,
            cluster_size,
        }
    }

    fn image(&self) -> std::sync::RwLockReadGuard<'_, Image> {
        // A panic while the lock was held leaves imago's own state as
        // consistent as any error would; keep serving.
        self.image.read().unwrap_or_else(|p| p.into_inner())
    }

    fn image_mut(&self) -> std::sync::RwLockWriteGuard<'_, Image> {
        self.image.write().unwrap_or_else(|p| p.into_inner())
    }

    fn check_write(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(read_only_error());
        }
        check_range(offset, len, self.size)
    }

    /// Zeroes by writing zero data, for v2 images (no zero clusters).
    fn write_zero_data(&self, image: &Image, mut offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        let zeroes = vec![0u8; len.min(1 << 20) as usize];
        while offset < end {
            let n = (end - offset).min(zeroes.len() as u64) as usize;
            image.write(&zeroes[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }
}

impl BlockBackend for Qcow2Backend {
    fn format(&self) -> DiskFormat {
        DiskFormat::Qcow2
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn is_read_only(&self) -> bool {
        !self.writable
    }

    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<()> {
        let total = iov_len(bufs);
        check_range(offset, total, self.size)?;
        if total == 0 {
            return Ok(());
        }
        let image = self.image();
        // Nearly always the whole read is data of one layer: read
        // straight into `bufs`, as imago's `readv` would read it, without
        // copying the buffer list into imago's vector.
        if let (
            Mapping::Raw {
                storage, offset, ..
            },
            length,
        ) = image.get_mapping(offset, total)?
            && length >= total
            && !needs_alignment(storage)
        {
            return storage.read_vectored_at(bufs, offset);
        }
        // imago's vectors must not hold empty buffers.
        let slices: Vec<IoSliceMut<'_>> = bufs
            .iter_mut()
            .filter(|b| !b.is_empty())
            .map(|b| IoSliceMut::new(b))
            .collect();
        image.readv(IoVectorMut::from(slices), offset)
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        let total = iov_len(bufs);
        self.check_write(offset, total)?;
        if total == 0 {
            return Ok(());
        }
        let image = self.image();
        // Nearly always one mapping takes the whole write (a guest write
        // rarely crosses a cluster): its data goes straight to the file,
        // as imago's `writev` would write it, without the range blocker
        // imago's storage layer sets up for it (it only waits for the
        // read-modify-write cycles of storage that needs aligned I/O,
        // which this path leaves to imago) and without copying the buffer
        // list into imago's vector.
        let mapping = image.prepare_data_mapping(offset, total, true)?;
        if mapping.length() >= total && !needs_alignment(mapping.storage()) {
            if !mapping.storage().is_writable() {
                return Err(read_only_error());
            }
            mapping
                .storage()
                .write_vectored_at(bufs, mapping.offset())?;
            return image.commit_data_mapping(mapping);
        }
        // Across mappings: imago's own loop, from a fresh start (the
        // prepared mapping, dropped, is undone).
        drop(mapping);
        let slices: Vec<IoSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).copied().collect();
        image.writev(IoVector::from(slices), offset)
    }

    fn flush(&self) -> io::Result<()> {
        if !self.writable {
            return Ok(());
        }
        let image = self.image();
        image.flush()?;
        image.sync()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_write(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let mut image = self.image_mut();
        if self.has_zero_clusters {
            return image.discard_to_zero(offset, len);
        }
        // v2 has no zero clusters. Whole clusters can be deallocated when
        // no backing file shows through them; partial clusters at either
        // end (and everything, with a backing file) get zero data.
        let end = offset + len;
        let inner_start = offset.next_multiple_of(self.cluster_size).min(end);
        let inner_end = (end / self.cluster_size * self.cluster_size).max(inner_start);
        if self.has_backing || inner_start == inner_end {
            return self.write_zero_data(&image, offset, len);
        }
        self.write_zero_data(&image, offset, inner_start - offset)?;
        image.discard_to_backing(inner_start, inner_end - inner_start)?;
        self.write_zero_data(&image, inner_end, end - inner_end)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_write(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let image = self.image();
        if self.has_zero_clusters {
            image.write_zeroes(offset, len)
        } else {
            self.write_zero_data(&image, offset, len)
        }
    }

    fn block_status(&self, offset: u64, max_len: u64) -> io::Result<(BlockStatus, u64)> {
        let max_len = max_len.min(self.size.saturating_sub(offset));
        if max_len == 0 {
            return Ok((BlockStatus::Data, 0));
        }
        let image = self.image();
        let (mapping, len) = image.get_mapping(offset, max_len)?;
        let status = match mapping {
            Mapping::Zero { .. } | Mapping::Eof { .. } => BlockStatus::Zero,
            _ => BlockStatus::Data,
        };
        Ok((status, len.clamp(1, max_len)))
    }
}
