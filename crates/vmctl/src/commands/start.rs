//! `start [-cL] [-B device] [-b path] [-d disk] [-i count] [-m size]
//! [-n switch] [-r path] [-t name] id | name` (vmctl(8), start), plus the
//! Linux extensions `-p count`, `--cmdline STRING` and `--initrd PATH`
//! (docs/direct-boot.md), `--user-data FILE` and `--ssh-key FILE`
//! (docs/cloud-init.md).
//!
//! Parsing builds the [`StartRequest`] and applies every check vmctl makes
//! itself; [`run`] opens the boot image, asks vmd, and reports the result
//! (or attaches the console with `-c`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use proto::control::{BootDevice, DiskSpec, NicKind, Request, Response, StartRequest, VmRef};
use proto::error::Failed;
use proto::names::{MAX_NAME_LEN, NameError, validate_vm_name};

use crate::args::{SizeKind, parse_count, parse_id, parse_size};
use crate::cli::{self, CommandId, KEY_CMDLINE, KEY_INITRD, KEY_SSH_KEY, KEY_USER_DATA};
use crate::commands::console;
use crate::daemon::{Daemon, error_text};
use crate::failure::{CmdResult, Failure};
use crate::getopt::Opt;
use crate::output;

/// `VM_MAX_DISKS_PER_VM`.
pub const MAX_DISKS: usize = 4;
/// `VM_MAX_NICS_PER_VM`.
pub const MAX_NICS: usize = 4;
/// `VMM_MAX_VCPUS_PER_VM`.
pub const MAX_VCPUS: i64 = 64;

/// A parsed and checked `start` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    pub request: StartRequest,
    /// `-c`: attach the console instead of printing the success message.
    pub console: bool,
}

/// The options as given, before the interface list is assembled.
#[derive(Default)]
struct Options {
    console: bool,
    boot_device: Option<BootDevice>,
    kernel: Option<String>,
    disks: Vec<DiskSpec>,
    interface_count: Option<usize>,
    /// `-L` and `-n` in command-line order.
    nics: Vec<NicKind>,
    memory: Option<u64>,
    vcpus: Option<u32>,
    cdrom: Option<String>,
    instance_of: Option<String>,
    cmdline: Option<String>,
    initrd: Option<String>,
    /// `--user-data` and `--ssh-key`: the files as named.
    user_data: Option<String>,
    ssh_key: Option<String>,
}

/// realpath(3); the error is the strerror text.
fn canonical(path: &str) -> Result<String, String> {
    std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|err| error_text(&err))
}

fn once<T>(slot: &Option<T>, what: &str) -> Result<(), Failure> {
    match slot {
        Some(_) => Err(Failure::msg(format!("{what} specified multiple times"))),
        None => Ok(()),
    }
}

