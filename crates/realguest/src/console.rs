//! A guest's serial console as a user has it: `vmctl console NAME` on a
//! terminal (a pty the harness holds the other side of), so `~.` and the
//! raw-mode relay are the ones a person at a terminal gets.
//!
//! The guest runs a shell on its console. [`Console::run`] types a command
//! followed by an `echo` of a marker built at run time (`@@"'"'"'end-N`
//! typed, `@@end-N` printed), so the terminal's echo of what was typed
//! never matches and the command's output is what lies between the echo
//! and the marker.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One attached `vmctl console`.
pub struct Console {
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    /// How much of `output` earlier waits have consumed.
    seen: usize,
}

/// Markers are numbered across every console of the process: a console
/// attached again replays the guest's history, whose old markers must not
/// answer a new command.
static NEXT_MARKER: AtomicU32 = AtomicU32::new(0);

fn next_marker() -> u32 {
    NEXT_MARKER.fetch_add(1, Ordering::Relaxed) + 1
}

/// The last line of `text` with something on it, trimmed, at most `max`
/// characters: what a guest was doing when a wait gave up.
pub fn last_line(text: &str, max: usize) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(max)
        .collect()
}

/// A pty pair: the master end and the slave end.
fn openpty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut master = -1;
    let mut slave = -1;
    // SAFETY: openpty writes two descriptors into the integers we pass and
    // reads nothing else (null name, termios and winsize).
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so master is an open descriptor we own.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: and so is slave.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok((master, slave))
}

impl Console {
    /// Attaches `vmctl console vm` against the daemon at `socket`.
    pub fn attach(vmctl: &Path, socket: &Path, vm: &str) -> std::io::Result<Console> {
        let (master, slave) = openpty()?;
        let slave = File::from(slave);
        let mut command = Command::new(vmctl);
        command
            .args(["console", vm])
            .env("VMD_SOCKET", socket)
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // The child makes the pty (its stdin) its controlling terminal, as
        // a login shell's terminal is.
        let take_terminal = || {
            // SAFETY: setsid has no preconditions.
            if unsafe { libc::setsid() } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: TIOCSCTTY on standard input takes an integer.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: between fork and exec the closure makes two system calls,
        // both async-signal-safe, and allocates nothing.
        unsafe { command.pre_exec(take_terminal) };
        let child = command.spawn()?;
        let master = File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone()?;
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last slave descriptor is closed: the client ended.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Ok(Console {
            child,
            master,
            output,
            seen: 0,
        })
    }

    /// Everything the console showed since it was attached.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Types `bytes` as they are.
    pub fn type_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        // The UART takes input a byte at a time; a burst larger than its
        // FIFO is paced by the pty, so one write is fine.
        self.master.write_all(bytes)?;
        self.master.flush()
    }

    /// Waits until a line containing `needle` appears after what earlier
    /// waits consumed; returns that line and consumes up to its end.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let out = self.output.lock().unwrap();
                let fresh = String::from_utf8_lossy(&out[self.seen..]).into_owned();
                if let Some(at) = fresh.find(needle) {
                    let start = fresh[..at].rfind('\n').map_or(0, |i| i + 1);
                    if let Some(end) = fresh[at..].find('\n') {
                        let line = fresh[start..at + end].trim_end_matches('\r').to_string();
                        self.seen += fresh[..at + end + 1].len();
                        return Ok(line);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no line with {needle:?} within {timeout:?}"));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Leave the reader a moment to drain what came last.
                std::thread::sleep(Duration::from_millis(200));
                let out = self.output.lock().unwrap();
                let fresh = String::from_utf8_lossy(&out[self.seen..]).into_owned();
                if !fresh.contains(needle) {
                    return Err(format!(
                        "the console client ended ({status}) before a line with {needle:?}"
                    ));
                }
                continue;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `command` in the guest's shell and returns its output (stdout
    /// and stderr, as the console shows them) and exit status.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<(String, i32), String> {
        let n = next_marker();
        // The quotes split the marker as typed; the shell prints it whole.
        let typed = format!("{command}; echo \"@@\"'end-{n}' $?\r");
        self.type_raw(typed.as_bytes()).map_err(|e| e.to_string())?;
        let start = self.seen;
        let line = self
            .wait_line(&format!("@@end-{n} "), timeout)
            .map_err(|e| self.interrupt(command, &e))?;
        let status = line
            .rsplit(' ')
            .next()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(-1);
        let out = self.output.lock().unwrap();
        let text = String::from_utf8_lossy(&out[start..self.seen]).into_owned();
        // The output follows the echo of the typed line and ends before
        // the marker's line.
        let body = text
            .split_once(&format!("'end-{n}' $?"))
            .map_or(text.as_str(), |(_, rest)| rest);
        let body = body.rsplit_once("@@end-").map_or(body, |(b, _)| b);
        Ok((body.replace('\r', "").trim().to_string(), status))
    }

    /// After a command did not finish: interrupts it (^C), so the shell
    /// takes the next one, and describes the failure with what the
    /// console showed last.
    fn interrupt(&mut self, command: &str, error: &str) -> String {
        let _ = self.type_raw(b"\x03");
        std::thread::sleep(Duration::from_secs(1));
        self.skip_seen();
        let text = testkit::daemon::strip_escapes(&self.text());
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
        format!("`{command}`: {error}; the console showed: {tail}")
    }

    /// [`Console::run`], insisting on exit status 0.
    pub fn run_ok(&mut self, command: &str, timeout: Duration) -> Result<String, String> {
        match self.run(command, timeout)? {
            (out, 0) => Ok(out),
            (out, status) => Err(format!("`{command}` exited {status}: {out}")),
        }
    }

    /// Detaches the way a person does: `~.` at the start of a line.
    /// Returns whether the client then ended.
    pub fn detach(&mut self, timeout: Duration) -> bool {
        if self.type_raw(b"\r~.").is_err() {
            return false;
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Whether the client is still attached.
    pub fn attached(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Consumes what the console showed so far: later waits look only at
    /// what comes after.
    pub fn skip_seen(&mut self) {
        self.seen = self.output.lock().unwrap().len();
    }

    /// Prints `expr`'s output in the guest and returns it: the line comes
    /// after a marker built at run time, so the echo of what was typed
    /// never matches.
    pub fn query(&mut self, expr: &str, timeout: Duration) -> Result<String, String> {
        let n = next_marker();
        let typed = format!("echo \"@@\"'q-{n}' \"{expr}\"\r");
        self.type_raw(typed.as_bytes()).map_err(|e| e.to_string())?;
        let needle = format!("@@q-{n} ");
        let line = self
            .wait_line(&needle, timeout)
            .map_err(|e| self.interrupt(expr, &e))?;
        Ok(line
            .split_once(&needle)
            .map_or("", |(_, v)| v)
            .trim()
            .to_string())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
