//! `vmctl create` (vmctl(8), create): every message
//! and exit status, and the images it makes, checked with qemu-img.
//!
//! Until main.rs dispatches `create`, the command module is compiled into
//! this test directly and its messages are recorded instead of printed.

#[allow(dead_code)]
#[path = "../src/output.rs"]
mod output;

#[allow(dead_code)]
#[path = "../src/getopt.rs"]
mod getopt;

#[allow(dead_code)]
#[path = "../src/cli.rs"]
mod cli;

#[allow(dead_code)]
#[path = "../src/create.rs"]
mod create;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const USAGE: &str = "usage:\tvmctl [-v] create [-b base | -i disk] [-s size] disk\n";

/// What a run printed on stderr, byte for byte as vmctl would.
#[derive(Default)]
struct Recorded {
    text: String,
}

impl create::Report for Recorded {
    fn warnx(&mut self, message: &str) {
        self.text.push_str(&format!("vmctl: {message}\n"));
    }
    fn plain(&mut self, text: &str) {
        self.text.push_str(text);
    }
    fn usage(&mut self) {
        self.text.push_str(USAGE);
    }
    fn wants_progress(&self) -> bool {
        false
    }
    fn progress(&mut self, _line: &str) {
        unreachable!("no progress bar without a terminal");
    }
}

/// Runs `vmctl create <args>`; returns (exit status, stderr).
fn vmctl_create(args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut out = Recorded::default();
    let status = create::run_with(&args, &mut out);
    (status, out.text)
}

fn expect(args: &[&str], status: i32, stderr: &str) {
    let (got_status, got) = vmctl_create(args);
    assert_eq!(
        (got_status, got.as_str()),
        (status, stderr),
        "vmctl create {args:?}"
    );
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (qemu-utils)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "qemu-img {args:?}:\n{text}");
    text
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    /// The path as a command-line word.
    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A raw file of `size` bytes with data in every other MiB.
fn half_sparse_raw(path: &Path, size: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut data = vec![0u8; size as usize];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (mib, chunk) in data.chunks_mut(1 << 20).enumerate() {
        if mib % 2 == 0 {
            for b in chunk.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
        }
    }
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    for (mib, chunk) in data.chunks(1 << 20).enumerate() {
        if mib % 2 == 0 {
            file.write_all_at(chunk, (mib as u64) << 20).unwrap();
        }
    }
    data
}

#[test]
fn usage_errors() {
    expect(&[], 1, USAGE);
    expect(&["a.img", "b.img"], 1, USAGE);
    expect(
        &["-x", "a.img"],
        1,
        &format!("vmctl: unknown option -- x\n{USAGE}"),
    );
    expect(
        &["-s"],
        1,
        &format!("vmctl: option requires an argument -- s\n{USAGE}"),
    );
    expect(&["-s", "1M"], 1, USAGE);
}

#[test]
fn size_errors_and_rounding() {
    let dir = Dir::new();
    let disk = dir.arg("d.img");
    expect(
        &["-s", "4GB", &disk],
        1,
        "vmctl: invalid disk size: 4GB: Invalid argument\n",
    );
    expect(
        &["-s", "16E", &disk],
        1,
        "vmctl: invalid disk size: 16E: Numerical result out of range\n",
    );
    expect(
        &["-s", "1023K", &disk],
        1,
        "vmctl: disk size must be at least 1MB\n",
    );
    expect(
        &["-s", "-1M", &disk],
        1,
        "vmctl: disk size must be at least 1MB\n",
    );
    assert!(!dir.path("d.img").exists());

    expect(
        &["-s", "1.5M", &disk],
        0,
        "vmctl: disk size rounded to 1.0M\nvmctl: raw imagefile created\n",
    );
    assert_eq!(std::fs::metadata(dir.path("d.img")).unwrap().len(), 1 << 20);
}

#[test]
fn raw_images_are_sparse_private_and_exact() {
    let dir = Dir::new();
    let disk = dir.arg("big.img");
    expect(&["-s", "4.5G", &disk], 0, "vmctl: raw imagefile created\n");
    let meta = std::fs::metadata(dir.path("big.img")).unwrap();
    assert_eq!(meta.len(), 4608 << 20);
    assert_eq!(allocated(&dir.path("big.img")), 0, "not sparse");
    // 0600 before the umask; the umask can only take bits away.
    assert_eq!(meta.permissions().mode() & 0o177, 0);

    // The raw: prefix beats the extension.
    expect(
        &["-s", "2M", &format!("raw:{}", dir.arg("x.qcow2"))],
        0,
        "vmctl: raw imagefile created\n",
    );
    assert_eq!(
        std::fs::metadata(dir.path("x.qcow2")).unwrap().len(),
        2 << 20
    );
}

