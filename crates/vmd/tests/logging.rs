//! vmd without -d: it detaches with its control socket already listening
//! (what systemd's Type=forking waits for), and it and its VM processes
//! log through syslog(3) with the identity `vmd`, facility daemon and each
//! message's priority; `vmctl log verbose` and `brief` change the level of
//! the running daemon.
//!
//! The daemon runs in a private mount namespace whose /dev is the host's
//! with one change: /dev/log, where syslog(3) sends its datagrams, is a
//! socket this test reads. So the test sees exactly what journald or a
//! syslog daemon would receive, on hosts with or without one. Needs root.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::daemon::{binary, vmctl_at};
use testkit::tmp::TempDir;

const BIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// LOG_DAEMON and the priorities, as in <syslog.h>.
const LOG_DAEMON: u32 = 3 << 3;
const LOG_WARNING: u32 = 4;
const LOG_INFO: u32 = 6;
const LOG_DEBUG: u32 = 7;

/// Makes /dev/log the socket "$1/log", keeping the rest of /dev (device
/// nodes, the mounts under /dev, symbolic links), then runs vmd ("$2")
/// with the remaining arguments.
const LAUNCH: &str = r#"set -e
mount --make-rprivate /
old="$1/dev"
mkdir "$old"
mount --rbind /dev "$old"
mount -t tmpfs -o mode=0755 vmd-test-dev /dev
for entry in "$old"/* "$old"/.[!.]*; do
    name=${entry##*/}
    if [ "$name" = log ] || { [ ! -e "$entry" ] && [ ! -L "$entry" ]; }; then
        continue
    fi
    if [ -L "$entry" ]; then
        cp -P "$entry" "/dev/$name"
    elif [ -c "$entry" ] || [ -b "$entry" ]; then
        # A node of its own: a bound /dev/ptmx would not find /dev/pts.
        type=c
        [ -b "$entry" ] && type=b
        mknod "/dev/$name" "$type" $(stat -c '0x%t 0x%T' "$entry")
        chown --reference="$entry" "/dev/$name"
        chmod --reference="$entry" "/dev/$name"
    elif [ -d "$entry" ]; then
        mkdir "/dev/$name"
        mount --rbind "$entry" "/dev/$name"
    else
        touch "/dev/$name"
        mount --bind "$entry" "/dev/$name"
    fi
done
touch /dev/log
mount --bind "$1/log" /dev/log
vmd=$2
shift 2
exec "$vmd" "$@"
"#;

/// One syslog datagram: `<PRI>Mmm dd hh:mm:ss IDENT[PID]: TEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    priority: u32,
    ident: String,
    pid: i32,
    text: String,
}

fn parse(datagram: &[u8]) -> Message {
    fn bad(line: &str) -> ! {
        panic!("not a syslog message: {line:?}")
    }
    let line = String::from_utf8_lossy(datagram).into_owned();
    let (priority, rest) = line
        .strip_prefix('<')
        .and_then(|r| r.split_once('>'))
        .unwrap_or_else(|| bad(&line));
    // The timestamp is 15 characters and a blank.
    let rest = rest.get(16..).unwrap_or_else(|| bad(&line));
    let (tag, text) = rest.split_once(": ").unwrap_or_else(|| bad(&line));
    let (ident, pid) = tag
        .strip_suffix(']')
        .and_then(|t| t.split_once('['))
        .unwrap_or_else(|| bad(&line));
    Message {
        priority: priority.parse().unwrap_or_else(|_| bad(&line)),
        ident: ident.to_string(),
        pid: pid.parse().unwrap_or_else(|_| bad(&line)),
        text: text.to_string(),
    }
}

/// A vmd started without -d, and the syslog socket it writes to.
struct DetachedDaemon {
    dir: TempDir,
    socket: PathBuf,
    log: UnixDatagram,
    /// Every message received so far.
    received: Vec<Message>,
    /// The daemon's pid, from its first message.
    pid: i32,
}

impl DetachedDaemon {
    fn start(args: &[&str]) -> DetachedDaemon {
        let dir = TempDir::new("syslog");
        let log = UnixDatagram::bind(dir.join("log")).expect("bind the log socket");
        let socket = dir.join("vmd.sock");
        let launched: Output = Command::new("unshare")
            .args(["--mount", "sh", "-c", LAUNCH, "launch"])
            .arg(dir.path())
            .arg(binary("vmd"))
            .args(args)
            .env("VMD_SOCKET", &socket)
            .stdin(Stdio::null())
            .output()
            .expect("run unshare (util-linux)");
        // The process we started has exited: vmd detached. Its control
        // socket must already be there.
        assert!(
            launched.status.success(),
            "vmd: {}",
            String::from_utf8_lossy(&launched.stderr)
        );
        assert!(socket.exists(), "vmd detached before its socket listened");
        // Nothing on the terminal: everything goes to syslog.
        assert_eq!(String::from_utf8_lossy(&launched.stdout), "");
        assert_eq!(String::from_utf8_lossy(&launched.stderr), "");
        let mut daemon = DetachedDaemon {
            dir,
            socket,
            log,
            received: Vec::new(),
            pid: 0,
        };
        let startup = daemon.wait_for(|m| m.text == "startup");
        daemon.pid = startup.pid;
        daemon
    }

