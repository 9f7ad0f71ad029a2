//! Guest memory in the stream: runs of non-zero pages, each an address,
//! a page count and the pages themselves. A page left out is zero.
//!
//! Sending never touches what the guest never touched: the memfd's holes
//! (`SEEK_DATA`/`SEEK_HOLE`) are skipped without reading them, which would
//! allocate them; within what is allocated, pages that hold only zeroes are
//! skipped too. The pages go from the guest's mapping to the descriptor in
//! one `writev` per frame, without a copy in between. Receiving reads each
//! run straight into the new guest's memory, after checking that it lies
//! inside guest RAM and above every run before it (so no page is written
//! twice).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::error::StreamError;
use super::format::{FrameReader, FrameWriter, MemoryFrame, Tag};
use crate::memory::{BackedRegion, GuestRam};

pub const PAGE_SIZE: u64 = 4096;
/// Guest address (u64) and page count (u32) before a run's pages.
pub const RUN_HEAD_LEN: usize = 12;
/// Pages per memory frame: a frame is one `writev`, and its checksum is
/// checked before the next frame is read.
pub const FRAME_PAGES: u64 = 1024;
/// Runs per frame, so that a frame's pieces fit one `writev` (each run is
/// a head and a span of pages).
const FRAME_RUNS: usize = 256;

/// The host mapping of a backed region.
fn host_base(ram: &GuestRam, region: &BackedRegion) -> Result<*mut u8, StreamError> {
    let r = ram
        .mem
        .find_region(GuestAddress(region.guest_addr))
        .ok_or_else(|| StreamError::Save("guest memory region missing".into()))?;
    r.get_host_address(MemoryRegionAddress(0))
        .map_err(|e| StreamError::Save(e.to_string()))
}

/// The allocated parts of `[start, end)` of the memfd, by `SEEK_DATA` and
/// `SEEK_HOLE`; the whole range when the file system cannot tell.
fn allocated_extents(fd: &impl AsRawFd, start: u64, end: u64) -> Vec<(u64, u64)> {
    let seek = |offset: u64, whence: i32| -> Option<u64> {
        // SAFETY: lseek on a descriptor we own; no memory is involved.
        let r = unsafe { libc::lseek(fd.as_raw_fd(), offset as libc::off_t, whence) };
        u64::try_from(r).ok()
    };
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let Some(data) = seek(at, libc::SEEK_DATA) else {
            let errno = std::io::Error::last_os_error().raw_os_error();
            if errno != Some(libc::ENXIO) && out.is_empty() && at == start {
                // No hole support: look at everything.
                return vec![(start, end)];
            }
            break;
        };
        if data >= end {
            break;
        }
        let hole = seek(data, libc::SEEK_HOLE).unwrap_or(end).min(end);
        out.push((data, hole));
        at = hole;
    }
    out
}

fn is_zero(page: &[u8]) -> bool {
    page.chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
}

/// A run of non-zero pages: guest address and page count.
type Run = (u64, u64);

/// Maps `len` bytes at `at` into this process in one call, where the host
/// allows it. The guest's accesses need not have mapped its memory into
/// the VMM's page tables; faulting each page in on first read costs more
/// than the read. Only ever asked for allocated parts: populating a hole
/// would allocate it.
fn prefault(at: *const u8, len: usize) {
    // SAFETY: madvise on a range of a live mapping; MADV_POPULATE_READ
    // only faults pages in. Failure (older kernels) is harmless.
    unsafe { libc::madvise(at.cast_mut().cast(), len, libc::MADV_POPULATE_READ) };
}

/// Allocates and maps `len` bytes at `at` (a run about to be read into
/// a new guest's memory) in one call rather than a page fault per page.
/// Failure (older kernels) is harmless: the read faults them in.
fn populate_for_write(at: *mut u8, len: usize) {
    // SAFETY: madvise on a range of a live mapping; MADV_POPULATE_WRITE
    // only faults pages in, as writing them would.
    unsafe { libc::madvise(at.cast(), len, libc::MADV_POPULATE_WRITE) };
}

