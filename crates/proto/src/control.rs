//! Messages between vmctl (or any client) and the vmd control socket.
//!
//! Every client connection sends one [`Request`] and reads [`Response`]s
//! until it has the answer it needs: a start waits for
//! [`Response::Start`], a status reads [`Response::InfoData`] until
//! [`Response::InfoEnd`], a `stop -w` waits for [`Response::Terminated`], and
//! a console session keeps the connection open for the whole session.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, Failed, Line};

/// How a command names a VM: by vmd's numeric id or by name (vmctl(8), "Naming a VM").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmRef {
    Id(u32),
    Name(String),
}

impl VmRef {
    /// Whether this reference designates the VM with `id` and `name`.
    /// Id 0 never matches: vmd treats it as "look up by (empty) name".
    pub fn matches(&self, id: u32, name: &str) -> bool {
        match self {
            VmRef::Id(want) => *want != 0 && *want == id,
            VmRef::Name(want) => want == name,
        }
    }
}

/// Disk image formats (vmctl(8), create).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// The qcow2 magic, `QFI\xfb`. Here rather than in `disk` so that the
/// configuration parser can recognise an image without the image library.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Removes an explicit `raw:` or `qcow2:` prefix (exact, lower case) from a
/// disk argument (vmctl(8), vm.conf(5)).
pub fn split_format_prefix(arg: &str) -> (&str, Option<DiskFormat>) {
    if let Some(rest) = arg.strip_prefix("raw:") {
        (rest, Some(DiskFormat::Raw))
    } else if let Some(rest) = arg.strip_prefix("qcow2:") {
        (rest, Some(DiskFormat::Qcow2))
    } else {
        (arg, None)
    }
}

/// A disk as given to `start -d` or `disk` in vm.conf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Absolute path, prefix removed.
    pub path: String,
    pub format: DiskFormat,
}

/// What a network interface is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NicKind {
    /// `-i` padding: a tap with no switch and no local addressing.
    Plain,
    /// `-L`: local interface with vmd's DHCP responder.
    Local,
    /// `-n switch`: member of the named switch.
    Switch(String),
}

/// One-shot boot device override (`-B`, vm.conf `boot device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootDevice {
    Disk,
    Cdrom,
    Net,
}

impl BootDevice {
    pub fn parse(word: &str) -> Option<BootDevice> {
        match word {
            "disk" => Some(BootDevice::Disk),
            "cdrom" => Some(BootDevice::Cdrom),
            "net" => Some(BootDevice::Net),
            _ => None,
        }
    }
}

/// `vmctl start` as sent to vmd. Fields left empty were not given on the
/// command line; a request with none of the creation fields set starts an
/// existing VM (docs/lifecycle.md, "Registration").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    pub target: Option<VmRef>,
    /// Memory in bytes, already validated and rounded to MiB by vmctl.
    pub memory: Option<u64>,
    /// `-p count` (Linux extension).
    pub vcpus: Option<u32>,
    /// `-b path`, canonical. The open file travels with the request as its
    /// only descriptor, opened with the caller's own rights.
    pub kernel: Option<String>,
    /// `--cmdline` (Linux extension).
    pub cmdline: Option<String>,
    /// `--initrd` (Linux extension), canonical path.
    pub initrd: Option<String>,
    pub disks: Vec<DiskSpec>,
    pub cdrom: Option<String>,
    /// Interfaces in guest NIC order, `-i` padding already applied.
    pub nics: Vec<NicKind>,
    pub boot_device: Option<BootDevice>,
    /// `-t name`: create an instance of this configured VM.
    pub instance_of: Option<String>,
    /// `--user-data` (Linux extension): the file's contents, which vmctl
    /// read with the user's rights and checked (at most 64 KiB of UTF-8
    /// text, so that the request fits in one frame; docs/cloud-init.md).
    pub user_data: Option<String>,
    /// `--ssh-key` (Linux extension): the one line of an SSH public key
    /// file, read and checked by vmctl.
    pub ssh_key: Option<String>,
}

impl StartRequest {
    /// True when the request asks for more than "start what exists"
    /// (anything besides a kernel or a boot device override).
    pub fn has_creation_options(&self) -> bool {
        self.memory.is_some()
            || self.vcpus.is_some()
            || self.cmdline.is_some()
            || self.initrd.is_some()
            || !self.disks.is_empty()
            || self.cdrom.is_some()
            || !self.nics.is_empty()
            || self.user_data.is_some()
            || self.ssh_key.is_some()
    }
}

/// `reset` modes (docs/lifecycle.md, "Reload, load and reset").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetMode {
    All,
    Switches,
    Vms,
}

