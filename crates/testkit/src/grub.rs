//! Bootable images with GRUB (Debian's `grub-pc-bin`), built without
//! loop devices or mounts (docs/test-guests.md, "Building without privileges"). No `normal` module:
//! the embedded configuration runs in GRUB's rescue parser, which keeps
//! the core small (a BIOS on a software-emulated CPU reads it at a few
//! KB/s).
//!
//! * Disks ([`boot_disk`], [`scripted_disk`]): `grub-mkimage` makes the
//!   core image, `sfdisk` writes the partition table, `mkfs.fat -C` and
//!   `mcopy` make a FAT16 partition holding `grub.cfg`, and `dd` puts
//!   `boot.img`, the core image and the partition into place.
//! * The CD ([`boot_cd`]): `grub-mkimage -O i386-pc-eltorito` makes a
//!   no-emulation El Torito boot image and `xorriso` an ISO with it and
//!   `grub.cfg`.
//!
//! The standard images print a line, `cat` their `grub.cfg`, print
//! another line and halt. Menu images ([`menu_disk`], [`menu_cd`]) have
//! the `normal` module instead and run their `grub.cfg` as GRUB's menu.
//!
//! Images are cached across test processes (nextest runs each test in its
//! own): built once under a lock into a directory named after a hash of
//! the recipe and the GRUB version, then shared. Callers copy a disk
//! image before booting it, since a running VM locks its disks; the CD
//! is only read, so VMs may share it.

use std::hash::{Hash, Hasher};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::iso::run;

/// What the disk's embedded configuration prints before anything else.
pub const STARTED: &str = "grub-test: embedded config started";
/// The line of the disk's `grub.cfg` the embedded configuration `cat`s.
pub const CONFIG_LINE: &str = "grub-test: this line comes from grub.cfg on the FAT partition";
/// What it prints at the end, before halting.
pub const DONE: &str = "grub-test: embedded config done";

/// The same three lines of the CD.
pub const CD_STARTED: &str = "grub-cd-test: embedded config started";
pub const CD_CONFIG_LINE: &str = "grub-cd-test: this line comes from grub.cfg on the CD";
pub const CD_DONE: &str = "grub-cd-test: embedded config done";

const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
const DISK_MIB: u64 = 8;
const PARTITION_START_SECTOR: u64 = 2048;
/// Bump when the recipe changes in a way the hash cannot see.
const RECIPE_VERSION: u32 = 2;

/// The medium an image is made for.
#[derive(Debug, Clone, Copy, Hash)]
enum Medium {
    /// A raw disk with GRUB in the MBR gap and a FAT16 partition.
    Disk,
    /// An ISO 9660 image with GRUB's El Torito boot image.
    Cd,
}

impl Medium {
    /// `grub-mkimage`'s output format, prefix and modules.
    fn mkimage(self) -> (&'static str, &'static str, &'static [&'static str]) {
        match self {
            Medium::Disk => (
                "i386-pc",
                "(hd0,msdos1)/",
                &[
                    "biosdisk",
                    "part_msdos",
                    "fat",
                    "serial",
                    "terminal",
                    "cat",
                    "echo",
                    "halt",
                ],
            ),
            Medium::Cd => (
                "i386-pc-eltorito",
                "(cd)/",
                &[
                    "biosdisk", "iso9660", "serial", "terminal", "cat", "echo", "halt",
                ],
            ),
        }
    }

    fn config_line(self) -> &'static str {
        match self {
            Medium::Disk => CONFIG_LINE,
            Medium::Cd => CD_CONFIG_LINE,
        }
    }

    fn grub_cfg(self) -> String {
        format!("# read by the test through `cat`\n{}\n", self.config_line())
    }

    fn image_name(self) -> &'static str {
        match self {
            Medium::Disk => "disk.img",
            Medium::Cd => "cd.iso",
        }
    }
}

/// What goes into a GRUB image: the medium, the embedded configuration,
/// modules beyond the medium's base set, and the `grub.cfg` on it.
#[derive(Hash)]
struct Recipe {
    medium: Medium,
    embedded: String,
    extra_modules: Vec<String>,
    grub_cfg: String,
}

impl Recipe {
    /// An image whose embedded configuration sets up the serial console,
    /// then runs `script`.
    fn new(medium: Medium, script: &str, extra_modules: &[&str]) -> Recipe {
        Recipe {
            medium,
            embedded: format!(
                "serial --unit=0 --speed=115200\n\
                 terminal_input serial\n\
                 terminal_output serial\n\
                 {script}\n"
            ),
            extra_modules: extra_modules.iter().map(|m| m.to_string()).collect(),
            grub_cfg: medium.grub_cfg(),
        }
    }

