//! Running a guest in-process on real KVM for a test: build the VM from a
//! boot image (tiny firmware or kernel), run it until it ends, return what
//! it printed on COM1 and why it ended.
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use std::path::Path;

use proto::vmchannel::{ExitReason, IncomingState, LaunchFds, VmDescription, VmLaunch};
use vmm::lifecycle::{Lifecycle, VmEvent};
use vmm::snapshot::StreamError;
use vmm::vm::{LaunchError, LaunchFiles, Vm};

/// What to boot.
pub struct Guest {
    pub image: Vec<u8>,
    pub memory: u64,
    pub vcpus: u32,
    pub cmdline: Option<String>,
    pub initrd: Option<Vec<u8>>,
    /// An ISO image for the CD-ROM.
    pub cdrom: Option<Vec<u8>>,
    /// A raw disk image, locked as vmd locks a disk it hands a VM.
    pub disk: Option<std::path::PathBuf>,
}

impl Guest {
    pub fn new(image: Vec<u8>) -> Guest {
        Guest {
            image,
            memory: 64 << 20,
            vcpus: 1,
            cmdline: None,
            initrd: None,
            cdrom: None,
            disk: None,
        }
    }

    /// The launch message and descriptors for this guest; its files live
    /// in `dir`.
    fn launch(self, dir: &testkit::tmp::TempDir) -> (VmLaunch, LaunchFiles) {
        let write = |name: &str, data: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, data).unwrap();
            File::open(path).unwrap()
        };
        let pty = nix::pty::openpty(None, None).unwrap();
        // Raw, as vmd makes its ptys: a line discipline that echoes would
        // send the guest's output back to it as input.
        let mut attrs = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
        nix::sys::termios::cfmakeraw(&mut attrs);
        nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &attrs)
            .unwrap();
        let kvm = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .expect("/dev/kvm");
        let files = LaunchFiles {
            kvm: OwnedFd::from(kvm),
            pty_master: File::from(pty.master),
            pty_slave: File::from(pty.slave),
            boot_image: Some(write("image", &self.image)),
            disks: self
                .disk
                .iter()
                .map(|path| vec![locked_disk(path)])
                .collect(),
            initrd: self.initrd.as_deref().map(|data| write("initrd", data)),
            firmware: None,
            incoming: None,
            nics: Vec::new(),
            cdrom: self.cdrom.as_deref().map(|data| write("cd.iso", data)),
        };
        let launch = VmLaunch {
            id: 1,
            name: "guest".into(),
            memory: self.memory,
            vcpus: self.vcpus,
            fds: LaunchFds::default(),
            cmdline: self.cmdline,
            disks: self
                .disk
                .iter()
                .map(|path| proto::vmchannel::LaunchDisk {
                    path: path.display().to_string(),
                    format: proto::control::DiskFormat::Raw,
                    fds: vec![0],
                    read_only: false,
                })
                .collect(),
            cdrom: None,
            nics: vec![],
            boot_device: None,
            verbose: 0,
            console_history: Default::default(),
            incoming: None,
            sandbox: None,
        };
        (launch, files)
    }

    /// Boots the guest and returns its COM1 output and how the VM ended.
    pub fn run(self) -> (String, ExitReason) {
        self.start().wait()
    }

    /// Boots the guest and leaves it running.
    pub fn start(self) -> Running {
        let dir = testkit::tmp::TempDir::new("guest");
        let (launch, files) = self.launch(&dir);
        let (tx, events) = mpsc::channel();
        let lifecycle = Arc::new(Lifecycle::new(tx));
        let mut vm = Vm::build(&launch, files, lifecycle.clone()).expect("build vm");
        vm.start().expect("start vm");
        Running {
            vm,
            lifecycle,
            events,
            _dir: dir,
        }
    }

    /// Why the VM cannot be built; panics if it can.
    pub fn launch_error(self) -> LaunchError {
        let dir = testkit::tmp::TempDir::new("guest");
        let (launch, files) = self.launch(&dir);
        let (tx, _rx) = mpsc::channel();
        match Vm::build(&launch, files, Arc::new(Lifecycle::new(tx))) {
            Ok(_) => panic!("the VM was built"),
            Err(e) => e,
        }
    }
}