/// A request from a client. One per connection, except that a console
/// session may follow its [`Request::ConsoleAttach`] with
/// [`Request::ConsoleBreak`]s.
// A connection holds one request at a time and none are stored in bulk,
// so a start request's size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Start(StartRequest),
    /// `stop`; `force` is `-f`, `wait` is `-w`.
    Terminate {
        target: VmRef,
        force: bool,
        wait: bool,
    },
    /// `wait`: block until the VM terminates; requests nothing.
    Wait {
        target: VmRef,
    },
    /// `status`/`show`: the list of VMs.
    Info,
    /// `status -v` (a Linux extension): the list of VMs, each
    /// [`Response::InfoData`] followed by its [`Response::InfoDetails`].
    InfoVerbose,
    Pause {
        target: VmRef,
    },
    Unpause {
        target: VmRef,
    },
    /// `load file` (root only).
    Load {
        path: String,
    },
    /// `reload` (root only).
    Reload,
    /// `reset mode` (root only).
    Reset {
        mode: ResetMode,
    },
    /// `log brief|verbose` (root only): 0 = brief, 2 = verbose.
    Log {
        level: u8,
    },
    /// Attach the console of a running VM: vmd answers with the recent output
    /// to replay and keeps the session exclusive until this connection closes.
    ConsoleAttach {
        target: VmRef,
    },
    /// Assert BREAK on the attached VM's UART (the `~#` escape).
    ConsoleBreak,
    /// Legacy `send` (root only): the stream is written to the one descriptor
    /// that comes with the request. Once vmctl has read the stream to its
    /// end and written it out, it answers [`SEND_RECEIVED`] on that
    /// descriptor; only then does the VM leave this host.
    Send {
        target: VmRef,
    },
    /// Legacy `receive name` (root only): the stream is read from the one
    /// descriptor that comes with the request.
    Receive {
        name: String,
    },
}

impl Request {
    /// Requests any connected user may make (docs/lifecycle.md, "Who may do what"); the others are
    /// root only.
    pub fn allowed_for_anyone(&self) -> bool {
        matches!(
            self,
            Request::Start(_)
                | Request::Terminate { .. }
                | Request::Wait { .. }
                | Request::Info
                | Request::InfoVerbose
                | Request::Pause { .. }
                | Request::Unpause { .. }
                | Request::ConsoleAttach { .. }
                | Request::ConsoleBreak
        )
    }

    /// Short type name for logs (`denied request <type> from uid <uid>`).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Start(_) => "start",
            Request::Terminate { .. } => "terminate",
            Request::Wait { .. } => "wait",
            Request::Info | Request::InfoVerbose => "info",
            Request::Pause { .. } => "pause",
            Request::Unpause { .. } => "unpause",
            Request::Load { .. } => "load",
            Request::Reload => "reload",
            Request::Reset { .. } => "reset",
            Request::Log { .. } => "log",
            Request::ConsoleAttach { .. } => "console",
            Request::ConsoleBreak => "console-break",
            Request::Send { .. } => "send",
            Request::Receive { .. } => "receive",
        }
    }
}

/// The byte vmctl writes back on a `send` stream once it has written the
/// whole stream out (ASCII ACK).
pub const SEND_RECEIVED: u8 = 0x06;

/// State bits of a VM (docs/lifecycle.md, "Registry, ids and states").
pub mod state {
    pub const RUNNING: u32 = 0x01;
    pub const DISABLED: u32 = 0x02;
    pub const SHUTDOWN: u32 = 0x04;
    pub const RECEIVED: u32 = 0x08;
    pub const PAUSED: u32 = 0x10;
    pub const WAITING: u32 = 0x20;

    /// The STATE column's word for a set of bits (vmctl(8), status).
    pub fn name(bits: u32) -> &'static str {
        if bits & PAUSED != 0 {
            "paused"
        } else if bits & WAITING != 0 {
            "waiting"
        } else if bits & SHUTDOWN != 0 && bits & RUNNING != 0 {
            "stopping"
        } else if bits & RUNNING != 0 {
            "running"
        } else {
            "stopped"
        }
    }
}

/// One row of `vmctl status` (GET_INFO_VM_DATA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    pub id: u32,
    pub name: String,
    /// Configured memory in bytes.
    pub max_mem: u64,
    /// Guest memory actually resident, in bytes; 0 when not running.
    pub cur_mem: u64,
    pub vcpus: u32,
    /// VM process id while running.
    pub pid: Option<u32>,
    /// Console tty path while running (`/dev/pts/3`).
    pub tty: Option<String>,
    /// The user who started it while running, else the configured owner.
    pub owner_uid: u32,
    /// Configured owner group, if any.
    pub owner_gid: Option<u32>,
    /// [`state`] bits.
    pub state: u32,
}