    /// Makes GRUB's image with the configuration embedded at `out` (`dir`
    /// holds the configuration file meanwhile).
    fn make_image(&self, dir: &Path, out: &Path) {
        let (format, prefix, modules) = self.medium.mkimage();
        let embed = dir.join("embed.cfg");
        std::fs::write(&embed, &self.embedded).expect("write embedded config");
        run(Command::new("grub-mkimage")
            .args(["-O", format, "-p", prefix, "-c"])
            .arg(&embed)
            .arg("-o")
            .arg(out)
            .args(modules)
            .args(&self.extra_modules));
        let _ = std::fs::remove_file(embed);
    }
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

fn build_disk(dir: &Path, recipe: &Recipe) {
    let core = dir.join("core.img");
    recipe.make_image(dir, &core);
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
    for leftover in [core, part, cfg] {
        let _ = std::fs::remove_file(leftover);
    }
}

fn build_cd(dir: &Path, recipe: &Recipe) {
    let root = dir.join("root");
    let boot = root.join("boot/grub");
    std::fs::create_dir_all(&boot).expect("iso tree");
    recipe.make_image(dir, &boot.join("eltorito.img"));
    std::fs::write(root.join("grub.cfg"), &recipe.grub_cfg).expect("write grub.cfg");
    crate::iso::from_directory(
        &root,
        &dir.join("cd.iso"),
        "GRUBCD",
        &[
            "-b",
            "boot/grub/eltorito.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
        ],
    );
    let _ = std::fs::remove_dir_all(root);
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

/// The image of `recipe` in the fixture cache, built unless an earlier
/// test (process) built it already.
fn cached(recipe: &Recipe) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        RECIPE_VERSION,
        recipe,
        recipe.medium.mkimage(),
        recipe.medium.grub_cfg(),
        grub_version(),
    )
        .hash(&mut hasher);
    let root = std::env::temp_dir().join("vmd-fixtures");
    std::fs::create_dir_all(&root).expect("fixture directory");
    let name = recipe.medium.image_name();
    let stem = name.split('.').next().unwrap_or(name);
    let dir = root.join(format!("grub-{stem}-{:016x}", hasher.finish()));
    let image = dir.join(name);
    if image.exists() {
        return image;
    }
    let _lock = FileLock::take(&root.join(format!("grub-{stem}.lock")));
    if image.exists() {
        return image;
    }
    let staging = root.join(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("staging directory");
    match recipe.medium {
        Medium::Disk => build_disk(&staging, recipe),
        Medium::Cd => build_cd(&staging, recipe),
    }
    std::fs::rename(&staging, &dir).expect("publish fixture");
    image
}

/// The standard configuration of `medium`: print, `cat` its `grub.cfg`
/// (with `ls` first on the disk, to show GRUB's view of the disks),
/// print, halt.
fn standard(medium: Medium) -> Recipe {
    let script = match medium {
        Medium::Disk => format!("echo {STARTED}\nls\ncat (hd0,msdos1)/grub.cfg\necho {DONE}\nhalt"),
        Medium::Cd => format!("echo {CD_STARTED}\ncat (cd)/grub.cfg\necho {CD_DONE}\nhalt"),
    };
    Recipe::new(medium, &script, &[])
}

/// The cached 8 MiB raw disk image: MBR with GRUB's boot code, the core
/// image from sector 1, and a FAT16 partition with `grub.cfg`. Do not
/// boot it in place; copy it with [`boot_disk_copy`].
pub fn boot_disk() -> PathBuf {
    cached(&standard(Medium::Disk))
}

/// A private copy of the boot disk at `dest`.
pub fn boot_disk_copy(dest: &Path) -> PathBuf {
    std::fs::copy(boot_disk(), dest).expect("copy boot disk");
    dest.to_path_buf()
}

/// A GRUB disk like [`boot_disk`] whose embedded configuration is
/// `script` (run in GRUB's rescue parser after the serial console is set
/// up), with `extra_modules` added to the core (e.g. `sleep`, `reboot`).
pub fn scripted_disk(script: &str, extra_modules: &[&str]) -> PathBuf {
    cached(&Recipe::new(Medium::Disk, script, extra_modules))
}

/// A GRUB disk that boots into GRUB's normal mode and its menu: the core
/// holds the `normal` module (and `extra_modules`), so after setting up
/// the serial console GRUB reads `grub_cfg` from the FAT partition as its
/// configuration. The core is some 60 KB larger than a scripted one,
/// which a BIOS on a software CPU reads in about 20 s more.
pub fn menu_disk(grub_cfg: &str, extra_modules: &[&str]) -> PathBuf {
    cached(&menu(Medium::Disk, grub_cfg, extra_modules))
}

/// An ISO like [`boot_cd`] that boots into GRUB's normal mode and runs
/// `grub_cfg` (in the ISO's root) as its menu, as [`menu_disk`] does. VMs
/// only read it, so it may be booted in place.
pub fn menu_cd(grub_cfg: &str, extra_modules: &[&str]) -> PathBuf {
    cached(&menu(Medium::Cd, grub_cfg, extra_modules))
}

fn menu(medium: Medium, grub_cfg: &str, extra_modules: &[&str]) -> Recipe {
    let mut modules = vec!["normal"];
    modules.extend_from_slice(extra_modules);
    let mut recipe = Recipe::new(medium, "", &modules);
    recipe.grub_cfg = grub_cfg.to_string();
    recipe
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

/// The cached ISO image: GRUB's El Torito boot image (no emulation) and
/// `grub.cfg` in the root directory. VMs only read it, so it may be
/// booted in place.
pub fn boot_cd() -> PathBuf {
    cached(&standard(Medium::Cd))
}
