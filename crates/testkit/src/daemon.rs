//! A private vmd for one test: its own socket (`VMD_SOCKET`), its own log,
//! stopped when the test ends.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::tmp::TempDir;

/// Where the built vmd and vmctl are: `VMD_BIN_DIR`, else the target
/// directory the running test binary lives in (`target/<profile>/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VMD_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// What each open descriptor of process `pid` is (`/proc/<pid>/fd`'s
/// links: a path, `socket:[…]`, `pipe:[…]`), for counting what a daemon
/// keeps open and naming it when it keeps too much.
pub fn open_descriptors(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .collect()
}

/// The processes whose environment names `socket` as VMD_SOCKET: a vmd
/// started on it (and its VM processes) after it detached, for a test to
/// find and stop them.
pub fn processes_on(socket: &Path) -> Vec<i32> {
    let ours = format!("VMD_SOCKET={}", socket.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .unwrap_or_default()
                .split(|&b| b == 0)
                .any(|var| var == ours.as_bytes())
        })
        .collect()
}

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Runs vmctl against the daemon listening on `socket`.
pub fn vmctl_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(binary("vmctl"))
        .args(args)
        .env("VMD_SOCKET", socket)
        .stdin(Stdio::null())
        .output()
        .expect("run vmctl")
}

/// Debian's SeaBIOS (package `seabios`), the firmware the end-to-end tests
/// boot.
pub const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// `start -b SEABIOS -m 64M <extra> <name>`.
fn seabios_start_args<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["start", "-b", SEABIOS, "-m", "64M"];
    args.extend_from_slice(extra);
    args.push(name);
    args
}

/// `text` without ANSI escape sequences (ESC, then either `[` with
/// parameters and a final letter, or one more character). SeaBIOS's serial
/// console draws the text screen with cursor moves, and flushes it when
/// the firmware next gets control, so its escapes can land in the middle
/// of a boot loader's own serial output.
pub fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