impl VmInfo {
    pub fn running(&self) -> bool {
        self.state & state::RUNNING != 0 && self.pid.is_some()
    }
}

/// A VM that started (START_VM_RESPONSE with result 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub id: u32,
    pub pid: u32,
    /// `/dev/pts/N`.
    pub tty: String,
}

/// vmd's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Outcome of `start` or `receive`.
    Start(Result<Started, Failed>),
    /// Immediate answer to `stop` (TERMINATE_VM_RESPONSE); `Ok` means the
    /// request was accepted. Waiting clients get this only on error.
    Terminate {
        id: u32,
        result: Result<(), ErrorCode>,
    },
    /// The VM ended (TERMINATE_VM_EVENT), for `stop -w` and `wait`.
    Terminated {
        id: u32,
    },
    Pause {
        id: u32,
        result: Result<(), ErrorCode>,
    },
    Unpause {
        id: u32,
        result: Result<(), ErrorCode>,
    },
    InfoData(VmInfo),
    /// What `status -v` shows of the VM of the [`Response::InfoData`]
    /// just sent.
    InfoDetails(Box<VmDetails>),
    InfoEnd,
    /// CTL_OK / CTL_FAIL for load, reload, reset and log. A failure with
    /// code 0 is a CTL_FAIL without an errno.
    Ctl(Result<(), Failed>),
    /// Console attached: replay these bytes, then relay the tty.
    ConsoleAttached {
        tty: String,
        replay: Vec<u8>,
    },
    /// Console refused (not running, busy, not permitted).
    ConsoleRefused(ErrorCode),
    /// The attached VM stopped; the session is over.
    ConsoleClosed,
    /// The attached VM ended other than by a guest power-off or a
    /// requested stop (a Linux extension); the session is over.
    ConsoleEnded {
        name: String,
        end: VmEnd,
    },
    /// The console of a VM that is not running (a Linux extension): the
    /// last output of its last run, and how that run ended. The session
    /// is over. Also the answer to an attach that the VM's end overtook
    /// (its run ended before the VM process answered).
    ConsoleHistory {
        name: String,
        output: Vec<u8>,
        end: Option<VmEnd>,
    },
    /// `send`: the stream follows on the passed descriptor, or the request
    /// was refused.
    SendStarted(Result<u32, ErrorCode>),
    /// `send` finished: the whole stream was written (or not).
    SendDone(Result<(), ErrorCode>),
    /// Something vmd warns about while it carries out the request (an
    /// unknown switch, addresses a received VM could not keep, …), sent
    /// before the request's answer; the request goes on.
    Warning(Line),
}

/// How a VM's last run ended (a Linux extension: `status -v`, `status -j`
/// and the console say it; vmctl(8) lists the cases).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmEnd {
    /// The guest powered off.
    PowerOff,
    /// `vmctl stop` (or `reset`, or vmd's own shutdown) ended it.
    Stopped,
    /// `vmctl send` took it away.
    Sent,
    /// The guest reset itself while booting from a device given for one
    /// boot only (`start -B`), which ends the VM instead of restarting it.
    Reset,
    /// The VM failed; the one-line cause its process gave.
    Error(String),
    /// Its process was killed by this signal.
    Signal(i32),
    /// Its process exited with this status without saying why.
    ExitStatus(i32),
    /// It could not be started (or, after a guest reset, started again);
    /// why.
    StartFailed(String),
}

impl VmEnd {
    /// An end the user did not ask for and the guest did not choose.
    pub fn abnormal(&self) -> bool {
        !matches!(
            self,
            VmEnd::PowerOff | VmEnd::Stopped | VmEnd::Sent | VmEnd::Reset
        )
    }

    /// The word `status -j` gives for it.
    pub fn kind(&self) -> &'static str {
        match self {
            VmEnd::PowerOff => "poweroff",
            VmEnd::Stopped => "stopped",
            VmEnd::Sent => "sent",
            VmEnd::Reset => "reset",
            VmEnd::Error(_) => "error",
            VmEnd::Signal(_) => "signal",
            VmEnd::ExitStatus(_) => "exit",
            VmEnd::StartFailed(_) => "start-failed",
        }
    }
}