#[test]
fn qcow2_images_by_extension_or_prefix() {
    testkit::needs!("qemu-img");
    let dir = Dir::new();
    for word in [
        dir.arg("a.qcow2"),
        format!("qcow2:{}", dir.arg("b.img")),
        dir.arg("c.QCOW2"),
    ] {
        expect(&["-s", "3G", &word], 0, "vmctl: qcow2 imagefile created\n");
        let path = word.trim_start_matches("qcow2:");
        let info = qemu_img(&["info", "--output=json", path]);
        assert!(info.contains("\"virtual-size\": 3221225472"), "{info}");
        assert!(info.contains("\"cluster-size\": 65536"), "{info}");
        assert!(info.contains("\"compat\": \"1.1\""), "{info}");
        assert!(info.contains("\"refcount-bits\": 16"), "{info}");
        assert!(info.contains("\"format\": \"qcow2\""), "{info}");
        qemu_img(&["check", path]);
    }
}

#[test]
fn existing_files_are_never_overwritten() {
    let dir = Dir::new();
    std::fs::write(dir.path("taken.img"), b"keep me").unwrap();
    for word in [
        dir.arg("taken.img"),
        format!("qcow2:{}", dir.arg("taken.img")),
    ] {
        expect(
            &["-s", "1M", &word],
            1,
            "vmctl: create imagefile operation failed: File exists\n",
        );
    }
    assert_eq!(std::fs::read(dir.path("taken.img")).unwrap(), b"keep me");
    expect(
        &["-s", "1M", &dir.arg("no/such/dir.img")],
        1,
        "vmctl: create imagefile operation failed: No such file or directory\n",
    );
}

#[test]
fn option_conflicts_and_missing_size() {
    let dir = Dir::new();
    expect(
        &["-b", "base.qcow2", "-i", "in.img", &dir.arg("o.qcow2")],
        1,
        "vmctl: conflicting -b and -i arguments\n",
    );
    expect(
        &["-b", "base.qcow2", &dir.arg("o.img")],
        1,
        "vmctl: base images require qcow2 disk format\n",
    );
    let disk = dir.arg("o.img");
    expect(
        &[&disk],
        1,
        &format!("could not create {disk}: missing size argument\n{USAGE}"),
    );
    assert!(!dir.path("o.img").exists() && !dir.path("o.qcow2").exists());
}

#[test]
fn overlays_on_a_base() {
    testkit::needs!("qemu-img");
    let dir = Dir::new();
    std::fs::create_dir(dir.path("vm")).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        &dir.arg("vm/base.qcow2"),
        "1536K",
    ]);
    std::fs::write(dir.path("vm/base.raw"), vec![0u8; 1 << 20]).unwrap();

    // The base name is stored as given and, when relative, is found next
    // to the overlay (not in the current directory).
    expect(
        &["-b", "base.qcow2", &dir.arg("vm/over.qcow2")],
        0,
        "vmctl: qcow2 imagefile created\n",
    );
    let info = qemu_img(&["info", "--output=json", &dir.arg("vm/over.qcow2")]);
    assert!(
        info.contains("\"backing-filename\": \"base.qcow2\""),
        "{info}"
    );
    assert!(
        info.contains("\"backing-filename-format\": \"qcow2\""),
        "{info}"
    );
    assert!(info.contains("\"virtual-size\": 1572864"), "{info}");
    qemu_img(&["check", &dir.arg("vm/over.qcow2")]);

    expect(
        &["-b", "base.raw", &dir.arg("vm/o2.qcow2")],
        1,
        "vmctl: base image is not a qcow2 file\n",
    );
    // Smaller than the base is refused; larger is an extension (see
    // overlays_larger_than_the_base).
    expect(
        &["-b", "base.qcow2", "-s", "1M", &dir.arg("vm/o3.qcow2")],
        1,
        "vmctl: size cannot be smaller than base image size (1.5M)\n",
    );
    expect(
        &["-b", "missing.qcow2", &dir.arg("vm/o4.qcow2")],
        1,
        "vmctl: create imagefile operation failed: No such file or directory\n",
    );
    for name in ["o2.qcow2", "o3.qcow2", "o4.qcow2"] {
        assert!(
            !dir.path(&format!("vm/{name}")).exists(),
            "{name} left behind"
        );
    }

    // -s equal to the base size is accepted.
    qemu_img(&["create", "-q", "-f", "qcow2", &dir.arg("vm/b2.qcow2"), "2M"]);
    expect(
        &[
            "-b",
            &dir.arg("vm/b2.qcow2"),
            "-s",
            "2M",
            &dir.arg("vm/o5.qcow2"),
        ],
        0,
        "vmctl: qcow2 imagefile created\n",
    );
    let info = qemu_img(&["info", &dir.arg("vm/o5.qcow2")]);
    assert!(
        info.contains(&format!("backing file: {}", dir.arg("vm/b2.qcow2"))),
        "{info}"
    );
}