/// Appends the non-zero pages of `[from, to)` (offsets in the region) to
/// `runs`, extending the last run where they continue it.
fn window_runs(region: &BackedRegion, base: *const u8, from: u64, to: u64, runs: &mut Vec<Run>) {
    let mut offset = from;
    while offset < to {
        // SAFETY: `base` maps the whole region and `offset` plus a page
        // lies inside it. The VM is paused and its devices are quiesced,
        // so nothing writes the page while it is read.
        let page = unsafe {
            std::slice::from_raw_parts(base.wrapping_add(offset as usize), PAGE_SIZE as usize)
        };
        if !is_zero(page) {
            let addr = region.guest_addr + offset;
            match runs.last_mut() {
                Some((a, n)) if *a + *n * PAGE_SIZE == addr => *n += 1,
                _ => runs.push((addr, 1)),
            }
        }
        offset += PAGE_SIZE;
    }
}

/// Writes `runs` of one region as a memory frame, straight from guest
/// memory.
fn write_frame<W: Write>(
    out: &mut FrameWriter<W>,
    region: &BackedRegion,
    base: *const u8,
    runs: &[Run],
) -> Result<u64, StreamError> {
    let heads: Vec<[u8; RUN_HEAD_LEN]> = runs
        .iter()
        .map(|&(addr, count)| {
            let mut h = [0u8; RUN_HEAD_LEN];
            h[..8].copy_from_slice(&addr.to_le_bytes());
            h[8..].copy_from_slice(&(count as u32).to_le_bytes());
            h
        })
        .collect();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(runs.len() * 2);
    for (head, &(addr, count)) in heads.iter().zip(runs) {
        parts.push(head);
        // SAFETY: the run lies inside the region `base` maps (it came
        // from `window_runs`); see there for why it holds still.
        parts.push(unsafe {
            std::slice::from_raw_parts(
                base.wrapping_add((addr - region.guest_addr) as usize),
                (count * PAGE_SIZE) as usize,
            )
        });
    }
    out.frame(Tag::Memory, &parts)?;
    let pages = runs.iter().map(|&(_, n)| n).sum();
    out.count_pages(pages);
    Ok(pages)
}

/// Writes every non-zero page of guest memory; returns the page count.
///
/// Memory goes out a window of [`FRAME_PAGES`] at a time (windows aligned
/// in the region): the window's allocated parts are faulted in, looked at
/// for zero pages, then checksummed and written while they are still in
/// the CPU's caches. A window is one frame (more where its pages are so
/// scattered that its runs exceed a frame's), however many extents of the
/// memfd it spans; a run across a window's end is split there.
pub fn write<W: Write>(out: &mut FrameWriter<W>, ram: &GuestRam) -> Result<u64, StreamError> {
    const WINDOW: u64 = FRAME_PAGES * PAGE_SIZE;
    let mut total = 0;
    for region in &ram.layout.regions {
        let base = host_base(ram, region)?;
        let start = region.file_offset;
        let mut runs: Vec<Run> = Vec::new();
        let mut window = 0;
        // Where the last extent ended: page rounding never reads a page
        // twice.
        let mut done = 0;
        for (from, to) in allocated_extents(&ram.memfd, start, start + region.size) {
            let mut at = (from / PAGE_SIZE * PAGE_SIZE - start).max(done);
            let to = to.div_ceil(PAGE_SIZE) * PAGE_SIZE - start;
            while at < to {
                if at / WINDOW != window {
                    for frame in runs.chunks(FRAME_RUNS) {
                        total += write_frame(out, region, base, frame)?;
                    }
                    runs.clear();
                    window = at / WINDOW;
                }
                let end = to.min((window + 1) * WINDOW);
                // SAFETY: `[at, end)` lies inside the region `base` maps.
                prefault(unsafe { base.add(at as usize) }, (end - at) as usize);
                window_runs(region, base, at, end, &mut runs);
                at = end;
            }
            done = done.max(to);
        }
        for frame in runs.chunks(FRAME_RUNS) {
            total += write_frame(out, region, base, frame)?;
        }
    }
    Ok(total)
}

