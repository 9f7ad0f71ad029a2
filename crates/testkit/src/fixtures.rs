//! Boot payloads built from Debian packages, shared by every test that
//! needs them: built once by `scripts/linux-fixture.sh` into
//! `$VMD_FIXTURES` (default /var/tmp/vmd-fixtures), which serialises
//! concurrent builders with a lock.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where fixtures live.
pub fn root() -> PathBuf {
    std::env::var_os("VMD_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/vmd-fixtures"))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name)
}

/// Debian's cloud kernel: the bzImage, the vmlinux inside it, and a
/// busybox initrd.
pub struct Linux {
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
}

impl Linux {
    /// Builds the fixture if no test has yet (needs `apt-get download`).
    pub fn get() -> Linux {
        let dir = root().join("linux");
        let out = Command::new(script("linux-fixture.sh"))
            .arg(&dir)
            .output()
            .expect("run scripts/linux-fixture.sh");
        assert!(
            out.status.success(),
            "scripts/linux-fixture.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Linux {
            bzimage: dir.join("bzImage"),
            vmlinux: dir.join("vmlinux"),
            initrd: dir.join("initrd.img"),
        }
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("fixture paths are UTF-8")
}