/// The whole virtual disk of `path` as our disk layer reads it.
fn read_through_our_backend(path: &Path) -> Vec<u8> {
    let backend = disk::ImageChain::open(path, disk::DiskFormat::Qcow2, disk::Access::ReadOnly)
        .and_then(|chain| chain.into_backend())
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut data = vec![0u8; backend.size() as usize];
    backend.read_at(&mut data, 0).unwrap();
    data
}

/// qemu-io commands on a qcow2 image; a failed pattern check fails.
fn qemu_io(path: &Path, commands: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(path.to_str().unwrap());
    let out = Command::new("qemu-io").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-io {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `-b` with a larger `-s` (a Linux extension): the overlay has the size
/// asked for, the base shows through up to its end and zeros follow, and
/// qemu-img agrees; what is written past the base's end lands in the
/// overlay. `-i` with a larger `-s` grows a copy of it the same way.
#[test]
fn overlays_larger_than_the_base() {
    testkit::needs!("qemu-img", "qemu-io");
    let dir = Dir::new();
    let base_data = half_sparse_raw(&dir.path("base.raw"), 3 << 20);
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "qcow2",
        &dir.arg("base.raw"),
        &dir.arg("base.qcow2"),
    ]);
    let base_before = std::fs::read(dir.path("base.qcow2")).unwrap();

    expect(
        &["-b", "base.qcow2", "-s", "6M", &dir.arg("over.qcow2")],
        0,
        "vmctl: qcow2 imagefile created\n",
    );
    let over = dir.path("over.qcow2");
    let info = qemu_img(&["info", "--output=json", &dir.arg("over.qcow2")]);
    assert!(info.contains("\"virtual-size\": 6291456"), "{info}");
    assert!(
        info.contains("\"backing-filename\": \"base.qcow2\""),
        "{info}"
    );
    qemu_img(&["check", &dir.arg("over.qcow2")]);

    // qemu's reading of the overlay, flattened by qemu-img itself.
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "raw",
        &dir.arg("over.qcow2"),
        &dir.arg("flat.raw"),
    ]);
    let flat = std::fs::read(dir.path("flat.raw")).unwrap();
    assert_eq!(flat.len(), 6 << 20);
    assert!(flat[..3 << 20] == base_data[..], "the base shows through");
    assert!(
        flat[3 << 20..].iter().all(|&b| b == 0),
        "zeros past the base"
    );
    qemu_img(&[
        "compare",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        &dir.arg("over.qcow2"),
        &dir.arg("flat.raw"),
    ]);
    assert!(read_through_our_backend(&over) == flat, "our reading");

    // Writes past the base's end (one straddling it) through our backend.
    let mut want = flat.clone();
    {
        let backend =
            disk::ImageChain::open(&over, disk::DiskFormat::Qcow2, disk::Access::ReadWrite)
                .and_then(|chain| chain.into_backend())
                .unwrap();
        for (offset, len, byte) in [
            (4_195_304u64, 70_000usize, 0x5a),
            ((3 << 20) - 512, 1024, 0xa5),
        ] {
            backend.write_at(&vec![byte; len], offset).unwrap();
            want[offset as usize..offset as usize + len].fill(byte);
        }
        backend.flush().unwrap();
    }
    assert!(
        read_through_our_backend(&over) == want,
        "our reading after writes"
    );
    qemu_img(&["check", &dir.arg("over.qcow2")]);
    qemu_io(
        &over,
        &[
            "read -P 0 3146240 1049064",
            "read -P 0x5a 4195304 70000",
            "read -P 0 4265304 2026152",
            "read -P 0xa5 3145216 1024",
        ],
    );
    assert!(
        std::fs::read(dir.path("base.qcow2")).unwrap() == base_before,
        "the base changed"
    );

    // -s smaller than the base.
    expect(
        &["-b", "base.qcow2", "-s", "2M", &dir.arg("small.qcow2")],
        1,
        "vmctl: size cannot be smaller than base image size (3.0M)\n",
    );
    assert!(!dir.path("small.qcow2").exists());

    // -i with a larger -s: a flattened copy with zeros after the overlay.
    expect(
        &[
            "-i",
            &dir.arg("over.qcow2"),
            "-s",
            "10M",
            &dir.arg("big.qcow2"),
        ],
        0,
        "vmctl: qcow2 imagefile created\n",
    );
    let info = qemu_img(&["info", "--output=json", &dir.arg("big.qcow2")]);
    assert!(info.contains("\"virtual-size\": 10485760"), "{info}");
    assert!(!info.contains("backing-filename"), "{info}");
    qemu_img(&["check", &dir.arg("big.qcow2")]);
    qemu_img(&[
        "compare",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        &dir.arg("big.qcow2"),
        &dir.arg("over.qcow2"),
    ]);
    let big = read_through_our_backend(&dir.path("big.qcow2"));
    assert!(big[..6 << 20] == want[..], "the copy");
    assert!(
        big[6 << 20..].iter().all(|&b| b == 0),
        "zeros past the copy"
    );
}

