//! Where guest buffers are in this process, and the only way devices
//! touch them.
//!
//! Guest memory is mapped into the VMM, so a buffer the driver names by
//! guest address is also a range of host addresses. Touching it is sound
//! only while the mapping lives, and only through raw pointers or the
//! kernel: the guest may change the bytes at any moment, which a Rust
//! reference (`&[u8]`, `&mut [u8]`) promises cannot happen. The types here
//! keep both rules:
//!
//! * [`GuestSlice`] is one range found inside guest memory by
//!   [`RegionCache`] (or [`GuestSlice::of`]), through a [`GuestMemoryMmap`]
//!   borrowed for `'m`: the range stays mapped at least that long.
//! * [`HostViews`] are the ranges of a chain's buffers of one direction, in
//!   order, as the chain walk found them (or checked from guest addresses
//!   by [`HostViews::add_range`]). Its methods copy bytes in and out with
//!   raw-pointer copies, and its [`HostViews::iovecs`] are raw iovecs for
//!   `readv`/`writev`, where the kernel moves the bytes; a disk backend
//!   takes them the same way ([`disk::BlockBackend::read_iovecs_at`]).
//!
//! Their fields are private. Code that has a host address of guest memory
//! from elsewhere makes one with an `unsafe` constructor and keeps its
//! contract.

use std::marker::PhantomData;

use disk::BlockBackend;
use smallvec::SmallVec;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use crate::memory::GuestMemoryMmap;

/// One range of guest memory, where it is in this process. It stays
/// mapped for at least `'m`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GuestSlice<'m> {
    ptr: *mut u8,
    len: usize,
    memory: PhantomData<&'m GuestMemoryMmap>,
}

// SAFETY: a `GuestSlice` is an address range of a mapping that lives for
// `'m` on every thread, as the `&'m GuestMemoryMmap` it was found through
// (which is `Send`) does. Its methods copy through raw pointers only, which
// the guest may race with from any thread anyway.
unsafe impl Send for GuestSlice<'_> {}
// SAFETY: as for `Send`: shared use makes only raw-pointer copies.
unsafe impl Sync for GuestSlice<'_> {}

impl<'m> GuestSlice<'m> {
    /// `[addr, addr + len)` when it lies inside one region of `mem`.
    pub fn of(mem: &'m GuestMemoryMmap, addr: GuestAddress, len: usize) -> Option<GuestSlice<'m>> {
        RegionCache::new(mem).mapped(addr, len)
    }

    /// A range the caller found some other way.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + len` must be mapped, readable and writable, for all of
    /// `'m`, and no Rust reference may cover it while the slice (or a copy
    /// of it) is used: memory that only raw pointers and the kernel touch,
    /// as guest memory is.
    pub unsafe fn from_raw_parts(ptr: *mut u8, len: usize) -> GuestSlice<'m> {
        GuestSlice {
            ptr,
            len,
            memory: PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies bytes `[offset, offset + buf.len())` of the range into
    /// `buf`; false if the range is shorter.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> bool {
        if !fits(offset, buf.len(), self.len) {
            return false;
        }
        // SAFETY: `offset + buf.len() <= len`, so the source lies in the
        // range, mapped for `'m`; no reference covers it (the type's
        // contract), and `buf` is host memory of ours. The guest may change
        // the bytes meanwhile, which only changes what is read.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.wrapping_add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        true
    }

    /// Copies `bytes` into the range from byte `offset` on; false if the
    /// range is shorter.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> bool {
        if !fits(offset, bytes.len(), self.len) {
            return false;
        }
        // SAFETY: as in `read_at`, the other way; the device owns the
        // buffer until it hands it back to the driver.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.wrapping_add(offset),
                bytes.len(),
            )
        };
        true
    }

    fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr.cast(),
            iov_len: self.len,
        }
    }
}

/// Whether `len` bytes from `offset` fit in `size`.
fn fits(offset: usize, len: usize, size: usize) -> bool {
    offset.checked_add(len).is_some_and(|end| end <= size)
}

