//! qcow2 images (v2 and v3, with backing chains) through imago.
//!
//! imago does all qcow2 work: mapping lookups, cluster allocation, copy on
//! write from backing images, compressed cluster reads, metadata caching
//! and write ordering. This module builds an imago image from files that
//! are already open (every backing layer supplied explicitly, so imago
//! never opens anything by name) and adapts it to [`BlockBackend`]. Reads
//! and writes go mapping by mapping as imago's own loops go, and move the
//! data of each between the caller's iovecs and the mapped file range
//! themselves, after imago has looked up or prepared that mapping: imago
//! takes buffers only as Rust slices, which must not be formed over memory
//! a guest shares. Compressed clusters are read by imago into a buffer of
//! ours and copied out.

use std::borrow::Cow;
use std::io;
use std::sync::RwLock;

use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, Mapping, Storage};
use proto::control::DiskFormat;

use crate::backend::{BlockBackend, BlockStatus, check_range, read_only_error};
use crate::image_file::{ImageFile, iovecs_len};

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

/// Bytes `[skip, skip + len)` of the memory `iovecs` name, as iovecs: the
/// list itself when that is all of it (nearly always), else a new list.
fn window(iovecs: &[libc::iovec], skip: u64, len: u64) -> Cow<'_, [libc::iovec]> {
    if skip == 0 && len == iovecs_len(iovecs) {
        return Cow::Borrowed(iovecs);
    }
    let (mut skip, mut len) = (skip as usize, len as usize);
    let mut out = Vec::new();
    for v in iovecs {
        if len == 0 {
            break;
        }
        if skip >= v.iov_len {
            skip -= v.iov_len;
            continue;
        }
        let n = (v.iov_len - skip).min(len);
        out.push(libc::iovec {
            iov_base: v.iov_base.cast::<u8>().wrapping_add(skip).cast(),
            iov_len: n,
        });
        len -= n;
        skip = 0;
    }
    Cow::Owned(out)
}

/// Zeroes the memory `iovecs` name.
///
/// # Safety
///
/// It is mapped and writable, and no Rust reference covers it but one
/// lent for the request.
unsafe fn zero(iovecs: &[libc::iovec]) {
    for v in iovecs {
        // SAFETY: writable for `iov_len` bytes, by the caller's promise.
        unsafe { std::ptr::write_bytes(v.iov_base.cast::<u8>(), 0, v.iov_len) };
    }
}

/// Copies `bytes` (as long as the iovecs together) into the memory
/// `iovecs` name.
///
/// # Safety
///
/// As for [`zero`].
unsafe fn copy_into(iovecs: &[libc::iovec], bytes: &[u8]) {
    let mut at = 0;
    for v in iovecs {
        let n = v.iov_len.min(bytes.len() - at);
        // SAFETY: the destination is writable for `iov_len >= n` bytes by
        // the caller's promise, and no reference of ours covers it; the
        // source is `n` bytes of `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes[at..].as_ptr(), v.iov_base.cast::<u8>(), n) };
        at += n;
    }
}