/// Converting keeps data and holes: qemu-img compares the result equal,
/// checks it clean, and the output allocates about what the input holds.
#[test]
fn conversion_both_ways_stays_sparse() {
    testkit::needs!("qemu-img");
    let dir = Dir::new();
    half_sparse_raw(&dir.path("in.raw"), 16 << 20);

    expect(
        &["-i", &dir.arg("in.raw"), &dir.arg("out.qcow2")],
        0,
        "vmctl: qcow2 imagefile created\n",
    );
    qemu_img(&["check", &dir.arg("out.qcow2")]);
    qemu_img(&[
        "compare",
        "-f",
        "qcow2",
        "-F",
        "raw",
        &dir.arg("out.qcow2"),
        &dir.arg("in.raw"),
    ]);
    let qcow2_bytes = std::fs::metadata(dir.path("out.qcow2")).unwrap().len();
    assert!(
        qcow2_bytes < (8 << 20) + (1 << 20),
        "qcow2 output holds {qcow2_bytes} bytes for 8 MiB of data"
    );

    expect(
        &["-i", &dir.arg("out.qcow2"), &dir.arg("back.raw")],
        0,
        "vmctl: raw imagefile created\n",
    );
    qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        &dir.arg("back.raw"),
        &dir.arg("in.raw"),
    ]);
    let raw_allocated = allocated(&dir.path("back.raw"));
    assert!(
        raw_allocated <= (8 << 20) + (64 << 10),
        "raw output allocates {raw_allocated} bytes for 8 MiB of data"
    );
}

#[test]
fn conversion_flattens_a_backing_chain() {
    testkit::needs!("qemu-img", "qemu-io");
    let dir = Dir::new();
    half_sparse_raw(&dir.path("base.raw"), 8 << 20);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        &dir.arg("mid.qcow2"),
    ]);
    Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 7 1000000 3000000",
            &dir.arg("mid.qcow2"),
        ])
        .output()
        .unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        &dir.arg("top.qcow2"),
    ]);
    Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -z 2000000 500000",
            &dir.arg("top.qcow2"),
        ])
        .output()
        .unwrap();

    for out in ["flat.qcow2", "flat.raw"] {
        expect(
            &["-i", &dir.arg("top.qcow2"), &dir.arg(out)],
            0,
            &format!(
                "vmctl: {} imagefile created\n",
                if out.ends_with("raw") { "raw" } else { "qcow2" }
            ),
        );
        let format = if out.ends_with("raw") { "raw" } else { "qcow2" };
        qemu_img(&[
            "compare",
            "-f",
            format,
            "-F",
            "qcow2",
            &dir.arg(out),
            &dir.arg("top.qcow2"),
        ]);
        let info = qemu_img(&["info", &dir.arg(out)]);
        assert!(!info.contains("backing file"), "{info}");
    }
}

