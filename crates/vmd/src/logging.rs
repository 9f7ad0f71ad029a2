//! Where vmd's messages go: stderr in the foreground (`-d`, `-n`), syslog
//! (facility daemon, ident `vmd`) otherwise. Verbosity follows `-v` and
//! `vmctl log`, in the daemon and in every VM process.

use std::ffi::CString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;

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
        // SAFETY: the ident must stay valid for the life of the process;
        // leaking the CString guarantees that.
        unsafe {
            let ident = Box::leak(Box::new(CString::new("vmd").unwrap_or_default()));
            libc::openlog(
                ident.as_ptr(),
                libc::LOG_PID | libc::LOG_NDELAY,
                libc::LOG_DAEMON,
            );
        }
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
                let text = CString::new(visitor.0.replace('\0', " ")).unwrap_or_default();
                // SAFETY: a constant format string and a valid C string.
                unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
            }
        }
    }
}
