//! Where vmd's messages go: stderr in the foreground (`-d`, `-n`), syslog
//! (facility daemon, ident `vmd`) otherwise. Verbosity follows `-v` and
//! `vmctl log`, in the daemon and in every VM process.
//!
//! The syslog client is ours rather than syslog(3): glibc's blocks when
//! the log socket's queue is full, and a stalled syslog daemon (or a
//! chatty guest's firmware log at debug level) must never stop vmd from
//! answering vmctl or a vCPU from running. Messages that find the queue
//! full are dropped and counted, and the count is logged once the queue
//! drains, as OpenBSD's sendsyslog(2) does.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Stderr,
    Syslog,
}

type ReloadHandle = reload::Handle<LevelFilter, tracing_subscriber::Registry>;

static HANDLE: OnceLock<ReloadHandle> = OnceLock::new();

/// The level for a verbosity: 0 is informational, 1 and more add debug
/// messages, 3 and more add trace messages.
pub fn level_for(verbosity: u8) -> LevelFilter {
    match verbosity {
        0 => LevelFilter::INFO,
        1 | 2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Installs the global logger.
pub fn init(destination: Destination, verbosity: u8) {
    let (filter, handle) = reload::Layer::new(level_for(verbosity));
    let _ = HANDLE.set(handle);
    if destination == Destination::Syslog {
        // The first local time read loads the time zone, which a VM
        // process cannot once it is confined.
        let _ = timestamp();
        let _ = SYSLOG.set(Syslog::connect());
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(LineLayer { destination })
        .try_init();
}

/// Changes the verbosity at run time.
pub fn set_verbosity(verbosity: u8) {
    if let Some(handle) = HANDLE.get() {
        let _ = handle.modify(|f| *f = level_for(verbosity));
    }
}

/// Formats each event as one line: its message, then any fields.
struct LineLayer {
    destination: Destination,
}

struct MessageVisitor(String);

impl tracing::field::Visit for MessageVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        let level = *event.metadata().level();
        match self.destination {
            Destination::Stderr => {
                let prefix = match level {
                    Level::ERROR => "error: ",
                    Level::WARN => "warning: ",
                    Level::DEBUG | Level::TRACE => "debug: ",
                    Level::INFO => "",
                };
                let _ = writeln!(std::io::stderr(), "{prefix}{}", visitor.0);
            }
            Destination::Syslog => {
                let priority = match level {
                    Level::ERROR => libc::LOG_ERR,
                    Level::WARN => libc::LOG_WARNING,
                    Level::INFO => libc::LOG_INFO,
                    Level::DEBUG | Level::TRACE => libc::LOG_DEBUG,
                };
                if let Some(syslog) = SYSLOG.get() {
                    syslog.log(priority, &visitor.0);
                }
            }
        }
    }
}

/// The path syslog daemons (rsyslog, syslog-ng, journald) listen on.
const LOG_SOCKET: &str = "/dev/log";

static SYSLOG: OnceLock<Syslog> = OnceLock::new();

/// A syslog client that never blocks.
struct Syslog {
    socket: Mutex<Option<UnixDatagram>>,
    pid: u32,
    dropped: AtomicU64,
}

impl Syslog {
    fn connect() -> Syslog {
        Syslog {
            socket: Mutex::new(open_log_socket()),
            pid: std::process::id(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Sends one message at facility daemon; drops it if syslog cannot
    /// take it now.
    fn log(&self, priority: i32, text: &str) {
        let mut socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        if send(&mut socket, &self.format(priority, text)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let note = self.format(libc::LOG_WARNING, &format!("dropped {dropped} messages"));
            if send(&mut socket, &note).is_err() {
                self.dropped.fetch_add(dropped, Ordering::Relaxed);
            }
        }
    }

    /// `<PRI>Mmm dd hh:mm:ss vmd[PID]: TEXT`, as syslog(3) writes it.
    fn format(&self, priority: i32, text: &str) -> String {
        format!(
            "<{}>{} vmd[{}]: {}",
            libc::LOG_DAEMON | priority,
            timestamp(),
            self.pid,
            text.replace('\0', " ")
        )
    }
}

fn open_log_socket() -> Option<UnixDatagram> {
    let socket = UnixDatagram::unbound().ok()?;
    socket.connect(LOG_SOCKET).ok()?;
    Some(socket)
}

/// Sends without waiting. A syslog daemon that restarted has a new
/// socket: one reconnection is tried (in a confined VM process making a
/// socket is refused, so it only ever uses the socket it started with).
fn send(socket: &mut Option<UnixDatagram>, line: &str) -> std::io::Result<()> {
    let attempt = |s: &UnixDatagram| {
        use std::os::fd::AsRawFd;
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        // SAFETY: a valid descriptor and a buffer of the given length.
        let n = unsafe { libc::send(s.as_raw_fd(), line.as_ptr().cast(), line.len(), flags) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let result = match socket.as_ref() {
        Some(s) => attempt(s),
        None => Err(std::io::Error::from_raw_os_error(libc::ENOTCONN)),
    };
    match result {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::EPIPE)
            ) =>
        {
            *socket = open_log_socket();
            socket.as_ref().map_or(Err(e), attempt)
        }
        other => other,
    }
}

/// The local time as `Mmm dd hh:mm:ss`.
fn timestamp() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) writes nowhere.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: libc::tm is plain integers (and a pointer that may be null):
    // all zeros is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live values of the right types.
    unsafe { libc::localtime_r(&now, &mut tm) };
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fifteen_characters() {
        let stamp = timestamp();
        assert_eq!(stamp.len(), 15, "{stamp:?}");
        assert_eq!(&stamp[6..7], " ");
    }

    #[test]
    fn a_full_log_queue_drops_and_counts_instead_of_blocking() {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let syslog = Syslog {
            socket: Mutex::new(Some(ours)),
            pid: 42,
            dropped: AtomicU64::new(0),
        };
        // Nobody reads: the queue fills, and logging carries on.
        let started = std::time::Instant::now();
        for i in 0..5000 {
            syslog.log(libc::LOG_DEBUG, &format!("line {i}"));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let dropped = syslog.dropped.load(Ordering::Relaxed);
        assert!(dropped > 0, "the queue never filled");
        // Once read, the next message gets through, followed by the count.
        theirs.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        while theirs.recv(&mut buf).is_ok() {}
        syslog.log(libc::LOG_INFO, "after");
        let n = theirs.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            line.starts_with("<30>") && line.ends_with(" vmd[42]: after"),
            "{line}"
        );
        let n = theirs.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            line.ends_with(&format!("vmd[42]: dropped {dropped} messages")),
            "{line}"
        );
        assert!(line.starts_with("<28>"), "{line}");
    }
}