#[test]
fn conversion_sizes() {
    testkit::needs!("qemu-img");
    let dir = Dir::new();
    // 1.5 MiB + 512 bytes of input: rounded up to 2 MiB, with a message.
    half_sparse_raw(&dir.path("odd.raw"), (3 << 19) + 512);
    expect(
        &["-i", &dir.arg("odd.raw"), &dir.arg("odd.qcow2")],
        0,
        "vmctl: destination size rounded to 2 megabytes\nvmctl: qcow2 imagefile created\n",
    );
    let info = qemu_img(&["info", "--output=json", &dir.arg("odd.qcow2")]);
    assert!(info.contains("\"virtual-size\": 2097152"), "{info}");

    half_sparse_raw(&dir.path("in.raw"), 3 << 20);
    expect(
        &["-i", &dir.arg("in.raw"), "-s", "8M", &dir.arg("big.raw")],
        0,
        "vmctl: raw imagefile created\n",
    );
    assert_eq!(
        std::fs::metadata(dir.path("big.raw")).unwrap().len(),
        8 << 20
    );
    let (input, output) = (
        std::fs::read(dir.path("in.raw")).unwrap(),
        std::fs::read(dir.path("big.raw")).unwrap(),
    );
    assert_eq!(&output[..3 << 20], &input[..]);
    assert!(output[3 << 20..].iter().all(|&b| b == 0));

    expect(
        &["-i", &dir.arg("in.raw"), "-s", "2M", &dir.arg("small.raw")],
        1,
        "vmctl: size cannot be smaller than input disk size\n",
    );
    assert!(!dir.path("small.raw").exists());
}

#[test]
fn conversion_failures() {
    testkit::needs!("qemu-img");
    let dir = Dir::new();
    let missing = dir.arg("missing.raw");
    expect(
        &["-i", &missing, &dir.arg("o.raw")],
        1,
        &format!(
            "vmctl: {missing}: No such file or directory\nvmctl: failed to open source image file\n"
        ),
    );

    half_sparse_raw(&dir.path("in.raw"), 2 << 20);
    std::fs::write(dir.path("taken.qcow2"), b"x").unwrap();
    let taken = dir.arg("taken.qcow2");
    expect(
        &["-i", &dir.arg("in.raw"), &taken],
        1,
        &format!("vmctl: {taken}: File exists\nvmctl: failed to create destination image file\n"),
    );

    // A disk a running VM holds (locked exclusively) is not read.
    let running = disk::ImageChain::open(
        dir.path("in.raw"),
        disk::DiskFormat::Raw,
        disk::Access::ReadWrite,
    )
    .unwrap();
    let input = dir.arg("in.raw");
    expect(
        &["-i", &input, &dir.arg("copy.raw")],
        1,
        &format!(
            "vmctl: {input}: image is in use by another process (locked)\nvmctl: failed to open source image file\n"
        ),
    );
    drop(running);

    // A source whose data cluster lies past its end: the copy stops with
    // a read error and leaves no destination behind.
    qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        &dir.arg("in.raw"),
        &dir.arg("cut.qcow2"),
    ]);
    let bytes = std::fs::read(dir.path("cut.qcow2")).unwrap();
    std::fs::write(dir.path("cut.qcow2"), &bytes[..bytes.len() - 65536]).unwrap();
    let (status, text) = vmctl_create(&["-i", &dir.arg("cut.qcow2"), &dir.arg("cut-copy.raw")]);
    assert_eq!(status, 1, "{text}");
    assert!(
        text.ends_with("vmctl: failed to read from source\n"),
        "{text}"
    );
    assert!(text.contains("beyond the end of the file"), "{text}");
    assert!(!dir.path("cut-copy.raw").exists());
}

#[test]
fn conversion_onto_a_full_filesystem() {
    testkit::needs!(root);
    let dir = Dir::new();
    half_sparse_raw(&dir.path("in.raw"), 8 << 20);
    let full = dir.path("full");
    std::fs::create_dir(&full).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&full)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a small tmpfs needs root");
    let out = full.join("out.raw");
    let (status, text) = vmctl_create(&["-i", &dir.arg("in.raw"), out.to_str().unwrap()]);
    let _ = Command::new("umount").arg(&full).status();
    assert_eq!(status, 1, "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(
        text.ends_with("vmctl: failed to write to destination\n"),
        "{text}"
    );
}

#[test]
fn progress_bar_lines() {
    let mut bar = create::ProgressBar::default();
    assert_eq!(
        bar.update(0, 200 << 20).unwrap(),
        format!("\r  0% [{}] 0B/200M", " ".repeat(40))
    );
    assert_eq!(
        bar.update(1, 200 << 20),
        None,
        "same percentage drawn twice"
    );
    let half = bar.update(100 << 20, 200 << 20).unwrap();
    assert_eq!(
        half,
        format!("\r 50% [{}{}] 100M/200M", "#".repeat(20), " ".repeat(20))
    );
    assert_eq!(
        bar.update(200 << 20, 200 << 20).unwrap(),
        format!("\r100% [{}] 200M/200M", "#".repeat(40))
    );
}