/// Whether `[addr, addr + len)` is guest memory, as
/// `GuestMemoryBackend::check_range` says, but with a single region
/// lookup for a range inside one region (nearly every buffer); a range
/// that is not (across regions, or not memory at all) gets the general
/// check.
pub fn in_memory(mem: &GuestMemoryMmap, addr: GuestAddress, len: usize) -> bool {
    GuestSlice::of(mem, addr, len).is_some() || GuestMemoryBackend::check_range(mem, addr, len)
}

/// [`GuestSlice::of`] for many lookups in a row, trying first the region
/// the previous lookup found: a driver's buffers nearly all lie in one
/// region, and this skips the search for it.
pub struct RegionCache<'m> {
    mem: &'m GuestMemoryMmap,
    /// The last region found: its guest start, length and host address.
    last: Option<(u64, u64, *mut u8)>,
}

impl<'m> RegionCache<'m> {
    pub fn new(mem: &'m GuestMemoryMmap) -> RegionCache<'m> {
        RegionCache { mem, last: None }
    }

    pub fn memory(&self) -> &'m GuestMemoryMmap {
        self.mem
    }

    /// Where `[addr, addr + len)` is in this process when it lies inside
    /// one region (nearly every buffer); None otherwise (across regions,
    /// or not memory at all).
    pub fn mapped(&mut self, addr: GuestAddress, len: usize) -> Option<GuestSlice<'m>> {
        let (start, size, host) = match self.last {
            Some(last) if addr.0.wrapping_sub(last.0) < last.1 => last,
            _ => {
                let region = self.mem.find_region(addr)?;
                let host = region.get_host_address(MemoryRegionAddress(0)).ok()?;
                *self
                    .last
                    .insert((region.start_addr().0, region.len(), host))
            }
        };
        // `addr` lies in the region: the offset is less than its size.
        let offset = addr.0 - start;
        if len as u64 > size - offset {
            return None;
        }
        // SAFETY: `offset < size`, and `host` maps the region's `size`
        // bytes while `mem` lives, so the sum stays inside that mapping.
        let ptr = unsafe { host.add(offset as usize) };
        // SAFETY: `[ptr, ptr + len)` lies in the region (`offset + len <=
        // size`), which `mem`, borrowed for `'m`, keeps mapped; it is guest
        // memory, which the crate reaches only through these types.
        Some(unsafe { GuestSlice::from_raw_parts(ptr, len) })
    }
}

/// The buffers of one direction of a chain, where they are in this
/// process, in order: what a device reads from or writes into. A buffer
/// across two memory regions is two views; empty buffers have none. Every
/// view stays mapped for `'m`.
#[derive(Clone, Default)]
pub struct HostViews<'m> {
    /// Raw iovecs so that `readv`/`writev` take them as they are.
    iovecs: SmallVec<[libc::iovec; 4]>,
    memory: PhantomData<&'m GuestMemoryMmap>,
}

// SAFETY: as for `GuestSlice`, of which these are a list.
unsafe impl Send for HostViews<'_> {}
// SAFETY: as for `GuestSlice`.
unsafe impl Sync for HostViews<'_> {}

impl PartialEq for HostViews<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for HostViews<'_> {}

impl std::fmt::Debug for HostViews<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iovecs.iter().map(|v| (v.iov_base, v.iov_len)))
            .finish()
    }
}

