//! Messages between vmd and one VM process, over the socketpair vmd creates
//! when it spawns the process.
//!
//! vmd opens every host resource and sends it with [`ToVm::Launch`]; the VM
//! process owns no path and opens nothing by name. The descriptors travel in
//! the order given by [`LaunchFds`].

use serde::{Deserialize, Serialize};

use crate::control::{BootDevice, DiskFormat, DiskSpec};
use crate::error::ErrorCode;

/// Exit status of a VM process whose guest asked for a reset (triple fault,
/// keyboard-controller reset, …): vmd restarts it (docs/lifecycle.md, "Stop, reboot and the end of a VM").
pub const EXIT_REBOOT: i32 = libc::EAGAIN;
/// Exit status of a VM process whose guest powered off or was stopped.
pub const EXIT_OFF: i32 = 0;
/// Exit status of a VM process that failed (emulation error, KVM error).
pub const EXIT_ERROR: i32 = 1;

/// Positions of the descriptors that accompany [`ToVm::Launch`]. Optional
/// ones are present only when the matching field says so; their index is
/// the position in the message's descriptor list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchFds {
    /// `/dev/kvm`, opened by vmd.
    pub kvm: u8,
    /// Master side of the console pty.
    pub pty_master: u8,
    /// A slave-side descriptor the VM process keeps open so that the master
    /// never reports hang-up while no console client is attached.
    pub pty_slave: u8,
    /// Boot image: BIOS or kernel. A received VM (see
    /// [`VmLaunch::incoming`]) boots nothing and has none.
    pub boot_image: Option<u8>,
    /// Initial ramdisk for a direct kernel boot.
    pub initrd: Option<u8>,
    /// The default firmware, sent along with a kernel: kernels that run
    /// on BIOS services (a bzImage without a protected-mode entry, such
    /// as iPXE's) boot through it.
    pub firmware: Option<u8>,
}

/// A disk image and its backing chain, top image first, as opened by vmd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchDisk {
    /// Path, for messages and the get-id serial only.
    pub path: String,
    pub format: DiskFormat,
    /// Descriptor index of each image of the chain, top first.
    pub fds: Vec<u8>,
    pub read_only: bool,
}

/// A network interface's host side, as set up by vmd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchNic {
    /// Descriptor index of the tap.
    pub tap: u8,
    pub guest_mac: [u8; 6],
    pub host_mac: [u8; 6],
    /// `locked lladdr` enforcement (docs/machine.md, "The network device").
    pub locked: bool,
    /// Local interface: guest and host IPv4 addresses for the DHCP responder.
    pub local: Option<LocalAddrs>,
    /// Descriptor index of the PXE option ROM the firmware runs for this
    /// NIC (boot device `net` with a BIOS, first NIC only).
    pub boot_rom: Option<u8>,
}

/// The /31 of a local interface (docs/networking.md, "What vmd makes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAddrs {
    pub host: [u8; 4],
    pub guest: [u8; 4],
}

/// Everything a VM process needs to build and boot its VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmLaunch {
    pub id: u32,
    pub name: String,
    /// Guest memory in bytes, a whole number of MiB.
    pub memory: u64,
    pub vcpus: u32,
    pub fds: LaunchFds,
    /// Kernel command line for a direct kernel boot.
    pub cmdline: Option<String>,
    pub disks: Vec<LaunchDisk>,
    /// Descriptor index of the CD-ROM image.
    pub cdrom: Option<u8>,
    pub nics: Vec<LaunchNic>,
    pub boot_device: Option<BootDevice>,
    /// Daemon verbosity (0 brief, 1+ verbose).
    pub verbose: u8,
    /// Console output of the previous run of this VM (kept across reboots),
    /// to seed the replay buffer.
    pub console_history: ConsoleHistory,
    /// Set for a received VM (`vmctl receive`): its state comes from a
    /// stream instead of a boot.
    pub incoming: Option<IncomingState>,
    /// Who the VM process becomes before it builds the VM, and the empty
    /// directory it is locked into; `None` runs it unconfined (the VMM's
    /// own in-process tests).
    pub sandbox: Option<SandboxIdentity>,
}