/// `path` opened for reading and writing and locked exclusively, as vmd
/// opens a disk.
fn locked_disk(path: &Path) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    disk::lock::lock_image(&file, disk::lock::LockMode::Exclusive).expect("lock the disk");
    file
}

/// The description a send of a guest built by [`Guest`] carries.
pub fn description(memory: u64, vcpus: u32) -> VmDescription {
    VmDescription {
        memory,
        vcpus,
        disks: vec![],
        cdrom: None,
        nics: vec![],
    }
}

/// Builds and starts the VM a stream at `path` describes, as vmd would:
/// the header read and checked first, the rest of the stream handed to
/// the VM.
pub fn receive(path: &Path) -> Result<Running, LaunchError> {
    let dir = testkit::tmp::TempDir::new("received");
    let mut stream = File::open(path).unwrap();
    let kvm = File::open("/dev/kvm").expect("/dev/kvm");
    let (header_bytes, header) =
        vmm::snapshot::read_header(&mut stream, &kvm).map_err(|e| LaunchError {
            code: e.code(),
            reason: e.to_string(),
        })?;
    let d = header.description;
    let guest = Guest {
        memory: d.memory,
        vcpus: d.vcpus,
        ..Guest::new(vec![])
    };
    let (mut launch, mut files) = guest.launch(&dir);
    files.boot_image = None;
    files.incoming = Some(stream);
    launch.incoming = Some(IncomingState {
        stream: 0,
        header: header_bytes,
    });
    let (tx, events) = mpsc::channel();
    let lifecycle = Arc::new(Lifecycle::new(tx));
    let mut vm = Vm::restore(&launch, files, lifecycle.clone())?;
    vm.start().expect("start vm");
    vm.resume();
    Ok(Running {
        vm,
        lifecycle,
        events,
        _dir: dir,
    })
}

/// A guest that runs.
pub struct Running {
    pub vm: Vm,
    pub lifecycle: Arc<Lifecycle>,
    events: mpsc::Receiver<VmEvent>,
    _dir: testkit::tmp::TempDir,
}

impl Running {
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.vm.console.history()).into_owned()
    }

    /// Pauses the VM and writes its state to `path`; the VM stays paused.
    pub fn send_to(&self, path: &Path) -> Result<vmm::snapshot::save::Sent, StreamError> {
        self.vm.pause();
        assert!(
            !self.lifecycle.exit_requested(),
            "the guest ended before it was sent: {}",
            self.output()
        );
        let out = File::create(path).unwrap();
        let d = description(self.vm.ram.layout.memory, self.vm.vcpu_count() as u32);
        self.vm.send(&d, &out)
    }

    /// Waits until the guest printed `needle`.
    pub fn wait_for_output(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.output().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in {:?}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the VM to end; returns its output and why it ended. A
    /// guest that announced its shutdown (vmmci) gets
    /// ` [announced shutdown]` appended to its output.
    pub fn wait(self) -> (String, ExitReason) {
        let mut announced = false;
        let reason = loop {
            match self.events.recv_timeout(Duration::from_secs(120)) {
                Ok(VmEvent::Exit(reason)) => break reason,
                Ok(VmEvent::GuestShuttingDown) => announced = true,
                Err(_) => {
                    self.lifecycle.request_exit(ExitReason::PowerOff);
                    panic!("guest did not finish; it printed:\n{}", self.output());
                }
            }
        };
        let mut output = self.output();
        if announced {
            output.push_str(" [announced shutdown]");
        }
        (output, reason)
    }
}

/// The value printed as `name=value` in a guest's output.
pub fn field<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {output:?}"))
}