/// One running vmd.
pub struct TestDaemon {
    dir: TempDir,
    pub socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl TestDaemon {
    /// Starts `vmd -d -vv` and waits for its socket.
    pub fn start() -> TestDaemon {
        TestDaemon::start_with(&[])
    }

    /// Starts vmd with extra arguments (e.g. `-f file`).
    pub fn start_with(args: &[&str]) -> TestDaemon {
        TestDaemon::start_with_env(args, &[])
    }

    /// Starts vmd with extra arguments and environment variables.
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> TestDaemon {
        let mut command = Command::new(binary("vmd"));
        command.envs(envs.iter().copied());
        TestDaemon::spawn(command, args)
    }

    /// Starts vmd inside network namespace `netns` (see
    /// [`crate::netns::NetNs`]): its taps and bridges are made there.
    pub fn start_in_netns(netns: &str, args: &[&str]) -> TestDaemon {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns]).arg(binary("vmd"));
        TestDaemon::spawn(command, args)
    }

    fn spawn(mut command: Command, args: &[&str]) -> TestDaemon {
        let dir = TempDir::new("daemon");
        let socket = dir.join("vmd.sock");
        let log = dir.join("vmd.log");
        let log_file = std::fs::File::create(&log).expect("create vmd log");
        let child = command
            .args(["-d", "-vv"])
            .args(args)
            .env("VMD_SOCKET", &socket)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("start vmd");
        let daemon = TestDaemon {
            dir,
            socket,
            log,
            child: Some(child),
        };
        daemon.wait_for(
            || daemon.socket.exists(),
            Duration::from_secs(10),
            "vmd socket",
        );
        daemon
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Runs vmctl against this daemon.
    pub fn vmctl(&self, args: &[&str]) -> Output {
        vmctl_at(&self.socket, args)
    }

    /// Runs vmctl with the given stdin and stdout (files for `send` and
    /// `receive`); stderr is captured.
    pub fn vmctl_io(&self, args: &[&str], stdin: Stdio, stdout: Stdio) -> Output {
        Command::new(binary("vmctl"))
            .args(args)
            .env("VMD_SOCKET", &self.socket)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .expect("run vmctl")
    }

    /// Runs vmctl and insists that it succeeds; returns its stdout.
    pub fn vmctl_ok(&self, args: &[&str]) -> String {
        let out = self.vmctl(args);
        assert!(
            out.status.success(),
            "vmctl {args:?} failed: {}\n--- vmd log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Ends `name` with `vmctl stop -f`, or finds that it has ended: a
    /// guest whose last act powers the VM off or resets it (GRUB's `halt`,
    /// a reset loop the restart limit ends) may beat the request, and vmctl
    /// then answers that the VM is not found or not running. Either way the
    /// VM does not run when this returns.
    pub fn stop_or_find_ended(&self, name: &str) {
        let out = self.vmctl(&["stop", "-f", name]);
        if out.status.success() {
            return;
        }
        let refused = String::from_utf8_lossy(&out.stderr).into_owned();
        self.wait_for(
            || self.status_row(name).is_none_or(|row| row[7] != "running"),
            Duration::from_secs(10),
            &format!("{name} to have ended (vmctl stop -f said: {refused})"),
        );
    }

    /// The row of `name` in `vmctl status`, split into columns.
    pub fn status_row(&self, name: &str) -> Option<Vec<String>> {
        String::from_utf8_lossy(&self.vmctl(&["status"]).stdout)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .find(|cols| cols.last().map(String::as_str) == Some(name))
    }

    /// The VM process of the running VM `name`: the PID column of
    /// `vmctl status`.
    pub fn vm_pid(&self, name: &str) -> u32 {
        let row = self
            .status_row(name)
            .unwrap_or_else(|| panic!("{name} is not listed"));
        row[1]
            .parse()
            .unwrap_or_else(|_| panic!("{name} has no VM process: {row:?}"))
    }

    /// `vmctl start` of a new VM `name` booting SeaBIOS with 64 MiB and
    /// `extra` options.
    pub fn start_seabios_vm(&self, name: &str, extra: &[&str]) -> Output {
        self.vmctl(&seabios_start_args(name, extra))
    }

    /// [`TestDaemon::start_seabios_vm`], insisting that it succeeds.
    pub fn start_seabios_vm_ok(&self, name: &str, extra: &[&str]) {
        self.vmctl_ok(&seabios_start_args(name, extra));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `check` until it holds; panics with the daemon log otherwise.
    pub fn wait_for(&self, check: impl Fn() -> bool, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}\n--- vmd log ---\n{}",
            self.log()
        );
    }

    /// Waits for `needle` in the daemon's log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        self.wait_for(|| self.log().contains(needle), timeout, needle);
    }

    /// Attaches `vmctl console` (stdin not a terminal) and reads guest output
    /// until `needle` appears; returns everything read. Panics on timeout.
    pub fn console_until(&self, vm: &str, needle: &str, timeout: Duration) -> String {
        let mut session = self.console(vm);
        match session.read_until(needle, timeout) {
            Ok(text) => text,
            Err(text) => panic!(
                "console of {vm} did not show {needle:?} within {timeout:?}; got:\n{text}\n--- vmd log ---\n{}",
                self.log()
            ),
        }
    }

    /// Starts a console session whose output can be read as it comes.
    pub fn console(&self, vm: &str) -> ConsoleSession {
        let mut child = Command::new(binary("vmctl"))
            .args(["console", vm])
            .env("VMD_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run vmctl console");
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("console stdout");
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        ConsoleSession {
            child,
            output,
            reader: Some(reader),
        }
    }

    /// Sends SIGTERM and waits for vmd to exit; returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A running `vmctl console`.
pub struct ConsoleSession {
    pub child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ConsoleSession {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits for `needle`; `Err` carries what was read if it never came.
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if text.contains(needle) {
                return Ok(text);
            }
            if Instant::now() >= deadline {
                return Err(text);
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                // The client ended: give the reader a moment, then decide.
                std::thread::sleep(Duration::from_millis(100));
                let text = self.text();
                return if text.contains(needle) {
                    Ok(text)
                } else {
                    Err(text)
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the client to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for ConsoleSession {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strip_escapes;

    #[test]
    fn escapes_are_stripped_where_they_land() {
        assert_eq!(
            strip_escapes("\x1b[0;30;47mWelco\x1b[05;05H\x1b[05;06Hme to GRUB\x1bc!"),
            "Welcome to GRUB!"
        );
        assert_eq!(strip_escapes("plain\r\n"), "plain\r\n");
    }
}