    /// Reads every datagram that arrived, without waiting.
    fn drain(&mut self) -> Vec<Message> {
        self.log.set_nonblocking(true).unwrap();
        let mut new = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = self.log.recv(&mut buf) {
            new.push(parse(&buf[..n]));
        }
        self.received.extend(new.iter().cloned());
        new
    }

    /// Waits up to a minute for a message that `matches`.
    fn wait_for(&mut self, matches: impl Fn(&Message) -> bool) -> Message {
        let deadline = Instant::now() + Duration::from_secs(60);
        if let Some(m) = self.received.iter().find(|m| matches(m)) {
            return m.clone();
        }
        self.log.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 8192];
        while Instant::now() < deadline {
            self.log
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            if let Ok(n) = self.log.recv(&mut buf) {
                let message = parse(&buf[..n]);
                self.received.push(message.clone());
                if matches(&message) {
                    return message;
                }
            }
        }
        panic!("no such message; received: {:#?}", self.received);
    }

    /// Runs vmctl and insists that it succeeds.
    fn vmctl(&self, args: &[&str]) {
        let output = vmctl_at(&self.socket, args);
        assert!(
            output.status.success(),
            "vmctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `vmctl status`, which exits 1 when no VM is listed; only its
    /// conversation with the daemon matters here.
    fn status(&self) {
        let output = vmctl_at(&self.socket, &["status"]);
        assert!(String::from_utf8_lossy(&output.stdout).starts_with("   ID   PID"));
    }

    /// The debug messages of the daemon itself among `messages`.
    fn daemon_debug<'a>(&self, messages: &'a [Message]) -> Vec<&'a Message> {
        messages
            .iter()
            .filter(|m| m.pid == self.pid && m.priority == LOG_DAEMON | LOG_DEBUG)
            .collect()
    }
}

/// Every process that has our control socket in its environment.
fn our_processes(socket: &std::path::Path) -> Vec<i32> {
    let needle = format!("VMD_SOCKET={}\0", socket.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

impl Drop for DetachedDaemon {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        if self.pid > 0 {
            // SAFETY: signalling the daemon this test started.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
        }
        while !our_processes(&self.socket).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in our_processes(&self.socket) {
            // SAFETY: a process of this test's daemon that outlived it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = &self.dir;
    }
}

#[test]
fn detached_vmd_logs_to_syslog_as_vmd() {
    testkit::needs!(root, kvm);
    let dir = TempDir::new("syslog-conf");
    let conf = dir.join("vm.conf");
    // A setting vmd warns about, for a message of another priority.
    std::fs::write(&conf, "agentx\n").unwrap();
    let mut daemon = DetachedDaemon::start(&["-f", conf.to_str().unwrap()]);

    let startup = daemon.wait_for(|m| m.text == "startup");
    assert_eq!(startup.ident, "vmd");
    assert_eq!(startup.priority, LOG_DAEMON | LOG_INFO);
    // The pid is the detached daemon's, not the one the test started.
    assert_eq!(our_processes(&daemon.socket), [startup.pid]);

    let warning = daemon.wait_for(|m| m.text.contains("agentx"));
    assert_eq!(warning.priority, LOG_DAEMON | LOG_WARNING);
    assert_eq!((warning.ident.as_str(), warning.pid), ("vmd", daemon.pid));

    // Without -v there are no debug messages.
    daemon.status();
    let drained = daemon.drain();
    assert!(daemon.daemon_debug(&drained).is_empty(), "{drained:#?}");

    // SIGTERM: the daemon says so in the log and goes away.
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(daemon.pid, libc::SIGTERM) };
    let last = daemon.wait_for(|m| m.text == "terminating");
    assert_eq!(
        (last.pid, last.priority),
        (daemon.pid, LOG_DAEMON | LOG_INFO)
    );
}

#[test]
fn vmctl_log_changes_the_level_at_run_time() {
    testkit::needs!(root, kvm);
    let mut daemon = DetachedDaemon::start(&[]);
    daemon.drain();

    // Each client connection is a debug message; vmctl returns after the
    // daemon accepted it, and a datagram to /dev/log arrives before
    // syslog(3) returns, so what drain() finds is complete.
    daemon.status();
    let brief = daemon.drain();
    assert!(daemon.daemon_debug(&brief).is_empty(), "{brief:#?}");

    daemon.vmctl(&["log", "verbose"]);
    daemon.status();
    let verbose = daemon.drain();
    let debug = daemon.daemon_debug(&verbose);
    assert!(
        debug.iter().any(|m| m.text.contains("connected")),
        "{verbose:#?}"
    );
    assert!(debug.iter().all(|m| m.ident == "vmd"));

    // A VM started now logs through syslog too, from its own process,
    // at debug level: the firmware's debug output.
    daemon.vmctl(&["start", "-b", BIOS, "logged"]);
    let firmware = daemon.wait_for(|m| m.text.starts_with("logged: firmware: "));
    assert_eq!(firmware.ident, "vmd");
    assert_eq!(firmware.priority, LOG_DAEMON | LOG_DEBUG);
    assert_ne!(firmware.pid, daemon.pid, "logged by the VM's process");
    assert!(our_processes(&daemon.socket).contains(&firmware.pid));

    daemon.vmctl(&["log", "brief"]);
    daemon.drain();
    daemon.status();
    let brief_again = daemon.drain();
    assert!(
        daemon.daemon_debug(&brief_again).is_empty(),
        "{brief_again:#?}"
    );
    daemon.vmctl(&["stop", "-f", "-w", "logged"]);
}
