//! ISO 9660 images made with `xorriso -as mkisofs` (Debian's `xorriso`),
//! from files given by the test.

use std::path::Path;
use std::process::Command;

use crate::tmp::TempDir;

/// Bytes of an ISO 9660 logical block.
pub const BLOCK: usize = 2048;
/// The primary volume descriptor's block (ECMA-119 §8.4).
pub const PRIMARY_VOLUME_DESCRIPTOR: usize = 16;

/// Runs `command`, panicking with its output if it fails.
pub fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (scripts/install-deps.sh installs it)"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes an ISO image of the directory `root` to `out`, with the
/// volume label `label` and `extra` mkisofs options (boot records and
/// the like).
pub fn from_directory(root: &Path, out: &Path, label: &str, extra: &[&str]) {
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", label])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(root));
}

/// Writes an ISO image holding `files` (name, contents) in its root
/// directory to `out`.
pub fn with_files(out: &Path, label: &str, files: &[(&str, &[u8])]) {
    let dir = TempDir::new("iso");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).expect("iso root directory");
    for (name, contents) in files {
        std::fs::write(root.join(name), contents).expect("file for the iso");
    }
    from_directory(&root, out, label, &[]);
}
