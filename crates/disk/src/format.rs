//! Which format a disk argument names (vmctl(8), create).

use std::io::Read;
use std::path::Path;

use proto::control::DiskFormat;
// Both live in proto so that vm.conf's parser can use them without this
// crate's image library; re-exported so `disk::format::*` keeps working.
pub use proto::control::{QCOW2_MAGIC, split_format_prefix};

/// Determines the format of a disk argument, first rule that applies:
/// an explicit prefix; the qcow2 magic in an existing file; a `.raw` or
/// `.qcow2` extension (any case); otherwise raw. Returns the path without
/// its prefix.
pub fn detect_format(arg: &str) -> (String, DiskFormat) {
    let (path, prefixed) = split_format_prefix(arg);
    if let Some(format) = prefixed {
        return (path.to_string(), format);
    }
    if has_qcow2_magic(Path::new(path)) {
        return (path.to_string(), DiskFormat::Qcow2);
    }
    let format = match path.rsplit_once('.') {
        Some((_, ext)) if ext.eq_ignore_ascii_case("qcow2") => DiskFormat::Qcow2,
        _ => DiskFormat::Raw,
    };
    (path.to_string(), format)
}

/// Only images are looked into, opened without blocking: a FIFO named as
/// a disk must not hang vmctl (vmd then refuses it with what it is).
fn has_qcow2_magic(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    crate::open::open_checked(path, false, crate::open::Expect::Image)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == QCOW2_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_magic_and_extensions() {
        assert_eq!(
            detect_format("raw:/x.qcow2"),
            ("/x.qcow2".into(), DiskFormat::Raw)
        );
        assert_eq!(
            detect_format("qcow2:/x.img"),
            ("/x.img".into(), DiskFormat::Qcow2)
        );
        assert_eq!(detect_format("/nonexistent/a.QCOW2").1, DiskFormat::Qcow2);
        assert_eq!(detect_format("/nonexistent/a.raw").1, DiskFormat::Raw);
        assert_eq!(detect_format("/nonexistent/a.img").1, DiskFormat::Raw);
        assert_eq!(detect_format("/nonexistent/noext").1, DiskFormat::Raw);

        let dir = std::env::temp_dir().join(format!("disk-format-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("image.img");
        std::fs::write(&image, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(detect_format(image.to_str().unwrap()).1, DiskFormat::Qcow2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
