//! Where an initial ramdisk goes: as high as the kernel allows, page
//! aligned, in RAM below 4 GiB and clear of the kernel — the placement
//! boot loaders use, which leaves the kernel the most room to decompress
//! and relocate below it.

use std::fs::File;

use proto::ErrorCode;
use vm_memory::{Bytes, GuestAddress};

use super::BootError;
use crate::memory::{GuestMemoryMmap, GuestRam, Layout, RangeKind};

const PAGE: u64 = 0x1000;

/// An initrd file and its size.
pub struct Initrd {
    pub file: File,
    pub size: u64,
}

impl Initrd {
    pub fn new(file: File) -> Result<Initrd, BootError> {
        let size = file
            .metadata()
            .map_err(|e| BootError::new(ErrorCode::INITRD_MISSING, format!("initrd: {e}")))?
            .len();
        Ok(Initrd { file, size })
    }
}

/// The guest range an initrd was placed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub addr: u64,
    pub size: u64,
}

impl Placement {
    /// The last byte's address (what Linux prints in `RAMDISK: [mem …]`).
    pub fn last(&self) -> u64 {
        self.addr + self.size.max(1) - 1
    }
}

/// Chooses the highest page-aligned range of `size` bytes that lies in one
/// RAM range of `layout`, at or above `lowest`, ending at or below
/// `highest + 1` (the kernel's `initrd_addr_max`) and `top_reserve` bytes
/// under the end of RAM below 4 GiB.
pub fn place(
    layout: &Layout,
    size: u64,
    lowest: u64,
    highest: u64,
    top_reserve: u64,
) -> Result<Placement, BootError> {
    let ceiling = highest
        .saturating_add(1)
        .min(layout.low_ram_end().saturating_sub(top_reserve));
    let too_large = || {
        BootError::new(
            ErrorCode::INITRD_TOO_LARGE,
            format!(
                "initrd of {size} bytes does not fit in guest memory between {lowest:#x} and {ceiling:#x}"
            ),
        )
    };
    layout
        .ranges
        .iter()
        .filter(|r| r.kind == RangeKind::Ram)
        .rev()
        .find_map(|r| {
            let end = (r.start + r.size).min(ceiling);
            let addr = end.checked_sub(size)? & !(PAGE - 1);
            (addr >= r.start.max(lowest)).then_some(Placement { addr, size })
        })
        .ok_or_else(too_large)
}

/// Places the initrd as [`place`] does and reads it into guest memory.
pub fn place_and_load(
    ram: &GuestRam,
    initrd: Option<&mut Initrd>,
    lowest: u64,
    highest: u64,
) -> Result<Option<Placement>, BootError> {
    let Some(initrd) = initrd else {
        return Ok(None);
    };
    let placement = place(&ram.layout, initrd.size, lowest, highest, 0)?;
    load(&ram.mem, initrd, placement)?;
    Ok(Some(placement))
}

/// Reads the whole initrd (for firmware that copies it itself).
pub fn read(initrd: &mut Initrd) -> Result<Vec<u8>, BootError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut data = Vec::with_capacity(initrd.size as usize);
    initrd
        .file
        .seek(SeekFrom::Start(0))
        .and_then(|_| initrd.file.read_to_end(&mut data))
        .map_err(|e| {
            BootError::new(
                ErrorCode::INITRD_MISSING,
                format!("reading the initrd: {e}"),
            )
        })?;
    Ok(data)
}

/// Reads the initrd into guest memory at `placement`.
pub fn load(
    mem: &GuestMemoryMmap,
    initrd: &mut Initrd,
    placement: Placement,
) -> Result<(), BootError> {
    use std::io::{Seek, SeekFrom};
    initrd
        .file
        .seek(SeekFrom::Start(0))
        .map_err(|e| BootError::new(ErrorCode::INITRD_MISSING, format!("initrd: {e}")))?;
    mem.read_exact_volatile_from(
        GuestAddress(placement.addr),
        &mut initrd.file,
        placement.size as usize,
    )
    .map_err(|e| {
        BootError::new(
            ErrorCode::INITRD_MISSING,
            format!("reading the initrd: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GIB, MIB};

    #[test]
    fn as_high_as_allowed() {
        let layout = Layout::new(512 * MIB);
        let p = place(&layout, 10 * MIB + 5, 64 * MIB, 0x7fff_ffff, 0).unwrap();
        assert_eq!(p.addr, (512 * MIB - 10 * MIB - 5) & !0xfff);
        assert!(p.addr + p.size <= 512 * MIB);
        assert_eq!(p.last(), p.addr + 10 * MIB + 4);
        // The kernel's limit wins over the end of RAM.
        let p = place(&layout, MIB, 0, 256 * MIB - 1, 0).unwrap();
        assert_eq!(p.addr, 255 * MIB);
        // Reserved space under the top.
        let p = place(&layout, MIB, 0, u64::MAX, MIB).unwrap();
        assert_eq!(p.addr, 510 * MIB);
    }

    #[test]
    fn below_4g_even_with_memory_above() {
        let layout = Layout::new(8 * GIB);
        let p = place(&layout, 100 * MIB, 64 * MIB, u64::MAX, 0).unwrap();
        assert!(p.addr + p.size <= crate::memory::PCI_HOLE_START);
    }

    #[test]
    fn too_large_is_a_clear_error() {
        let layout = Layout::new(128 * MIB);
        let err = place(&layout, 100 * MIB, 64 * MIB, 0x7fff_ffff, 0).unwrap_err();
        assert_eq!(err.code, ErrorCode::INITRD_TOO_LARGE);
        assert!(err.message.contains("does not fit"), "{}", err.message);
    }
}