impl<'m> HostViews<'m> {
    pub fn new() -> HostViews<'m> {
        HostViews::default()
    }

    /// Views from host ranges the caller found some other way.
    ///
    /// # Safety
    ///
    /// Every range must keep the contract of
    /// [`GuestSlice::from_raw_parts`] for `'m`.
    pub unsafe fn from_raw_parts(ranges: impl IntoIterator<Item = (*mut u8, usize)>) -> Self {
        let mut views = HostViews::new();
        for (ptr, len) in ranges {
            // SAFETY: the caller keeps the contract for each range.
            views.push(unsafe { GuestSlice::from_raw_parts(ptr, len) });
        }
        views
    }

    /// The same views, promised to stay mapped for `'n` instead: for views
    /// kept beyond the borrow of guest memory they were found through
    /// (receive buffers held between passes).
    ///
    /// # Safety
    ///
    /// The memory the views lie in must stay mapped for all of `'n`: the
    /// caller keeps (a clone of) the `GuestMemoryMmap` they were found in,
    /// whose regions are unmapped only when the last clone goes, for as
    /// long as it uses them.
    pub unsafe fn extend_lifetime<'n>(self) -> HostViews<'n> {
        HostViews {
            iovecs: self.iovecs,
            memory: PhantomData,
        }
    }

    /// Appends one range.
    pub fn push(&mut self, slice: GuestSlice<'m>) {
        if !slice.is_empty() {
            self.iovecs.push(slice.iovec());
        }
    }

    /// Appends `[addr, addr + len)` of `mem`, checked to be guest memory
    /// (one view per region it spans); false if it is not (then the views
    /// hold part of the range and mean nothing).
    pub fn add_range(&mut self, mem: &'m GuestMemoryMmap, addr: GuestAddress, len: usize) -> bool {
        if len == 0 {
            return true;
        }
        // A buffer inside one region, nearly always: one region lookup.
        if let Some(slice) = GuestSlice::of(mem, addr, len) {
            self.push(slice);
            return true;
        }
        for slice in GuestMemoryBackend::get_slices(mem, addr, len) {
            let Ok(slice) = slice else { return false };
            // SAFETY: `slice` is a part of `mem`'s regions that vm-memory
            // checked and keeps mapped while `mem` (borrowed for `'m`) lives.
            self.push(unsafe {
                GuestSlice::from_raw_parts(slice.ptr_guard_mut().as_ptr(), slice.len())
            });
        }
        true
    }

    /// Appends the views of `other`.
    pub fn extend(&mut self, other: &HostViews<'m>) {
        self.iovecs.extend_from_slice(&other.iovecs);
    }

    pub fn clear(&mut self) {
        self.iovecs.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.iovecs.is_empty()
    }

    /// The number of views.
    pub fn count(&self) -> usize {
        self.iovecs.len()
    }

    /// The first view.
    pub fn first(&self) -> Option<GuestSlice<'m>> {
        self.iter().next()
    }

    pub fn iter(&self) -> impl Iterator<Item = GuestSlice<'m>> + '_ {
        self.iovecs.iter().map(|v| GuestSlice {
            ptr: v.iov_base.cast(),
            len: v.iov_len,
            memory: PhantomData,
        })
    }

    /// The views as iovecs for `readv`/`writev`: each names guest memory
    /// mapped for `'m`, for the kernel to read from or write into.
    pub fn iovecs(&self) -> &[libc::iovec] {
        &self.iovecs
    }

    /// Calls `copy(slice, at, done, n)` for each piece of bytes `[offset,
    /// offset + len)` of the views: `n` bytes from byte `at` of `slice`,
    /// which are bytes `done..done + n` of the range. False if the views
    /// are shorter than the range.
    fn for_each_piece(
        &self,
        mut offset: usize,
        len: usize,
        mut copy: impl FnMut(GuestSlice<'m>, usize, usize, usize) -> bool,
    ) -> bool {
        let mut done = 0;
        for slice in self.iter() {
            if done == len {
                break;
            }
            if offset >= slice.len {
                offset -= slice.len;
                continue;
            }
            let n = (slice.len - offset).min(len - done);
            if !copy(slice, offset, done, n) {
                return false;
            }
            done += n;
            offset = 0;
        }
        done == len
    }

    /// Copies bytes `[offset, offset + buf.len())` of the views into
    /// `buf`; false if they are shorter. For the few header bytes a device
    /// reads per request.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> bool {
        self.for_each_piece(offset, buf.len(), |slice, at, done, n| {
            slice.read_at(at, &mut buf[done..done + n])
        })
    }

    /// Copies `bytes` into the views from byte `offset` on; false if they
    /// are shorter.
    pub fn write_at(&self, offset: usize, bytes: &[u8]) -> bool {
        self.for_each_piece(offset, bytes.len(), |slice, at, done, n| {
            slice.write_at(at, &bytes[done..done + n])
        })
    }

    /// Bytes `[offset, offset + N)` of the views, or None if they are
    /// shorter: [`HostViews::read_at`] for a fixed-size header, which
    /// inside the first view (nearly always) is a load of `N` bytes rather
    /// than a call to `memcpy`.
    pub fn read_array<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        if let Some(first) = self.iovecs.first()
            && fits(offset, N, first.iov_len)
        {
            let at = first.iov_base.cast::<u8>().wrapping_add(offset);
            // SAFETY: the first view is guest memory mapped for `'m` that
            // no reference covers (the type's invariant), and `offset + N`
            // is within it; the guest may change the bytes meanwhile, which
            // only changes what is read.
            return Some(unsafe { at.cast::<[u8; N]>().read_unaligned() });
        }
        let mut out = [0u8; N];
        self.read_at(offset, &mut out).then_some(out)
    }

    /// Writes `bytes` at byte `offset` of the views; false if they are
    /// shorter: [`HostViews::write_at`] for a fixed-size header, a store of
    /// `N` bytes when it falls inside the first view.
    pub fn write_array<const N: usize>(&self, offset: usize, bytes: &[u8; N]) -> bool {
        if let Some(first) = self.iovecs.first()
            && fits(offset, N, first.iov_len)
        {
            let at = first.iov_base.cast::<u8>().wrapping_add(offset);
            // SAFETY: as in `read_array`; the device owns the buffer until
            // it hands it back to the driver.
            unsafe { at.cast::<[u8; N]>().write_unaligned(*bytes) };
            return true;
        }
        self.write_at(offset, bytes)
    }

    /// Fills the views from `backend`, from byte `offset` of the disk on,
    /// without a bounce buffer.
    pub fn read_from(&self, backend: &dyn BlockBackend, offset: u64) -> std::io::Result<()> {
        // SAFETY: the views are guest memory mapped for `'m`, longer than
        // this call, that no Rust reference covers (the type's invariant);
        // the guest may change it meanwhile, which the backend's contract
        // allows.
        unsafe { backend.read_iovecs_at(&self.iovecs, offset) }
    }

    /// Writes the views to `backend` at byte `offset` of the disk.
    pub fn write_to(&self, backend: &dyn BlockBackend, offset: u64) -> std::io::Result<()> {
        // SAFETY: as in `read_from`; the backend only reads the views.
        unsafe { backend.write_iovecs_at(&self.iovecs, offset) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn ranges_across_regions_become_one_view_per_region() {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
        ])
        .unwrap();
        let mut views = HostViews::new();
        assert!(views.add_range(&mem, GuestAddress(0xff0), 0x20));
        assert_eq!(views.count(), 2);
        assert!(views.add_range(&mem, GuestAddress(0x100), 0));
        assert_eq!(views.count(), 2, "an empty buffer has no view");
        assert!(!views.add_range(&mem, GuestAddress(0x1ff0), 0x20));
        assert!(GuestSlice::of(&mem, GuestAddress(0xff0), 0x20).is_none());
        assert!(in_memory(&mem, GuestAddress(0xff0), 0x20));
        assert!(!in_memory(&mem, GuestAddress(0x1ff0), 0x20));
    }

    #[test]
    fn copies_in_and_out_across_views() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mut views = HostViews::new();
        assert!(views.add_range(&mem, GuestAddress(0x1000), 3));
        assert!(views.add_range(&mem, GuestAddress(0x2000), 5));
        assert!(views.write_at(1, b"abcdef"));
        let mut mid = [0u8; 4];
        assert!(views.read_at(2, &mut mid));
        assert_eq!(&mid, b"bcde");
        assert_eq!(views.read_array::<3>(0), Some(*b"\0ab"));
        assert_eq!(views.read_array::<4>(1), Some(*b"abcd"), "across two views");
        assert!(views.write_array(6, b"XY"));
        let mut back = [0u8; 8];
        mem.read_slice(&mut back[..3], GuestAddress(0x1000))
            .unwrap();
        mem.read_slice(&mut back[3..], GuestAddress(0x2000))
            .unwrap();
        assert_eq!(&back, b"\0abcdeXY");
        assert!(!views.write_at(7, b"XY"), "past the end");
        assert!(!views.read_at(5, &mut mid));
        assert_eq!(views.read_array::<2>(7), None);
        let first = views.first().unwrap();
        assert_eq!(first.len(), 3);
        assert!(!first.write_at(2, b"12"));
        assert!(first.write_at(2, b"1"));
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x1002)).unwrap(), b'1');
    }
}
