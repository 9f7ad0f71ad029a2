//! Bootable disk images with GRUB (Debian's `grub-pc-bin`), built without
//! loop devices or mounts (shared/test-payloads.md): `grub-mkimage` makes
//! a minimal core image with an embedded configuration, `sfdisk` writes
//! the partition table, `mkfs.fat -C` and `mcopy` make a FAT16 partition
//! holding `grub.cfg`, and `dd` puts `boot.img`, the core image and the
//! partition into place. No `normal` module: the embedded configuration
//! runs in GRUB's rescue parser, which keeps the core small (a BIOS on a
//! software-emulated CPU reads it at a few KB/s).
//!
//! Images are cached across test processes (nextest runs each test in its
//! own): built once under a lock into a directory named after a hash of
//! the recipe and the GRUB version, then shared. Callers copy an image
//! before booting it, since a running VM locks its disks.

use std::hash::{Hash, Hasher};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the embedded configuration prints before anything else.
pub const STARTED: &str = "grub-test: embedded config started";
/// The line of `grub.cfg` the embedded configuration `cat`s.
pub const CONFIG_LINE: &str = "grub-test: this line comes from grub.cfg on the FAT partition";
/// What it prints at the end, before halting.
pub const DONE: &str = "grub-test: embedded config done";

const MODULES: &[&str] = &[
    "biosdisk",
    "part_msdos",
    "fat",
    "serial",
    "terminal",
    "cat",
    "echo",
    "halt",
];
const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
const DISK_MIB: u64 = 8;
const PARTITION_START_SECTOR: u64 = 2048;
/// Bump when the recipe changes in a way the hash cannot see.
const RECIPE_VERSION: u32 = 1;

fn embedded_config() -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial\n\
         terminal_output serial\n\
         echo {STARTED}\n\
         ls\n\
         cat (hd0,msdos1)/grub.cfg\n\
         echo {DONE}\n\
         halt\n"
    )
}

fn grub_cfg() -> String {
    format!("# read by the test through `cat`\n{CONFIG_LINE}\n")
}

fn run(command: &mut Command) {
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

fn grub_version() -> String {
    Command::new("grub-mkimage")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Writes `src` into `dest` at byte `offset` without truncating.
fn dd(src: &Path, dest: &Path, offset: u64, max_len: Option<usize>) {
    use std::io::{Seek, SeekFrom, Write};
    let mut data = std::fs::read(src).expect("read image part");
    if let Some(max) = max_len {
        data.truncate(max);
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dest)
        .expect("open disk image");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&data).expect("write image part");
}

fn build(dir: &Path, recipe: &Recipe) {
    let core = dir.join("core.img");
    let embed = dir.join("embed.cfg");
    std::fs::write(&embed, &recipe.embedded).expect("write embedded config");
    run(Command::new("grub-mkimage")
        .args(["-O", "i386-pc", "-p", "(hd0,msdos1)/", "-c"])
        .arg(&embed)
        .arg("-o")
        .arg(&core)
        .args(MODULES)
        .args(&recipe.extra_modules));
    let core_len = std::fs::metadata(&core).expect("core image").len();
    assert!(
        core_len < (PARTITION_START_SECTOR - 1) * 512,
        "core image too big"
    );

    let disk = dir.join("disk.img");
    let file = std::fs::File::create(&disk).expect("create disk image");
    file.set_len(DISK_MIB << 20).expect("size disk image");
    drop(file);
    let table = format!("label: dos\nstart={PARTITION_START_SECTOR}, type=6, bootable\n");
    let mut sfdisk = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "-q"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sfdisk (fdisk package)");
    {
        use std::io::Write;
        let mut stdin = sfdisk.stdin.take().expect("sfdisk stdin");
        stdin.write_all(table.as_bytes()).expect("partition table");
    }
    assert!(sfdisk.wait().expect("sfdisk").success(), "sfdisk failed");

    let part = dir.join("part.img");
    let part_kib = ((DISK_MIB << 20) - PARTITION_START_SECTOR * 512) / 1024;
    run(Command::new("mkfs.fat")
        // One sector per cluster: 7 MiB is too small for FAT16 otherwise.
        .args(["-F", "16", "-s", "1", "-n", "GRUBTEST", "-C"])
        .arg(&part)
        .arg(part_kib.to_string()));
    let cfg = dir.join("grub.cfg");
    std::fs::write(&cfg, &recipe.grub_cfg).expect("write grub.cfg");
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&part)
        .arg(&cfg)
        .arg("::grub.cfg"));
    dd(&part, &disk, PARTITION_START_SECTOR * 512, None);
    // boot.img's code, not its (empty) partition table.
    dd(&Path::new(GRUB_DIR).join("boot.img"), &disk, 0, Some(440));
    dd(&core, &disk, 512, None);
    for leftover in [core, embed, part, cfg] {
        let _ = std::fs::remove_file(leftover);
    }
}