/// Puts memory frames into a new VM's RAM, checking every run first.
pub struct MemoryLoader<'a> {
    ram: &'a GuestRam,
    /// Runs must start at or above this address.
    next_addr: u64,
    pub pages: u64,
}

impl<'a> MemoryLoader<'a> {
    pub fn new(ram: &'a GuestRam) -> MemoryLoader<'a> {
        MemoryLoader {
            ram,
            next_addr: 0,
            pages: 0,
        }
    }

    /// Where the run `[addr, addr + len)` lives in host memory, if it lies
    /// within one backed region.
    fn host_range(&self, addr: u64, len: u64) -> Result<*mut u8, StreamError> {
        let region = self
            .ram
            .layout
            .regions
            .iter()
            .find(|r| {
                addr >= r.guest_addr
                    && addr
                        .checked_add(len)
                        .is_some_and(|end| end <= r.guest_addr + r.size)
            })
            .ok_or_else(|| {
                StreamError::corrupt(format!(
                    "memory run {addr:#x}+{len:#x} outside guest memory"
                ))
            })?;
        let base = host_base(self.ram, region).map_err(|e| StreamError::Restore(e.to_string()))?;
        // SAFETY: the run lies inside the region `base` maps.
        Ok(unsafe { base.add((addr - region.guest_addr) as usize) })
    }

    /// Reads one memory frame (its head already read) into guest memory.
    pub fn load<R: Read>(&mut self, mut frame: MemoryFrame<'_, R>) -> Result<(), StreamError> {
        let mut pages = 0;
        while frame.left() > 0 {
            let mut head = [0u8; RUN_HEAD_LEN];
            frame.read(&mut head)?;
            let addr = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
            let count = u64::from(u32::from_le_bytes(head[8..].try_into().unwrap_or_default()));
            if !addr.is_multiple_of(PAGE_SIZE) || count == 0 {
                return Err(StreamError::corrupt(format!(
                    "memory run at {addr:#x} of {count} pages"
                )));
            }
            if addr < self.next_addr {
                return Err(StreamError::corrupt(format!(
                    "memory run at {addr:#x} overlaps or precedes an earlier one"
                )));
            }
            let len = count * PAGE_SIZE;
            if len > u64::from(frame.left()) {
                return Err(StreamError::corrupt("memory run overruns its frame"));
            }
            let host = self.host_range(addr, len)?;
            populate_for_write(host, len as usize);
            // SAFETY: `host` maps `len` bytes of the new VM's RAM, which
            // no vCPU or device uses before the restore is complete.
            let dest = unsafe { std::slice::from_raw_parts_mut(host, len as usize) };
            frame.read(dest)?;
            self.next_addr = addr + len;
            pages += count;
        }
        frame.finish(pages)?;
        self.pages += pages;
        Ok(())
    }
}

/// Reads memory frames until another kind of frame's head comes; returns
/// that head.
pub fn read_frames<R: Read>(
    reader: &mut FrameReader<R>,
    loader: &mut MemoryLoader<'_>,
) -> Result<(Tag, [u8; super::format::FRAME_HEAD_LEN]), StreamError> {
    loop {
        let (tag, head) = reader.next_head()?;
        if tag != Tag::Memory {
            return Ok((tag, head));
        }
        loader.load(reader.memory_frame(head))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Layout, MIB};
    use vm_memory::Bytes;

    #[test]
    fn only_non_zero_pages_travel_and_land_where_they_were() {
        let from = GuestRam::new(Layout::new(64 * MIB), "mem-from").unwrap();
        // A written page, a page written back to zeroes, two adjacent
        // pages, a page at the top of RAM and one in the BIOS area.
        let marks = [
            (0x1000u64, 0xaau8),
            (0x10_0000, 0x11),
            (0x10_1000, 0x22),
            (64 * MIB - PAGE_SIZE, 0x33),
            (0xffff_f000, 0x44),
        ];
        for (addr, value) in marks {
            from.mem
                .write_slice(&[value; 16], GuestAddress(addr + 8))
                .unwrap();
        }
        from.mem
            .write_slice(&[0u8; 16], GuestAddress(0x5000))
            .unwrap();
        let mut stream = Vec::new();
        let mut w = FrameWriter::new(&mut stream).unwrap();
        w.frame(Tag::Header, &[b"h"]).unwrap();
        let pages = write(&mut w, &from).unwrap();
        assert_eq!(pages, 5);
        w.finish().unwrap();
        // Five pages and little else.
        assert!(stream.len() < 6 * PAGE_SIZE as usize, "{}", stream.len());

        let to = GuestRam::new(Layout::new(64 * MIB), "mem-to").unwrap();
        let mut input = &stream[..];
        let (raw, _) = super::super::format::read_header_bytes(&mut input).unwrap();
        let (mut reader, _) = FrameReader::resume(&raw, input).unwrap();
        let mut loader = MemoryLoader::new(&to);
        let (tag, _) = read_frames(&mut reader, &mut loader).unwrap();
        assert_eq!(tag, Tag::Trailer);
        assert_eq!(loader.pages, 5);
        for (addr, value) in marks {
            let mut got = [0u8; 16];
            to.mem.read_slice(&mut got, GuestAddress(addr + 8)).unwrap();
            assert_eq!(got, [value; 16], "{addr:#x}");
        }
    }

    #[test]
    fn windows_split_long_runs_and_scattered_pages_into_frames() {
        let from = GuestRam::new(Layout::new(64 * MIB), "mem-from").unwrap();
        // Every other page of the first window: more runs than a frame
        // holds. Then a run of 40 pages across a window's end.
        let mut pages = Vec::new();
        for page in (0..FRAME_PAGES).step_by(2) {
            pages.push(page);
        }
        for page in 2 * FRAME_PAGES - 20..2 * FRAME_PAGES + 20 {
            pages.push(page);
        }
        for &page in &pages {
            from.mem
                .write_slice(
                    &(page + 1).to_le_bytes(),
                    GuestAddress(page * PAGE_SIZE + 24),
                )
                .unwrap();
        }
        let mut stream = Vec::new();
        let mut w = FrameWriter::new(&mut stream).unwrap();
        w.frame(Tag::Header, &[b"h"]).unwrap();
        assert_eq!(write(&mut w, &from).unwrap(), pages.len() as u64);
        w.finish().unwrap();

        let to = GuestRam::new(Layout::new(64 * MIB), "mem-to").unwrap();
        let mut input = &stream[..];
        let (raw, _) = super::super::format::read_header_bytes(&mut input).unwrap();
        let (mut reader, _) = FrameReader::resume(&raw, input).unwrap();
        let mut loader = MemoryLoader::new(&to);
        let mut frames = 0;
        loop {
            let (tag, head) = reader.next_head().unwrap();
            if tag != Tag::Memory {
                assert_eq!(tag, Tag::Trailer);
                break;
            }
            loader.load(reader.memory_frame(head)).unwrap();
            frames += 1;
        }
        // 512 runs: two frames; the long run: one per window it touches.
        assert_eq!(frames, 4);
        assert_eq!(loader.pages, pages.len() as u64);
        for page in 0..3 * FRAME_PAGES {
            let mut got = [0u8; 8];
            to.mem
                .read_slice(&mut got, GuestAddress(page * PAGE_SIZE + 24))
                .unwrap();
            let want = if pages.contains(&page) { page + 1 } else { 0 };
            assert_eq!(u64::from_le_bytes(got), want, "page {page}");
        }
    }
}
