//! What `-b` (or the default firmware) hands the VM, and how it is loaded.

pub mod bios;

/// The kinds of boot image, recognised from their contents (interface.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A firmware image placed below 4 GiB.
    Bios,
    /// A Linux bzImage (boot protocol header at 0x1f1, "HdrS" at 0x202).
    BzImage,
    /// An ELF kernel.
    Elf,
    /// A gzip-compressed kernel.
    Gzip,
}

impl ImageKind {
    pub fn detect(image: &[u8]) -> ImageKind {
        if image.starts_with(b"\x7fELF") {
            ImageKind::Elf
        } else if image.starts_with(&[0x1f, 0x8b]) {
            ImageKind::Gzip
        } else if image.len() > 0x206 && &image[0x202..0x206] == b"HdrS" {
            ImageKind::BzImage
        } else {
            ImageKind::Bios
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection() {
        assert_eq!(ImageKind::detect(b"\x7fELF\x02\x01"), ImageKind::Elf);
        assert_eq!(ImageKind::detect(&[0x1f, 0x8b, 8]), ImageKind::Gzip);
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(ImageKind::detect(&bz), ImageKind::BzImage);
        assert_eq!(ImageKind::detect(&[0u8; 65536]), ImageKind::Bios);
    }
}