impl Options {
    /// Applies one option; `warnings` receives the non-fatal messages in
    /// the order they arise.
    fn apply(&mut self, key: char, value: String, warnings: &mut Vec<String>) -> CmdResult {
        match key {
            'B' => {
                once(&self.boot_device, "boot device")?;
                let device = BootDevice::parse(&value)
                    .ok_or_else(|| Failure::msg(format!("unknown boot device {value}")))?;
                self.boot_device = Some(device);
            }
            'b' => {
                once(&self.kernel, "boot image")?;
                let path = canonical(&value)
                    .map_err(|err| Failure::msg(format!("invalid boot image path: {err}")))?;
                self.kernel = Some(path);
            }
            'd' => {
                let (path, format) = disk::detect_format(&value);
                let path = canonical(&path)
                    .map_err(|err| Failure::msg(format!("invalid disk path: {path}: {err}")))?;
                self.disks.push(DiskSpec { path, format });
            }
            'i' => {
                once(&self.interface_count, "interfaces")?;
                let count = parse_count(&value, 1, i64::from(i32::MAX)).map_err(|err| {
                    Failure::msgs([
                        format!("count is {}: {value}", err.text()),
                        format!("invalid interface count: {value}"),
                    ])
                })?;
                self.interface_count = Some(count as usize);
            }
            'L' => self.nics.push(NicKind::Local),
            'm' => {
                once(&self.memory, "memory")?;
                let size = parse_size(&value, SizeKind::Memory)?;
                warnings.extend(size.rounding_warning);
                self.memory = Some(size.bytes);
            }
            'n' => {
                if value.len() > MAX_NAME_LEN {
                    return Err(Failure::msg("interface name too long"));
                }
                self.nics.push(NicKind::Switch(value));
            }
            'p' => {
                once(&self.vcpus, "cpu count")?;
                let count = parse_count(&value, 1, MAX_VCPUS).map_err(|err| {
                    Failure::msgs([
                        format!("count is {}: {value}", err.text()),
                        format!("invalid cpu count: {value}"),
                    ])
                })?;
                self.vcpus = Some(count as u32);
            }
            'r' => {
                once(&self.cdrom, "iso image")?;
                let path = canonical(&value).map_err(|err| {
                    Failure::msg(format!("invalid iso image path: {value}: {err}"))
                })?;
                self.cdrom = Some(path);
            }
            't' => {
                once(&self.instance_of, "instance")?;
                if value.len() > MAX_NAME_LEN {
                    return Err(Failure::msgs([
                        "instance vm name too long".to_string(),
                        format!("invalid name: {value}"),
                    ]));
                }
                self.instance_of = Some(value);
            }
            KEY_CMDLINE => {
                once(&self.cmdline, "kernel command line")?;
                self.cmdline = Some(value);
            }
            KEY_INITRD => {
                once(&self.initrd, "initrd")?;
                let path = canonical(&value)
                    .map_err(|err| Failure::msg(format!("invalid initrd path: {value}: {err}")))?;
                self.initrd = Some(path);
            }
            KEY_USER_DATA => {
                once(&self.user_data, "user data")?;
                self.user_data = Some(value);
            }
            KEY_SSH_KEY => {
                once(&self.ssh_key, "ssh key")?;
                self.ssh_key = Some(value);
            }
            _ => return Err(Failure::Usage(CommandId::Start)),
        }
        Ok(())
    }

    /// The guest's NICs in order: `-L`/`-n` as given, then plain ones up
    /// to the `-i` count.
    fn interfaces(&self) -> Vec<NicKind> {
        let mut nics = self.nics.clone();
        // Past the limit the exact number no longer matters (vmctl or vmd
        // refuses the list), so a huge `-i` does not build a huge list.
        let wanted = self.interface_count.unwrap_or(0).min(MAX_NICS + 1);
        if nics.len() < wanted {
            nics.resize(wanted, NicKind::Plain);
        }
        nics
    }

    /// Whether anything describing a VM was given (the checks for a new
    /// VM apply then).
    fn describes_vm(&self) -> bool {
        self.memory.is_some()
            || self.interface_count.is_some()
            || !self.nics.is_empty()
            || !self.disks.is_empty()
            || self.kernel.is_some()
            || self.cdrom.is_some()
            || self.vcpus.is_some()
            || self.cmdline.is_some()
            || self.initrd.is_some()
            || self.user_data.is_some()
            || self.ssh_key.is_some()
    }

    /// Reads and checks `--user-data` and `--ssh-key` with the caller's
    /// own rights: vmd gets their contents, never their names.
    fn cloud_init(&self) -> Result<(Option<String>, Option<String>), Failure> {
        let user_data = self
            .user_data
            .as_deref()
            .map(|path| {
                read_guest_file(
                    path,
                    "user data",
                    cidata::MAX_USER_DATA,
                    cidata::check_user_data,
                )
            })
            .transpose()?;
        let ssh_key = self
            .ssh_key
            .as_deref()
            .map(|path| {
                read_guest_file(path, "ssh key", cidata::MAX_SSH_KEY, cidata::check_ssh_key)
            })
            .transpose()?;
        match cidata::Seed::new(user_data, ssh_key) {
            Ok(seed) => Ok((seed.user_data, seed.ssh_key)),
            Err(cause) => Err(Failure::msg(format!(
                "user data {}: {cause}",
                self.user_data.as_deref().unwrap_or_default()
            ))),
        }
    }
}

