//! Every virtio device driven by a guest's register writes inside the VM
//! process's real sandbox: the process confined as vmd confines it
//! (chroot, Landlock, an unprivileged user, the seccomp baseline), the
//! transport's I/O threads narrowed to device threads, and the driver's
//! side run on a thread narrowed to a vCPU thread, since that is the
//! thread whose exit hands a register write to the device. Each device is
//! found through configuration space, its BAR moved and its decoding
//! toggled (ioeventfds follow), its MSI-X vectors programmed (GSI routes
//! follow), set up, activated at DRIVER_OK, given work on every queue
//! through the notify register and the PCI configuration window, reset,
//! and set up and served again.
//!
//! A system call the filters refuse kills the whole process, so each
//! device runs in a child process of its own (this test binary again,
//! running `confined_child`), and the test asks that it ended cleanly.
//! Needs root (the sandbox changes user and root directory) and /dev/kvm.

mod rig;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use guestnet::tap::Tap;
use rig::{Backing, GUEST_MAC, Host, Kind, Machine};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::virtio::blk::driver::header_bytes;
use vmm::devices::virtio::driver::{Descriptor, DriverQueue};
use vmm::sandbox::{self, ThreadKind};

/// Names the device the child process serves.
const CHILD_DEVICE: &str = "VMM_SECCOMP_DEVICE";
/// A directory the parent made, with an empty `root/` to chroot into.
const CHILD_DIR: &str = "VMM_SECCOMP_DIR";
/// The unprivileged user the child becomes (nobody).
const UNPRIVILEGED: u32 = 65534;
const SERVED: &str = "confined child served";

/// Runs the device of `kind` in a confined child and insists it lived.
fn served_confined(kind: Kind) {
    let dir = testkit::tmp::TempDir::new("seccomp-devices");
    std::fs::create_dir(dir.join("root")).expect("the empty root");
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--ignored",
            "--exact",
            "confined_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DEVICE, kind.name())
        .env(CHILD_DIR, dir.path())
        // A backtrace would look for the executable, which the sandbox
        // forbids: the kill would hide the panic's message.
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run the confined child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let how = match out.status.signal() {
        Some(libc::SIGSYS) => "was killed by SIGSYS: a system call its sandbox forbids".to_string(),
        Some(signal) => format!("was killed by signal {signal}"),
        None => format!("exited with {}", out.status),
    };
    assert!(
        out.status.success() && stdout.contains(SERVED),
        "{}: the confined process {how}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        kind.name()
    );
}

#[test]
fn vioblk_is_served_under_the_vcpu_and_device_filters() {
    testkit::needs!(root, kvm);
    served_confined(Kind::Blk);
}

#[test]
fn vionet_is_served_under_the_vcpu_and_device_filters() {
    testkit::needs!(root, kvm);
    served_confined(Kind::Net);
}

#[test]
fn vioscsi_is_served_under_the_vcpu_and_device_filters() {
    testkit::needs!(root, kvm);
    served_confined(Kind::Scsi);
}

#[test]
fn viornd_is_served_under_the_vcpu_and_device_filters() {
    testkit::needs!(root, kvm);
    served_confined(Kind::Rng);
}

#[test]
#[ignore = "the confined half of the tests above, run in a process of its own"]
fn confined_child() {
    let Ok(name) = std::env::var(CHILD_DEVICE) else {
        return;
    };
    let kind = Kind::from_name(&name);
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).expect(CHILD_DIR));
    // The VM process's main thread: everything it builds and starts
    // descends from it, as in the VM process.
    let main = std::thread::Builder::new()
        .name("vm-main".into())
        .spawn(move || confined_vm(kind, &dir))
        .expect("spawn the VM's main thread");
    if let Err(panic) = main.join() {
        std::panic::resume_unwind(panic);
    }
    println!("{SERVED}: {name}");
}

/// The host's side of the tap: a namespace of the thread's own, the tap
/// up in it, and a packet socket that sends frames out of the tap into
/// the device.
struct HostNet {
    tap: Tap,
    socket: OwnedFd,
}

/// Marks the frames the host sends, and the one the guest sends.
const ETHERTYPE_TEST: u16 = 0x88b5;