/// A run's console output, kept for the VM's next run and for replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleHistory {
    /// The most recent output, at most the console's history size.
    pub output: Vec<u8>,
    /// How many of its last bytes had not reached the pty when the run
    /// ended (a client not reading): the next run writes them first, so
    /// an attached client sees every byte across a reboot, once.
    pub unshown: u64,
}

/// Where a received VM's state comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingState {
    /// Descriptor index of the stream, positioned right after its header.
    pub stream: u8,
    /// The stream's preamble and header frame, as vmd read and checked
    /// them.
    pub header: Vec<u8>,
}

/// A VM as one vmd describes it to another through a send/receive stream:
/// what it is made of and which host resources it uses, without what
/// belongs to one host's run of it (id, tty, tap names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDescription {
    /// Guest memory in bytes.
    pub memory: u64,
    pub vcpus: u32,
    /// Opened again at the same paths on the receiving host.
    pub disks: Vec<DiskSpec>,
    pub cdrom: Option<String>,
    pub nics: Vec<NicDescription>,
}

/// One network interface of a [`VmDescription`]; the receiving vmd makes
/// a new tap for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicDescription {
    /// The guest's MAC address, which the guest's state already knows.
    pub mac: [u8; 6],
    /// A local interface (docs/networking.md, "What vmd makes").
    pub local: bool,
    /// A local interface's addresses on the sending host. The receiving
    /// vmd gives them to the new tap and its DHCP server when this host
    /// has no interface with them, so that the guest's lease stays
    /// good; otherwise the interface gets the new id's addresses
    /// (docs/networking.md).
    pub local_addrs: Option<LocalAddrs>,
    pub switch: Option<String>,
    pub group: Option<String>,
    pub locked: bool,
    pub rdomain: Option<u8>,
    pub up: bool,
}

/// The unprivileged identity of VM processes (`_vmd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxIdentity {
    pub uid: u32,
    pub gid: u32,
    /// An empty, root-owned directory (`/var/empty`).
    pub root: String,
}

/// vmd → VM process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToVm {
    /// Build and boot the VM; descriptors as [`VmLaunch::fds`] says.
    Launch(Box<VmLaunch>),
    Pause,
    Unpause,
    /// Ask the guest to shut down. `false` ends the VM at once.
    Shutdown {
        graceful: bool,
    },
    /// A console client attaches: flush what the pty holds and answer
    /// [`FromVm::ConsoleReplay`] with the recent output.
    ConsoleAttach {
        client: u64,
    },
    /// Raise BREAK on the UART.
    ConsoleBreak,
    /// Change log verbosity.
    Verbose(u8),
    /// `vmctl send`: write the VM's state to the one descriptor that comes
    /// with this message, then end (answer [`FromVm::Sent`]).
    Send(Box<VmDescription>),
}

/// Why a VM process is about to exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// The guest powered off, or vmd stopped it.
    PowerOff,
    /// The guest reset itself; vmd restarts the VM.
    Reboot,
    /// The VM failed; the text says why (also logged by the VM process).
    Error(String),
}

/// VM process → vmd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromVm {
    /// The VM is built and its vCPUs run. The guest memory descriptor comes
    /// with this message: vmd reads its allocated size for CURMEM.
    Running,
    /// The VM could not be built.
    LaunchFailed {
        code: ErrorCode,
        reason: String,
    },
    Paused(Result<(), ErrorCode>),
    Unpaused(Result<(), ErrorCode>),
    /// Recent console output for the client that asked.
    ConsoleReplay {
        client: u64,
        bytes: Vec<u8>,
    },
    /// The guest announced it is shutting down (state `stopping`).
    GuestShuttingDown,
    /// The outcome of [`ToVm::Send`]: on success the whole stream was
    /// written and the process ends next; on failure the VM runs on.
    Sent(Result<(), ErrorCode>),
    /// The VM ends now; console output of this run comes along so that a
    /// restarted VM keeps its history.
    Exiting {
        reason: ExitReason,
        console_tail: ConsoleHistory,
    },
}