/// Reads a file for the guest: opened without blocking (a FIFO is
/// refused, not waited on), a regular file, at most `limit` bytes, and
/// its contents checked. Errors read `<what> <path>: <why>`.
fn read_guest_file(
    path: &str,
    what: &str,
    limit: usize,
    check: fn(Vec<u8>) -> Result<String, String>,
) -> Result<String, Failure> {
    let fail = |why: String| Failure::msg(format!("{what} {path}: {why}"));
    let mut file = disk::open_checked(Path::new(path), false, disk::Expect::RegularFile)
        .map_err(|err| fail(error_text(&err)))?;
    let bytes = cidata::read_bounded(&mut file, limit)
        .map_err(|err| fail(error_text(&err)))?
        .ok_or_else(|| fail(format!("larger than {limit} bytes")))?;
    check(bytes).map_err(fail)
}

/// Parses and checks a `start` command line. `warnings` receives the
/// messages to print even when the command goes on (or fails later).
pub fn parse(args: &[String], warnings: &mut Vec<String>) -> Result<StartPlan, Failure> {
    let mut getopt = cli::command(CommandId::Start).getopt(args);
    let mut options = Options::default();
    for opt in getopt.by_ref() {
        match opt {
            Opt::Found('c', _) => options.console = true,
            Opt::Found('L', _) => options.apply('L', String::new(), warnings)?,
            Opt::Found(key, Some(value)) => options.apply(key, value, warnings)?,
            _ => return Err(Failure::Usage(CommandId::Start)),
        }
    }
    let [word] = getopt.operands() else {
        return Err(Failure::Usage(CommandId::Start));
    };
    let target = parse_id(Some(word), false)?;

    let nics = options.interfaces();
    let creating = options.describes_vm() && options.instance_of.is_none();
    if creating {
        if nics.len() > MAX_NICS {
            return Err(Failure::msg("too many network interfaces"));
        }
        let diskless = options.kernel.is_none() && options.disks.is_empty();
        if options.disks.len() > MAX_DISKS {
            return Err(Failure::msg("too many disks"));
        }
        if diskless && options.cdrom.is_none() {
            return Err(Failure::msg("no kernel or disk/cdrom specified"));
        }
        if diskless {
            warnings.push("starting without disks".into());
        }
        if options.kernel.is_none() && nics.is_empty() {
            warnings.push("starting without network interfaces".into());
        }
    }
    if let VmRef::Name(name) = &target {
        match validate_vm_name(name) {
            Ok(()) => {}
            Err(NameError::TooLong) => return Err(Failure::msg("vm name too long")),
            Err(NameError::Invalid) => return Err(Failure::msg("invalid VM name")),
        }
    }
    let (user_data, ssh_key) = options.cloud_init()?;

    Ok(StartPlan {
        console: options.console,
        request: StartRequest {
            target: Some(target),
            memory: options.memory,
            vcpus: options.vcpus,
            kernel: options.kernel,
            cmdline: options.cmdline,
            initrd: options.initrd,
            disks: options.disks,
            cdrom: options.cdrom,
            nics,
            boot_device: options.boot_device,
            instance_of: options.instance_of,
            user_data,
            ssh_key,
        },
    })
}

/// Opens the boot image with the caller's own rights; vmd receives the
/// open descriptor, so a user can boot only what they can read.
/// The open does not block: a FIFO or device named as the kernel is
/// refused, not waited on.
pub fn open_kernel(path: &str) -> Result<File, Failure> {
    disk::open_checked(Path::new(path), false, disk::Expect::RegularFile).map_err(|err| {
        if err.kind() == std::io::ErrorKind::InvalidInput {
            Failure::msg("kernel must be a regular file")
        } else {
            Failure::msg(format!("cannot open kernel '{path}': {}", error_text(&err)))
        }
    })
}