impl HostNet {
    /// Opens everything on the calling thread, which enters a network
    /// namespace of its own for good (it dies with the child process).
    fn open() -> HostNet {
        // SAFETY: unshare with a constant flag affects this thread only.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        let tap = Tap::create(Some("seccomp0")).expect("a tap");
        // `ip` runs in the namespace of the thread that starts it.
        let out = Command::new("ip")
            .args(["link", "set", "seccomp0", "up"])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // SAFETY: a NUL-terminated interface name.
        let index = unsafe { libc::if_nametoindex(c"seccomp0".as_ptr()) };
        assert_ne!(index, 0, "{}", std::io::Error::last_os_error());
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let socket = {
            // SAFETY: a plain socket call.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            // SAFETY: `fd` is a new descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: `sockaddr_ll` is plain data, for which all zeroes is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = index as i32;
            // SAFETY: binds a descriptor we own to the address above.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            fd
        };
        HostNet { tap, socket }
    }

    /// Sends the guest a broadcast frame.
    fn send_frame(&self) {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        frame.extend_from_slice(&ETHERTYPE_TEST.to_be_bytes());
        frame.extend_from_slice(&[0x5a; 46]);
        // SAFETY: sends `frame` on a socket this struct owns.
        let n = unsafe {
            libc::send(
                self.socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
            )
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

/// What the VM process does: open, lock itself in, build, run.
fn confined_vm(kind: Kind, dir: &Path) {
    // Everything from the host, opened while the process still may.
    let host_net = (kind == Kind::Net).then(HostNet::open);
    let backing = match kind {
        Kind::Blk => Backing::Disk(
            disk::create_image(&dir.join("disk.img"), disk::DiskFormat::Raw, 1 << 20)
                .expect("disk image")
                .into(),
        ),
        Kind::Scsi => Backing::Disk(vmm::devices::virtio::driver::memory_image(&[0x33; 8192])),
        Kind::Net => Backing::Tap(
            host_net
                .as_ref()
                .expect("the host's side")
                .tap
                .file()
                .try_clone()
                .expect("tap descriptor"),
        ),
        Kind::Rng => Backing::None,
    };
    let host = Host::new();
    let model = rig::model(kind, backing);

    let landlock = sandbox::confine_process(&sandbox::Identity {
        uid: UNPRIVILEGED,
        gid: UNPRIVILEGED,
        root: &dir.join("root"),
    })
    .expect("confine the process");

    assert!(sandbox::is_confined());
    eprintln!("confined (landlock enforced: {landlock})");

    // Built after the lock-in, as the VM process builds its devices: the
    // transport's I/O thread narrows itself to a device thread.
    let machine = Machine::new(&host, kind, model);
    let (want_frame, frames_wanted) = mpsc::channel::<()>();
    let vcpu = sandbox::spawn(ThreadKind::Vcpu, "vcpu0".into(), move || {
        drive(kind, machine, want_frame)
    })
    .expect("spawn the vCPU thread");
    // From here this thread is the VM process's control thread.
    sandbox::confine_thread(ThreadKind::Control);
    for () in frames_wanted {
        if let Some(host_net) = &host_net {
            host_net.send_frame();
        }
    }
    match vcpu.join() {
        // The devices go with the VM, on the control thread.
        Ok(machine) => drop(machine),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

// Common configuration registers (virtio 1.x §4.1.4.3).
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const MSIX_CONFIG: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
const NOTIFY: u64 = 0x100;
const DEVICE_CONFIG: u64 = 0x300;

const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const NEEDS_RESET: u32 = 0x40;

/// Where the rings go, one 64 KiB slot per queue, and the buffers.
const QUEUES_AT: u64 = 0x1_0000;
const BUFFERS_AT: u64 = 0x10_0000;
/// The I/O port BAR0 is moved to.
const MOVED_BAR0: u32 = 0xc000;

/// The driver's side, every access a register access on this thread.
struct Guest {
    m: Machine,
    queues: Vec<DriverQueue>,
    /// The VIRTIO_PCI_CAP_PCI_CFG capability.
    pci_cfg: u32,
    /// The MSI-X capability.
    msix: u32,
}

impl Guest {
    fn new(mut m: Machine) -> Guest {
        let caps = m.capabilities();
        let find = |m: &mut Machine, wanted: &dyn Fn(&mut Machine, u32, u8) -> bool| {
            caps.iter()
                .find(|&&(at, id)| wanted(m, at, id))
                .map(|&(at, _)| at)
                .expect("the capability")
        };
        let pci_cfg = find(&mut m, &|m, at, id| {
            id == 0x09 && m.cfg_read(at + 3, 1) == 5
        });
        let msix = find(&mut m, &|_, _, id| id == 0x11);
        Guest {
            m,
            queues: Vec::new(),
            pci_cfg,
            msix,
        }
    }

    fn read(&mut self, offset: u64, len: usize) -> u32 {
        let mut d = [0u8; 4];
        self.m.bar_read(0, offset, &mut d[..len]);
        u32::from_le_bytes(d)
    }

    fn write(&mut self, offset: u64, value: u32, len: usize) {
        self.m.bar_write(0, offset, &value.to_le_bytes()[..len]);
    }

    fn status(&mut self) -> u32 {
        self.read(DEVICE_STATUS, 1)
    }

    /// Moves BAR0 and turns decoding off and on again: the notify
    /// ioeventfds are removed and registered each time.
    fn move_registers(&mut self) {
        let queues = self.read(NUM_QUEUES, 2);
        self.m.cfg_write(0x10, MOVED_BAR0, 4);
        assert_eq!(self.m.bar(0), (true, u64::from(MOVED_BAR0)));
        let command = self.m.cfg_read(0x04, 2);
        self.m.cfg_write(0x04, command & !0x3, 2);
        self.m.cfg_write(0x04, command, 2);
        assert_eq!(
            self.read(NUM_QUEUES, 2),
            queues,
            "the registers moved along"
        );
    }

    /// Programs and unmasks every MSI-X vector and enables MSI-X: each
    /// table write re-routes the vector's GSI.
    fn enable_msix(&mut self) {
        let control = self.m.cfg_read(self.msix + 2, 2);
        let vectors = (control & 0x7ff) + 1;
        for v in 0..vectors {
            let entry = u64::from(v) * 16;
            for (offset, value) in [
                (0, 0xfee0_0000u32),
                (4, 0),
                (8, 0x30 + v),
                (12, 0), // unmasked
            ] {
                self.m.bar_write(1, entry + offset, &value.to_le_bytes());
            }
        }
        self.m.cfg_write(self.msix + 2, control | 0x8000, 2);
    }

    /// Resets the device and sets it up as Linux does, accepting every
    /// feature offered; DRIVER_OK activates it.
    fn start(&mut self) {
        self.write(DEVICE_STATUS, 0, 1);
        assert_eq!(self.status(), 0);
        self.write(DEVICE_STATUS, ACKNOWLEDGE, 1);
        self.write(DEVICE_STATUS, ACKNOWLEDGE | DRIVER, 1);
        for half in 0..2 {
            self.write(DEVICE_FEATURE_SELECT, half, 4);
            let offered = self.read(DEVICE_FEATURE, 4);
            self.write(DRIVER_FEATURE_SELECT, half, 4);
            self.write(DRIVER_FEATURE, offered, 4);
        }
        self.write(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK, 1);
        assert_ne!(self.status() & FEATURES_OK, 0, "features accepted");
        self.write(MSIX_CONFIG, 0, 2);
        let count = self.read(NUM_QUEUES, 2);
        self.queues.clear();
        for q in 0..count {
            self.write(QUEUE_SELECT, q, 2);
            let size = (self.read(QUEUE_SIZE, 2) as u16).min(128);
            self.write(QUEUE_SIZE, u32::from(size), 2);
            self.write(QUEUE_MSIX_VECTOR, q + 1, 2);
            let queue = DriverQueue::new(&self.m.mem, QUEUES_AT * (1 + u64::from(q)), size);
            for (register, addr) in [
                (QUEUE_DESC, queue.desc_table()),
                (QUEUE_DRIVER, queue.avail_ring()),
                (QUEUE_DEVICE, queue.used_ring()),
            ] {
                self.write(register, addr as u32, 4);
                self.write(register + 4, (addr >> 32) as u32, 4);
            }
            self.write(QUEUE_ENABLE, 1, 2);
            self.queues.push(queue);
        }
        self.write(
            DEVICE_STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
            1,
        );
        let status = self.status();
        assert_ne!(status & DRIVER_OK, 0, "DRIVER_OK kept");
        assert_eq!(status & NEEDS_RESET, 0, "the device works");
    }

    /// Kicks `queue` through the notify register.
    fn notify(&mut self, queue: usize) {
        self.write(NOTIFY, queue as u32, 2);
    }

    /// Kicks `queue` through the PCI configuration access window.
    fn notify_through_config(&mut self, queue: usize) {
        let cap = self.pci_cfg;
        self.m.cfg_write(cap + 4, 0, 1); // BAR0
        self.m.cfg_write(cap + 8, NOTIFY as u32, 4);
        self.m.cfg_write(cap + 12, 2, 4);
        self.m.cfg_write(cap + 16, queue as u32, 4);
    }

    /// The next completion on `queue`.
    fn wait_used(&mut self, queue: usize, what: &str) -> (u32, u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(done) = self.queues[queue].pop_used() {
                return done;
            }
            assert!(Instant::now() < deadline, "{what}: no completion");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn write_guest(&self, addr: u64, bytes: &[u8]) {
        self.m
            .mem
            .write_slice(bytes, GuestAddress(addr))
            .expect("guest memory");
    }

    fn read_guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.m
            .mem
            .read_slice(&mut bytes, GuestAddress(addr))
            .expect("guest memory");
        bytes
    }

    fn assert_working(&mut self, what: &str) {
        assert_eq!(self.status() & NEEDS_RESET, 0, "{what}: device broken");
    }
}

/// The vCPU thread: the whole life of the device as a guest drives it.
fn drive(kind: Kind, m: Machine, want_frame: mpsc::Sender<()>) -> Machine {
    let mut g = Guest::new(m);
    g.move_registers();
    g.enable_msix();
    for round in 0..2u8 {
        g.start();
        match kind {
            Kind::Blk => blk_work(&mut g, round),
            Kind::Net => net_work(&mut g, &want_frame),
            Kind::Scsi => scsi_work(&mut g),
            Kind::Rng => rng_work(&mut g),
        }
        g.assert_working("after the work");
        // The driver lets go: the reset path.
        g.write(DEVICE_STATUS, 0, 1);
        assert_eq!(g.status(), 0);
    }
    g.m
}

fn blk_work(g: &mut Guest, round: u8) {
    let (header, data, status) = (BUFFERS_AT, BUFFERS_AT + 0x1000, BUFFERS_AT + 0x2000);
    let pattern = vec![0xa0 + round; 512];
    g.write_guest(header, &header_bytes(VIRTIO_BLK_T_OUT, 3));
    g.write_guest(data, &pattern);
    g.queues[0].add_chain(&[
        Descriptor::readable(header, 16),
        Descriptor::readable(data, 512),
        Descriptor::writable(status, 1),
    ]);
    g.notify(0);
    g.wait_used(0, "write");
    assert_eq!(g.read_guest(status, 1), [0], "write status");

    let (header, data, status) = (
        BUFFERS_AT + 0x3000,
        BUFFERS_AT + 0x4000,
        BUFFERS_AT + 0x5000,
    );
    g.write_guest(header, &header_bytes(VIRTIO_BLK_T_IN, 3));
    g.queues[0].add_chain(&[
        Descriptor::readable(header, 16),
        Descriptor::writable(data, 512),
        Descriptor::writable(status, 1),
    ]);
    g.notify(0);
    g.wait_used(0, "read");
    assert_eq!(g.read_guest(status, 1), [0], "read status");
    assert_eq!(g.read_guest(data, 512), pattern);

    let (header, status) = (BUFFERS_AT + 0x6000, BUFFERS_AT + 0x7000);
    g.write_guest(header, &header_bytes(VIRTIO_BLK_T_FLUSH, 0));
    g.queues[0].add_chain(&[
        Descriptor::readable(header, 16),
        Descriptor::writable(status, 1),
    ]);
    g.notify_through_config(0);
    g.wait_used(0, "flush");
    assert_eq!(g.read_guest(status, 1), [0], "flush status");
}

/// virtio-net header with VIRTIO_NET_F_MRG_RXBUF (or VERSION_1).
const NET_HEADER: usize = 12;

fn net_work(g: &mut Guest, want_frame: &mpsc::Sender<()>) {
    const RX: usize = 0;
    const TX: usize = 1;
    const BUFFER: u64 = 2048;
    // With segmentation offloads the device reads the tap once its
    // buffers could hold a 64 KiB frame, as Linux's would.
    for i in 0..64 {
        g.queues[RX].add_chain(&[Descriptor::writable(BUFFERS_AT + i * BUFFER, BUFFER as u32)]);
    }
    g.notify(RX);
    // The host sends until the guest has its frame; the kernel may send
    // its own (IPv6 neighbour discovery) in between.
    let deadline = Instant::now() + Duration::from_secs(10);
    'received: loop {
        want_frame.send(()).expect("the host's side");
        std::thread::sleep(Duration::from_millis(5));
        while let Some((head, len)) = g.queues[RX].pop_used() {
            let at = BUFFERS_AT + u64::from(head) * BUFFER;
            let frame = g.read_guest(at, len as usize);
            if frame.len() >= NET_HEADER + 14
                && frame[NET_HEADER + 12..NET_HEADER + 14] == ETHERTYPE_TEST.to_be_bytes()
            {
                break 'received;
            }
        }
        assert!(
            Instant::now() < deadline,
            "receive: the host's frame never came"
        );
    }

    let at = BUFFERS_AT + 0x10_0000;
    let mut bytes = vec![0u8; NET_HEADER];
    bytes.extend_from_slice(&[0xff; 6]);
    bytes.extend_from_slice(&GUEST_MAC);
    bytes.extend_from_slice(&ETHERTYPE_TEST.to_be_bytes());
    bytes.extend_from_slice(&[0xa5; 46]);
    g.write_guest(at, &bytes);
    g.queues[TX].add_chain(&[Descriptor::readable(at, bytes.len() as u32)]);
    g.notify(TX);
    g.wait_used(TX, "transmit");
    // A transmit kick through the configuration window with nothing new
    // to send.
    g.notify_through_config(TX);
}

fn scsi_work(g: &mut Guest) {
    const CONTROL: usize = 0;
    const EVENT: usize = 1;
    const REQUEST: usize = 2;
    const SENSE_SIZE: u64 = 96;
    const CDB_SIZE: u64 = 32;
    // The driver may write the sense and CDB sizes (virtio 1.x §5.6.4).
    g.write(DEVICE_CONFIG + 20, SENSE_SIZE as u32, 4);
    g.write(DEVICE_CONFIG + 24, CDB_SIZE as u32, 4);

    // INQUIRY on the CD-ROM: header, response, data in.
    let (header, reply, data) = (BUFFERS_AT, BUFFERS_AT + 0x1000, BUFFERS_AT + 0x2000);
    let mut request = vec![1, 0, 0x40, 0, 0, 0, 0, 0]; // target 0, LUN 0
    request.extend_from_slice(&1u64.to_le_bytes());
    request.extend_from_slice(&[0, 0, 0]);
    let mut cdb = vec![0x12, 0, 0, 0, 36, 0];
    cdb.resize(CDB_SIZE as usize, 0);
    request.extend_from_slice(&cdb);
    g.write_guest(header, &request);
    g.queues[REQUEST].add_chain(&[
        Descriptor::readable(header, request.len() as u32),
        Descriptor::writable(reply, 12 + SENSE_SIZE as u32),
        Descriptor::writable(data, 36),
    ]);
    g.notify(REQUEST);
    g.wait_used(REQUEST, "INQUIRY");
    let response = g.read_guest(reply, 12);
    assert_eq!(response[11], 0, "VIRTIO_SCSI_S_OK");
    assert_eq!(g.read_guest(data, 1), [5], "a CD-ROM");

    // A logical unit reset on the control queue.
    let (tmf, tmf_reply) = (BUFFERS_AT + 0x3000, BUFFERS_AT + 0x4000);
    let mut request = 0u32.to_le_bytes().to_vec(); // VIRTIO_SCSI_T_TMF
    request.extend_from_slice(&5u32.to_le_bytes()); // LOGICAL_UNIT_RESET
    request.extend_from_slice(&[1, 0, 0x40, 0, 0, 0, 0, 0]);
    request.extend_from_slice(&2u64.to_le_bytes());
    g.write_guest(tmf, &request);
    g.queues[CONTROL].add_chain(&[
        Descriptor::readable(tmf, request.len() as u32),
        Descriptor::writable(tmf_reply, 1),
    ]);
    g.notify_through_config(CONTROL);
    g.wait_used(CONTROL, "task management");

    // An event buffer: the device keeps it for an event to come.
    g.queues[EVENT].add_chain(&[Descriptor::writable(BUFFERS_AT + 0x5000, 16)]);
    g.notify(EVENT);
    std::thread::sleep(Duration::from_millis(20));
}

fn rng_work(g: &mut Guest) {
    g.queues[0].add_chain(&[Descriptor::writable(BUFFERS_AT, 64)]);
    g.notify(0);
    let (_, len) = g.wait_used(0, "entropy");
    assert_eq!(len, 64);
    g.queues[0].add_chain(&[Descriptor::writable(BUFFERS_AT + 0x1000, 32)]);
    g.notify_through_config(0);
    let (_, len) = g.wait_used(0, "entropy through the window");
    assert_eq!(len, 32);
}