/// Holds an exclusive `flock` on a file while alive.
struct FileLock(#[allow(dead_code)] std::fs::File);

impl FileLock {
    fn take(path: &Path) -> FileLock {
        let f = std::fs::File::create(path).expect("create lock file");
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        FileLock(f)
    }
}

/// What goes into a GRUB disk: the embedded configuration, modules
/// beyond the base set, and the `grub.cfg` on the FAT partition.
struct Recipe {
    embedded: String,
    extra_modules: Vec<String>,
    grub_cfg: String,
}

/// The embedded configuration that puts GRUB's console on COM1, then
/// runs `script`.
fn on_serial(script: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial\n\
         terminal_output serial\n\
         {script}\n"
    )
}

/// The cached 8 MiB raw disk image: MBR with GRUB's boot code, the core
/// image from sector 1, and a FAT16 partition with `grub.cfg`. Do not
/// boot it in place; copy it with [`boot_disk_copy`].
pub fn boot_disk() -> PathBuf {
    cached_disk(&Recipe {
        embedded: embedded_config(),
        extra_modules: Vec::new(),
        grub_cfg: grub_cfg(),
    })
}

/// A GRUB disk like [`boot_disk`] whose embedded configuration is
/// `script` (run in GRUB's rescue parser after the serial console is set
/// up), with `extra_modules` added to the core (e.g. `sleep`, `reboot`).
pub fn scripted_disk(script: &str, extra_modules: &[&str]) -> PathBuf {
    cached_disk(&Recipe {
        embedded: on_serial(script),
        extra_modules: extra_modules.iter().map(|m| m.to_string()).collect(),
        grub_cfg: grub_cfg(),
    })
}

/// A GRUB disk that boots into GRUB's normal mode and its menu: the core
/// holds the `normal` module (and `extra_modules`), so after setting up
/// the serial console GRUB reads `grub_cfg` from the FAT partition as its
/// configuration. The core is some 60 KB larger than a scripted one,
/// which a BIOS on a software CPU reads in about 20 s more.
pub fn menu_disk(grub_cfg: &str, extra_modules: &[&str]) -> PathBuf {
    let mut modules = vec!["normal".to_string()];
    modules.extend(extra_modules.iter().map(|m| m.to_string()));
    cached_disk(&Recipe {
        embedded: on_serial(""),
        extra_modules: modules,
        grub_cfg: grub_cfg.to_string(),
    })
}

/// A private copy of a menu disk at `dest`.
pub fn menu_disk_copy(grub_cfg: &str, extra_modules: &[&str], dest: &Path) -> PathBuf {
    std::fs::copy(menu_disk(grub_cfg, extra_modules), dest).expect("copy boot disk");
    dest.to_path_buf()
}

/// A private copy of a scripted disk at `dest`.
pub fn scripted_disk_copy(script: &str, extra_modules: &[&str], dest: &Path) -> PathBuf {
    std::fs::copy(scripted_disk(script, extra_modules), dest).expect("copy boot disk");
    dest.to_path_buf()
}

fn cached_disk(recipe: &Recipe) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        RECIPE_VERSION,
        &recipe.embedded,
        &recipe.extra_modules,
        &recipe.grub_cfg,
        MODULES,
        grub_version(),
    )
        .hash(&mut hasher);
    let root = std::env::temp_dir().join("vmd-fixtures");
    std::fs::create_dir_all(&root).expect("fixture directory");
    let dir = root.join(format!("grub-disk-{:016x}", hasher.finish()));
    let image = dir.join("disk.img");
    if image.exists() {
        return image;
    }
    let _lock = FileLock::take(&root.join("grub-disk.lock"));
    if image.exists() {
        return image;
    }
    let staging = root.join(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("staging directory");
    build(&staging, recipe);
    std::fs::rename(&staging, &dir).expect("publish fixture");
    image
}

/// A private copy of the boot disk at `dest`.
pub fn boot_disk_copy(dest: &Path) -> PathBuf {
    std::fs::copy(boot_disk(), dest).expect("copy boot disk");
    dest.to_path_buf()
}
