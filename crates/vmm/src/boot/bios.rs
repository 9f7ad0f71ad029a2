//! Firmware boot (docs/machine.md, "Boot"): the image ends at 4 GiB and its last
//! 384 KiB (or all of it, if smaller) also end at 1 MiB, where a PC's
//! firmware and option ROMs live; the vCPU starts at the reset vector.

use vm_memory::{Bytes, GuestAddress};

use crate::memory::{FOUR_GIB, GuestMemoryMmap, HIGHMEM_START, MAX_BIOS_SIZE};

/// How much of the image's end is copied below 1 MiB.
pub const LOW_COPY_MAX: usize = 384 * 1024;
/// Firmware sizes are whole 64 KiB blocks.
pub const BIOS_GRANULE: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum BiosError {
    /// Not a whole number of 64 KiB blocks, empty, or over 16 MiB.
    BadSize(usize),
    /// The image did not fit the guest's BIOS area.
    DoesNotFit,
}

impl std::fmt::Display for BiosError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BiosError::BadSize(n) => write!(
                f,
                "bios image size {n} is not a multiple of 64 KiB between 64 KiB and 16 MiB"
            ),
            BiosError::DoesNotFit => f.write_str("bios image does not fit the BIOS area"),
        }
    }
}

impl std::error::Error for BiosError {}

/// Checks a firmware image's size.
pub fn validate(image: &[u8]) -> Result<(), BiosError> {
    let len = image.len();
    if len == 0 || !len.is_multiple_of(BIOS_GRANULE) || len as u64 > MAX_BIOS_SIZE {
        return Err(BiosError::BadSize(len));
    }
    Ok(())
}

/// Copies the firmware into guest memory.
pub fn load(mem: &GuestMemoryMmap, image: &[u8]) -> Result<(), BiosError> {
    validate(image)?;
    let top = FOUR_GIB - image.len() as u64;
    mem.write_slice(image, GuestAddress(top))
        .map_err(|_| BiosError::DoesNotFit)?;
    let low = image.len().min(LOW_COPY_MAX);
    mem.write_slice(
        &image[image.len() - low..],
        GuestAddress(HIGHMEM_START - low as u64),
    )
    .map_err(|_| BiosError::DoesNotFit)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestRam, Layout, MIB};

    #[test]
    fn sizes() {
        assert!(validate(&[]).is_err());
        assert!(validate(&[0u8; 1000]).is_err());
        assert!(validate(&vec![0u8; 128 * 1024]).is_ok());
        assert!(validate(&vec![0u8; 17 * 1024 * 1024]).is_err());
    }

    #[test]
    fn both_copies_end_where_they_should() {
        let ram = GuestRam::new(Layout::new(64 * MIB), "bios-test").unwrap();
        let mut image = vec![0u8; 256 * 1024];
        image[0] = 0x11;
        *image.last_mut().unwrap() = 0x22;
        load(&ram.mem, &image).unwrap();
        let at = |a: u64| ram.mem.read_obj::<u8>(GuestAddress(a)).unwrap();
        assert_eq!(at(0xFFFF_FFFF), 0x22);
        assert_eq!(at(0xFFFC_0000), 0x11);
        assert_eq!(at(0xF_FFFF), 0x22);
        assert_eq!(
            at(0xC_0000),
            0x11,
            "a 256 KiB image is copied whole below 1 MiB"
        );

        let big = Layout::with_bios_size(64 * MIB, 1024 * 1024);
        let ram = GuestRam::new(big, "bios-test2").unwrap();
        let mut image = vec![0u8; 1024 * 1024];
        image[1024 * 1024 - LOW_COPY_MAX] = 0x33;
        load(&ram.mem, &image).unwrap();
        assert_eq!(
            ram.mem.read_obj::<u8>(GuestAddress(0xA_0000)).unwrap(),
            0x33
        );
    }
}