/// The message for a failed start (also used by `receive`): OpenBSD's
/// for the code, then the cause vmd found.
pub fn start_failure(failed: &Failed) -> Failure {
    let code = failed.code;
    let message = match code.vmd_message() {
        Some(text) => text.to_string(),
        None => format!("start vm command failed: {}", code.strerror()),
    };
    Failure::with_cause(message, &failed.cause)
}

pub fn run(args: &[String]) -> CmdResult {
    let mut warnings = Vec::new();
    let parsed = parse(args, &mut warnings);
    warnings.iter().for_each(output::warnx);
    let plan = parsed?;

    let kernel = plan
        .request
        .kernel
        .as_deref()
        .map(open_kernel)
        .transpose()?;
    let fds: Vec<_> = kernel.iter().map(|file| file.as_raw_fd()).collect();
    let daemon = Daemon::connect()?;
    daemon.request_with_fds(&Request::Start(plan.request), &fds)?;
    drop(kernel);

    match daemon.reply()? {
        Response::Start(Ok(started)) if plan.console => {
            drop(daemon);
            console::session(VmRef::Id(started.id), &started.tty)
        }
        Response::Start(Ok(started)) => {
            output::warnx(format_args!(
                "started vm {} successfully, tty {}",
                started.id, started.tty
            ));
            Ok(())
        }
        Response::Start(Err(failed)) => Err(start_failure(&failed)),
        _ => Err(Failure::unexpected_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::control::DiskFormat;
    use proto::error::ErrorCode;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// A scratch directory with an image file and a kernel file.
    struct Scratch {
        dir: std::path::PathBuf,
    }

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("vmctl-start-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let dir = std::fs::canonicalize(dir).unwrap();
            std::fs::write(dir.join("disk.img"), b"").unwrap();
            std::fs::write(dir.join("disk2.qcow2"), b"QFI\xfb\0\0\0\x03").unwrap();
            std::fs::write(dir.join("bsd"), b"kernel").unwrap();
            std::fs::write(dir.join("cd.iso"), b"iso").unwrap();
            Scratch { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.join(name).to_string_lossy().into_owned()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn parse_ok(args: &str) -> (StartPlan, Vec<String>) {
        let mut warnings = Vec::new();
        let plan = parse(&words(args), &mut warnings).unwrap();
        (plan, warnings)
    }

    fn parse_err(args: &str) -> (Failure, Vec<String>) {
        let mut warnings = Vec::new();
        let failure = parse(&words(args), &mut warnings).unwrap_err();
        (failure, warnings)
    }

    fn message(args: &str) -> Vec<String> {
        match parse_err(args).0 {
            Failure::Messages(lines) => lines,
            other => panic!("{args}: expected messages, got {other:?}"),
        }
    }

    #[test]
    fn bare_start_of_an_existing_vm() {
        let (plan, warnings) = parse_ok("web");
        assert!(warnings.is_empty());
        assert!(!plan.console);
        assert_eq!(
            plan.request,
            StartRequest {
                target: Some(VmRef::Name("web".into())),
                ..Default::default()
            }
        );
        let (plan, _) = parse_ok("-c 3");
        assert!(plan.console);
        assert_eq!(plan.request.target, Some(VmRef::Id(3)));
    }

    #[test]
    fn full_request() {
        let s = Scratch::new("full");
        let args = format!(
            "-m 1G -d {} -d raw:{} -r {} -b {} -B net -p 2 -n uplink -L \
             --cmdline console=ttyS0 --initrd {} -c vm1",
            s.path("disk.img"),
            s.path("disk2.qcow2"),
            s.path("cd.iso"),
            s.path("bsd"),
            s.path("bsd"),
        );
        let (plan, warnings) = parse_ok(&args);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(plan.console);
        assert_eq!(
            plan.request,
            StartRequest {
                target: Some(VmRef::Name("vm1".into())),
                memory: Some(1 << 30),
                vcpus: Some(2),
                kernel: Some(s.path("bsd")),
                cmdline: Some("console=ttyS0".into()),
                initrd: Some(s.path("bsd")),
                disks: vec![
                    DiskSpec {
                        path: s.path("disk.img"),
                        format: DiskFormat::Raw
                    },
                    DiskSpec {
                        path: s.path("disk2.qcow2"),
                        format: DiskFormat::Raw
                    },
                ],
                cdrom: Some(s.path("cd.iso")),
                nics: vec![NicKind::Switch("uplink".into()), NicKind::Local],
                boot_device: Some(BootDevice::Net),
                instance_of: None,
                user_data: None,
                ssh_key: None,
            }
        );
    }

    #[test]
    fn disk_format_and_canonical_paths() {
        let s = Scratch::new("canon");
        let relative = format!(
            "{}/../{}/disk2.qcow2",
            s.path(""),
            s.dir.file_name().unwrap().to_string_lossy()
        );
        let (plan, _) = parse_ok(&format!("-d {relative} -b {}/./bsd vm", s.path("")));
        assert_eq!(
            plan.request.disks,
            [DiskSpec {
                path: s.path("disk2.qcow2"),
                format: DiskFormat::Qcow2
            }]
        );
        assert_eq!(plan.request.kernel, Some(s.path("bsd")));
    }

    #[test]
    fn interface_lists() {
        let s = Scratch::new("nics");
        let kernel = s.path("bsd");
        let nics = |opts: &str| parse_ok(&format!("-b {kernel} {opts} vm")).0.request.nics;
        use NicKind::*;
        assert_eq!(nics("-L -i 1"), [Local]);
        assert_eq!(nics("-L -i 2"), [Local, Plain]);
        assert_eq!(nics("-i 3"), [Plain, Plain, Plain]);
        assert_eq!(
            nics("-n a -L -n b"),
            [Switch("a".into()), Local, Switch("b".into())]
        );
        assert_eq!(
            nics("-i 1 -n a -n b"),
            [Switch("a".into()), Switch("b".into())]
        );
        assert_eq!(nics(""), []);
        assert_eq!(
            message(&format!("-b {kernel} -i 5 vm")),
            ["too many network interfaces"]
        );
        assert_eq!(
            message(&format!("-b {kernel} -L -L -L -n x -L vm")),
            ["too many network interfaces"]
        );
        // Instances are checked by vmd.
        assert_eq!(parse_ok("-t base -i 5 vm").0.request.nics.len(), 5);
        assert_eq!(parse_ok("-t base -i 2147483647 vm").0.request.nics.len(), 5);
        assert_eq!(
            message(&format!("-b {kernel} -i 2147483647 vm")),
            ["too many network interfaces"]
        );
    }

    #[test]
    fn client_checks_for_a_new_vm() {
        let s = Scratch::new("checks");
        assert_eq!(message("-m 1G vm"), ["no kernel or disk/cdrom specified"]);
        assert_eq!(message("-L vm"), ["no kernel or disk/cdrom specified"]);
        assert_eq!(message("-p 2 vm"), ["no kernel or disk/cdrom specified"]);

        let (_, warnings) = parse_ok(&format!("-r {} vm", s.path("cd.iso")));
        assert_eq!(
            warnings,
            [
                "starting without disks",
                "starting without network interfaces"
            ]
        );
        let (_, warnings) = parse_ok(&format!("-d {} vm", s.path("disk.img")));
        assert_eq!(warnings, ["starting without network interfaces"]);
        let (_, warnings) = parse_ok(&format!("-d {} -L vm", s.path("disk.img")));
        assert!(warnings.is_empty());
        let (_, warnings) = parse_ok(&format!("-b {} vm", s.path("bsd")));
        assert!(warnings.is_empty());

        let disk = s.path("disk.img");
        let five = format!("-d {disk} -d {disk} -d {disk} -d {disk} -d {disk} vm");
        assert_eq!(message(&five), ["too many disks"]);
        let four = format!("-d {disk} -d {disk} -d {disk} -d {disk} -L vm");
        assert_eq!(parse_ok(&four).0.request.disks.len(), 4);

        // An instance needs nothing else.
        let (plan, warnings) = parse_ok("-t base -m 1G inst");
        assert!(warnings.is_empty());
        assert_eq!(plan.request.instance_of.as_deref(), Some("base"));
    }

    #[test]
    fn option_errors() {
        let s = Scratch::new("errors");
        assert_eq!(message("-B floppy vm"), ["unknown boot device floppy"]);
        assert_eq!(
            message("-B disk -B cdrom vm"),
            ["boot device specified multiple times"]
        );
        assert_eq!(
            message("-b /nonexistent/bsd vm"),
            ["invalid boot image path: No such file or directory"]
        );
        let kernel = s.path("bsd");
        assert_eq!(
            message(&format!("-b {kernel} -b {kernel} vm")),
            ["boot image specified multiple times"]
        );
        assert_eq!(
            message("-d /nonexistent/a.img vm"),
            ["invalid disk path: /nonexistent/a.img: No such file or directory"]
        );
        assert_eq!(
            message("-d qcow2:/nonexistent/a.img vm"),
            ["invalid disk path: /nonexistent/a.img: No such file or directory"]
        );
        assert_eq!(
            message("-i 0 vm"),
            ["count is too small: 0", "invalid interface count: 0"]
        );
        assert_eq!(
            message("-i 2147483648 vm"),
            [
                "count is too large: 2147483648",
                "invalid interface count: 2147483648"
            ]
        );
        assert_eq!(
            message("-i two vm"),
            ["count is invalid: two", "invalid interface count: two"]
        );
        assert_eq!(
            message("-i 1 -i 2 vm"),
            ["interfaces specified multiple times"]
        );
        assert_eq!(
            message("-m 1G -m 2G vm"),
            ["memory specified multiple times"]
        );
        assert_eq!(
            message("-m 4GB vm"),
            ["invalid memory size: 4GB: Invalid argument"]
        );
        assert_eq!(message("-m 512K vm"), ["memory size must be at least 1MB"]);
        assert_eq!(
            message("-m 200G vm"),
            ["memory size too large (limit is 128G)"]
        );
        let long = "s".repeat(64);
        assert_eq!(
            message(&format!("-n {long} vm")),
            ["interface name too long"]
        );
        assert_eq!(
            parse_ok(&format!("-b {kernel} -n {} vm", &long[1..]))
                .0
                .request
                .nics,
            [NicKind::Switch(long[1..].to_string())]
        );
        assert_eq!(
            message("-r /nonexistent.iso vm"),
            ["invalid iso image path: /nonexistent.iso: No such file or directory"]
        );
        let iso = s.path("cd.iso");
        assert_eq!(
            message(&format!("-r {iso} -r {iso} vm")),
            ["iso image specified multiple times"]
        );
        assert_eq!(
            message(&format!("-t {long} vm")),
            [
                "instance vm name too long".to_string(),
                format!("invalid name: {long}")
            ]
        );
        assert_eq!(
            message("-t a -t b vm"),
            ["instance specified multiple times"]
        );
        assert_eq!(
            message("-p 0 vm"),
            ["count is too small: 0", "invalid cpu count: 0"]
        );
        assert_eq!(
            message("-p 65 vm"),
            ["count is too large: 65", "invalid cpu count: 65"]
        );
        assert_eq!(
            message("-p 1 -p 2 vm"),
            ["cpu count specified multiple times"]
        );
        assert_eq!(
            message("--cmdline a --cmdline b vm"),
            ["kernel command line specified multiple times"]
        );
        assert_eq!(
            message("--initrd /nonexistent/initrd vm"),
            ["invalid initrd path: /nonexistent/initrd: No such file or directory"]
        );
    }

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey me@host";

    #[test]
    fn cloud_init_files_travel_as_contents() {
        let s = Scratch::new("cloud-init");
        std::fs::write(s.path("user-data"), "#cloud-config\nruncmd: [echo hi]\n").unwrap();
        std::fs::write(s.path("key.pub"), format!("{KEY}\n")).unwrap();
        let disk = s.path("disk.img");
        let (plan, warnings) = parse_ok(&format!(
            "-d {disk} -L --user-data {} --ssh-key {} vm",
            s.path("user-data"),
            s.path("key.pub")
        ));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            plan.request.user_data.as_deref(),
            Some("#cloud-config\nruncmd: [echo hi]\n")
        );
        assert_eq!(plan.request.ssh_key.as_deref(), Some(KEY));
        // Either alone, and with `--name=value`.
        let (plan, _) = parse_ok(&format!("-d {disk} --ssh-key={} vm", s.path("key.pub")));
        assert_eq!(plan.request.user_data, None);
        assert_eq!(plan.request.ssh_key.as_deref(), Some(KEY));
        // They describe a new VM, whose checks then apply.
        assert_eq!(
            message(&format!("--user-data {} vm", s.path("user-data"))),
            ["no kernel or disk/cdrom specified"]
        );
        // An instance may have them.
        let (plan, _) = parse_ok(&format!("-t base --ssh-key {} inst", s.path("key.pub")));
        assert_eq!(plan.request.ssh_key.as_deref(), Some(KEY));
    }

    #[test]
    fn bad_cloud_init_files_stop_the_start() {
        let s = Scratch::new("cloud-init-bad");
        let disk = s.path("disk.img");
        let user_data = |path: &str| message(&format!("-d {disk} --user-data {path} vm"));
        let ssh_key = |path: &str| message(&format!("-d {disk} --ssh-key {path} vm"));
        let missing = s.path("missing");
        assert_eq!(
            user_data(&missing),
            [format!("user data {missing}: No such file or directory")]
        );
        assert_eq!(
            ssh_key(&missing),
            [format!("ssh key {missing}: No such file or directory")]
        );
        let dir = s.path("");
        assert_eq!(
            user_data(&dir),
            [format!("user data {dir}: a directory, not a regular file")]
        );
        std::fs::write(s.path("big"), vec![b'#'; cidata::MAX_USER_DATA + 1]).unwrap();
        assert_eq!(
            user_data(&s.path("big")),
            [format!(
                "user data {}: larger than 65536 bytes",
                s.path("big")
            )]
        );
        std::fs::write(s.path("binary"), [0x1f, 0x8b, 0x08, 0xff]).unwrap();
        assert_eq!(
            user_data(&s.path("binary")),
            [format!("user data {}: not UTF-8 text", s.path("binary"))]
        );
        std::fs::write(
            s.path("id_ed25519"),
            "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n",
        )
        .unwrap();
        assert_eq!(
            ssh_key(&s.path("id_ed25519")),
            [format!(
                "ssh key {}: a private key: give the public key (the .pub file)",
                s.path("id_ed25519")
            )]
        );
        std::fs::write(s.path("two.pub"), format!("{KEY}\n{KEY}\n")).unwrap();
        assert_eq!(
            ssh_key(&s.path("two.pub")),
            [format!(
                "ssh key {}: more than one line: give one SSH public key",
                s.path("two.pub")
            )]
        );
        std::fs::write(
            s.path("mime"),
            "Content-Type: multipart/mixed; boundary=x\n",
        )
        .unwrap();
        std::fs::write(s.path("key.pub"), KEY).unwrap();
        assert_eq!(
            message(&format!(
                "-d {disk} --user-data {} --ssh-key {} vm",
                s.path("mime"),
                s.path("key.pub")
            )),
            [format!(
                "user data {}: a MIME multi-part archive cannot also take an SSH key: \
                 put the key in the archive",
                s.path("mime")
            )]
        );
        let key = s.path("key.pub");
        assert_eq!(
            message(&format!("-d {disk} --ssh-key {key} --ssh-key {key} vm")),
            ["ssh key specified multiple times"]
        );
        assert_eq!(
            message(&format!("-d {disk} --user-data {key} --user-data {key} vm")),
            ["user data specified multiple times"]
        );
    }

    /// A FIFO named as user data is refused at once, not waited on.
    #[test]
    fn a_fifo_is_not_waited_on() {
        let s = Scratch::new("cloud-init-fifo");
        let fifo = s.path("fifo");
        nix::unistd::mkfifo(fifo.as_str(), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(
            message(&format!("-d {} --user-data {fifo} vm", s.path("disk.img"))),
            [format!("user data {fifo}: a FIFO, not a regular file")]
        );
    }

    #[test]
    fn rounding_warning_comes_before_a_later_error() {
        let (failure, warnings) = parse_err("-m 1.5M -d /nonexistent vm");
        assert_eq!(warnings, ["memory size rounded to 1.0M"]);
        assert_eq!(
            failure,
            Failure::msg("invalid disk path: /nonexistent: No such file or directory")
        );
    }

    #[test]
    fn operands_and_names() {
        for bad in ["", "a b", "-x vm", "-m", "--bogus vm", "vm -c", "-c"] {
            assert_eq!(
                parse_err(bad).0,
                Failure::Usage(CommandId::Start),
                "{bad:?}"
            );
        }
        assert_eq!(parse_err("-- -vm").0, Failure::msg("invalid id: -vm"));
        let long = "v".repeat(64);
        assert_eq!(
            message(&long),
            ["name too long".to_string(), format!("invalid id: {long}")]
        );
        assert_eq!(message("_vm"), ["invalid VM name"]);
        assert_eq!(message(".vm"), ["invalid VM name"]);
        assert_eq!(message("v/m"), ["invalid VM name"]);
        assert_eq!(
            parse_ok("9front").0.request.target,
            Some(VmRef::Name("9front".into()))
        );
    }

    #[test]
    fn kernel_must_be_a_readable_regular_file() {
        let s = Scratch::new("kernel");
        assert!(open_kernel(&s.path("bsd")).is_ok());
        assert_eq!(
            open_kernel(&s.path("")).unwrap_err(),
            Failure::msg("kernel must be a regular file")
        );
        let missing = s.path("missing");
        assert_eq!(
            open_kernel(&missing).unwrap_err(),
            Failure::msg(format!(
                "cannot open kernel '{missing}': No such file or directory"
            ))
        );
    }

    #[test]
    fn start_failures() {
        assert_eq!(
            start_failure(&ErrorCode::BIOS_MISSING.into()),
            Failure::msg("vmm bios firmware file not found.")
        );
        assert_eq!(
            start_failure(&ErrorCode::DISK_MISSING.into()),
            Failure::msg("could not open disk image(s)")
        );
        assert_eq!(
            start_failure(&ErrorCode::CDROM_MISSING.into()),
            Failure::msg("could not find specified iso image")
        );
        assert_eq!(
            start_failure(&ErrorCode::CDROM_INVALID.into()),
            Failure::msg("specified iso image is not a regular file")
        );
        assert_eq!(
            start_failure(&ErrorCode::PARENT_INVALID.into()),
            Failure::msg("invalid template")
        );
        assert_eq!(
            start_failure(&ErrorCode::EALREADY.into()),
            Failure::msg("start vm command failed: Operation already in progress")
        );
        assert_eq!(
            start_failure(&ErrorCode::EPERM.into()),
            Failure::msg("start vm command failed: Operation not permitted")
        );
        // The cause vmd found follows OpenBSD's message.
        assert_eq!(
            start_failure(&Failed::because(
                ErrorCode::DISK_MISSING,
                "/var/vm/base.qcow2: No such file or directory"
            )),
            Failure::msg(
                "could not open disk image(s): /var/vm/base.qcow2: No such file or directory"
            )
        );
        assert_eq!(
            start_failure(&Failed::because(ErrorCode::EPERM, "too fast")),
            Failure::msg("start vm command failed: Operation not permitted: too fast")
        );
    }
}