/// The bytes of the memory `iovecs` name, copied.
///
/// # Safety
///
/// It is mapped and readable, and nothing writes it through a Rust
/// reference.
unsafe fn copy_out(iovecs: &[libc::iovec]) -> Vec<u8> {
    let mut out = vec![0u8; iovecs_len(iovecs) as usize];
    let mut at = 0;
    for v in iovecs {
        let to = &mut out[at..at + v.iov_len];
        // SAFETY: the source is readable for `iov_len` bytes by the
        // caller's promise and is not ours; `to` is as long.
        unsafe {
            std::ptr::copy_nonoverlapping(v.iov_base.cast::<u8>(), to.as_mut_ptr(), to.len())
        };
        at += v.iov_len;
    }
    out
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

    unsafe fn read_iovecs_at(&self, iovecs: &[libc::iovec], offset: u64) -> io::Result<()> {
        let total = iovecs_len(iovecs);
        check_range(offset, total, self.size)?;
        let image = self.image();
        // One piece per mapping, as imago's `readv` goes; nearly always
        // one mapping covers the whole read, whose data is then read
        // straight into `iovecs`.
        let mut done = 0;
        while done < total {
            let (mapping, length) = image.get_mapping(offset + done, total - done)?;
            let length = length.min(total - done);
            if length == 0 {
                // The end of the image (imago reads it as zeroes).
                // SAFETY: the caller keeps `iovecs` writable.
                unsafe { zero(&window(iovecs, done, total - done)) };
                return Ok(());
            }
            let part = window(iovecs, done, length);
            match mapping {
                Mapping::Raw {
                    storage, offset, ..
                } if !needs_alignment(storage) => {
                    // SAFETY: `part` names parts of `iovecs`, which the
                    // caller keeps as the file's read needs them.
                    unsafe { storage.read_iovecs_at(&part, offset) }?
                }
                // SAFETY: the caller keeps `iovecs` writable.
                Mapping::Zero { .. } => unsafe { zero(&part) },
                _ => {
                    // Compressed data, or a file that needs aligned I/O:
                    // imago reads it into a buffer of ours.
                    let mut buf = vec![0u8; length as usize];
                    image.read(&mut buf[..], offset + done)?;
                    // SAFETY: the caller keeps `iovecs` writable.
                    unsafe { copy_into(&part, &buf) };
                }
            }
            done += length;
        }
        Ok(())
    }

    unsafe fn write_iovecs_at(&self, iovecs: &[libc::iovec], offset: u64) -> io::Result<()> {
        let total = iovecs_len(iovecs);
        self.check_write(offset, total)?;
        let image = self.image();
        // imago's `writev` loop: prepare the mapping of the next piece,
        // write its data, commit the mapping. Nearly always one mapping
        // takes the whole write (a guest write rarely crosses a cluster).
        // The data goes straight from `iovecs` to the file, without the
        // range blocker imago's storage layer sets up for it (it only
        // waits for the read-modify-write cycles of storage that needs
        // aligned I/O, which is left to imago).
        let mut done = 0;
        while done < total {
            let mapping = image.prepare_data_mapping(offset + done, total - done, true)?;
            if needs_alignment(mapping.storage()) {
                // imago's own loop for the rest, from a copy (the
                // prepared mapping, dropped, is undone).
                drop(mapping);
                // SAFETY: the caller keeps `iovecs` readable.
                let rest = unsafe { copy_out(&window(iovecs, done, total - done)) };
                return image.write(&rest[..], offset + done);
            }
            if !mapping.storage().is_writable() {
                return Err(read_only_error());
            }
            let length = mapping.length().min(total - done);
            let part = window(iovecs, done, length);
            // SAFETY: `part` names parts of `iovecs`, which the caller
            // keeps readable.
            unsafe { mapping.storage().write_iovecs_at(&part, mapping.offset()) }?;
            image.commit_data_mapping(mapping)?;
            done += length;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::create_qcow2_with_cluster_size;

    const CLUSTER: u64 = 4096;

    /// Iovecs over `memory` cut at `cuts` (offsets into it), with an empty
    /// iovec at the first cut.
    fn iovecs(memory: *mut u8, len: usize, cuts: &[usize]) -> Vec<libc::iovec> {
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain([len].iter()) {
            if out.is_empty() {
                out.push(libc::iovec {
                    iov_base: memory.wrapping_add(start).cast(),
                    iov_len: 0,
                });
            }
            out.push(libc::iovec {
                iov_base: memory.wrapping_add(start).cast(),
                iov_len: cut - start,
            });
            start = cut;
        }
        out
    }

    #[test]
    fn iovecs_across_data_and_unallocated_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            create_qcow2_with_cluster_size(&dir.path().join("a.qcow2"), 16 * CLUSTER, 4096)
                .unwrap();
        let data: Vec<u8> = (0..CLUSTER).map(|i| (i * 7 + 1) as u8).collect();
        backend.write_at(&data, CLUSTER).unwrap();

        // From the middle of cluster 0 (unallocated) through cluster 1
        // (data) into cluster 2 (unallocated): three mappings, in iovecs
        // cut elsewhere. The memory is reached through raw pointers only
        // while the backend fills it, as guest memory is.
        let (start, len) = (CLUSTER / 2, 2 * CLUSTER);
        let mut memory = vec![0xeeu8; len as usize];
        let base = memory.as_mut_ptr();
        let list = iovecs(base, len as usize, &[100, 3000, 6000]);
        // SAFETY: `list` names `memory`, which nothing touches until the
        // call returns.
        unsafe { backend.read_iovecs_at(&list, start) }.unwrap();
        let mut expected = vec![0u8; len as usize];
        expected[(CLUSTER / 2) as usize..(CLUSTER / 2 + CLUSTER) as usize].copy_from_slice(&data);
        assert!(memory == expected, "read across three mappings");

        // A write across clusters 3 to 5, none allocated before: one
        // prepared mapping per cluster.
        let pattern: Vec<u8> = (0..2 * CLUSTER + 10).map(|i| (i % 251) as u8).collect();
        let mut source = pattern.clone();
        let list = iovecs(source.as_mut_ptr(), source.len(), &[1, 4097, 4200]);
        // SAFETY: `list` names `source`, which nothing writes meanwhile.
        unsafe { backend.write_iovecs_at(&list, 3 * CLUSTER + 5) }.unwrap();
        let mut back = vec![0u8; pattern.len()];
        backend.read_at(&mut back, 3 * CLUSTER + 5).unwrap();
        assert!(back == pattern, "written across three clusters");
        let mut before = [1u8; 5];
        backend.read_at(&mut before, 3 * CLUSTER).unwrap();
        assert_eq!(before, [0; 5]);

        // Past the end of the disk: refused, nothing touched.
        let mut one = [9u8; 2];
        let list = iovecs(one.as_mut_ptr(), 2, &[]);
        // SAFETY: `list` names `one`.
        let result = unsafe { backend.read_iovecs_at(&list, 16 * CLUSTER - 1) };
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(one, [9, 9]);
    }
}