impl std::fmt::Display for VmEnd {
    /// One line, as `status -v` and the console print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmEnd::PowerOff => write!(f, "guest powered off"),
            VmEnd::Stopped => write!(f, "stopped"),
            VmEnd::Sent => write!(f, "sent away"),
            VmEnd::Reset => write!(f, "guest reset"),
            VmEnd::Error(cause) => write!(f, "vm error: {cause}"),
            VmEnd::Signal(signal) => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                write!(f, "vm process killed by signal {signal} ({name})")
            }
            VmEnd::ExitStatus(code) => write!(f, "vm process exited with status {code}"),
            VmEnd::StartFailed(cause) => write!(f, "start failed: {cause}"),
        }
    }
}

/// What `status -v` shows of a VM beyond its table row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDetails {
    pub id: u32,
    pub disks: Vec<DiskDetails>,
    /// The ISO image's path.
    pub cdrom: Option<String>,
    pub nics: Vec<NicDetails>,
    /// The boot device of the current run, else the one the next boot
    /// uses; `None` is the firmware's own order.
    pub boot_device: Option<BootDevice>,
    /// Seconds since its process started, while it runs.
    pub uptime_secs: Option<u64>,
    /// CPU time its process has used (user and system), in milliseconds,
    /// while it runs.
    pub cpu_time_ms: Option<u64>,
    /// How its last run ended; `None` if it has not run (or not ended)
    /// since vmd knows it.
    pub last_end: Option<VmEnd>,
}

/// A disk and the images below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskDetails {
    /// The disk image itself, then its base images, top first. Only the
    /// disk's own image when the chain could not be read.
    pub chain: Vec<ImageDetails>,
    /// Why the chain could not be read.
    pub error: Option<String>,
}

/// One image of a disk's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDetails {
    pub path: String,
    pub format: DiskFormat,
    /// The disk size the guest sees, in bytes; `None` if unknown.
    pub virtual_size: Option<u64>,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicDetails {
    /// The host's tap, while the VM runs.
    pub tap: Option<String>,
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// The switch it is a member of.
    pub switch: Option<String>,
    /// A local interface (`-L`): its host address, while the VM runs.
    pub local_host: Option<[u8; 4]>,
    /// A local interface: the address vmd's DHCP server leases the
    /// guest, while the VM runs.
    pub lease: Option<[u8; 4]>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Channel;

    /// Only an exact, lower-case `raw:` or `qcow2:` is a prefix; anything
    /// else is part of the path.
    #[test]
    fn format_prefix_is_exact_and_lower_case() {
        assert_eq!(split_format_prefix("raw:/a"), ("/a", Some(DiskFormat::Raw)));
        assert_eq!(
            split_format_prefix("qcow2:/a"),
            ("/a", Some(DiskFormat::Qcow2))
        );
        assert_eq!(split_format_prefix("RAW:/a"), ("RAW:/a", None));
        assert_eq!(split_format_prefix("/a:raw:"), ("/a:raw:", None));
    }

    /// A start request with the largest user-data and SSH key vmctl sends
    /// (64 KiB and 8 KiB, docs/cloud-init.md) and four disks, a CD-ROM, a
    /// kernel and an initrd at PATH_MAX each still fits in one frame, and
    /// comes out as it went in.
    #[test]
    fn start_request_with_cloud_init_data_round_trips() {
        let path = |c: char| format!("/{}", c.to_string().repeat(4095));
        let request = Request::Start(StartRequest {
            target: Some(VmRef::Name("web".into())),
            memory: Some(1 << 30),
            kernel: Some(path('k')),
            initrd: Some(path('i')),
            cmdline: Some("console=ttyS0".into()),
            disks: ['a', 'b', 'c', 'd']
                .map(|c| DiskSpec {
                    path: path(c),
                    format: DiskFormat::Qcow2,
                })
                .to_vec(),
            cdrom: Some(path('r')),
            nics: vec![NicKind::Local; 4],
            user_data: Some("#".repeat(64 * 1024)),
            ssh_key: Some(format!("ssh-rsa {}", "A".repeat(8 * 1024 - 8))),
            ..StartRequest::default()
        });
        let (a, b) = Channel::pair().unwrap();
        a.send(&request).unwrap();
        let got: Request = b.recv().unwrap().unwrap().message;
        assert_eq!(got, request);
    }

    #[test]
    fn cloud_init_data_makes_a_new_vm() {
        for request in [
            StartRequest {
                user_data: Some(String::new()),
                ..StartRequest::default()
            },
            StartRequest {
                ssh_key: Some("ssh-ed25519 AAAA".into()),
                ..StartRequest::default()
            },
        ] {
            assert!(request.has_creation_options(), "{request:?}");
        }
        assert!(!StartRequest::default().has_creation_options());
    }
}
