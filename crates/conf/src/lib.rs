//! vm.conf, vmd's configuration file (spec/vmconf.md): lexer, parser and the
//! typed model the daemon applies.
//!
//! # Entry points
//!
//! * [`load`] reads a file the way vmd does at start-up, on `reload`
//!   (`Origin::Default` for the default path, `Origin::Explicit` for `-f`)
//!   and on `vmctl load` (`Origin::Explicit`), and returns either the
//!   [`Config`] with its [`Warning`]s or every error found ([`Rejected`]).
//! * [`check`] is `vmd -n`: the lines to print on stderr and whether the
//!   file is valid (`configuration OK`, exit 0) or not (exit 1).
//! * [`load_with`], [`parse`] and [`check_with`] do the same against any
//!   [`Host`] (see [`MemoryHost`] for tests).
//!
//! ```
//! use conf::{LoadOptions, MemoryHost, Origin};
//!
//! let host = MemoryHost::new().file("/vm.conf", "switch \"lan\" {\n interface br0\n}\n");
//! let loaded = conf::load_with(&host, "/vm.conf", &LoadOptions::default()).unwrap();
//! assert_eq!(loaded.config.switches[0].interface, "br0");
//! let check = conf::check_with(&host, "/missing.conf", &LoadOptions {
//!     origin: Origin::Explicit,
//!     ..LoadOptions::default()
//! });
//! assert_eq!(check.lines, ["failed to open /missing.conf", "configuration OK"]);
//! ```

mod diagnostics;
mod host;
mod lexer;
mod macros;
pub mod model;
mod parser;
mod values;

pub use diagnostics::{Diagnostic, Location, Warning};
pub use host::{Host, MemoryHost, SystemHost};
pub use macros::{Define, DefineError};
pub use model::{
    Agentx, Config, GlobalOptions, GlobalSettings, InstancePermissions, Interface, Ipv4Prefix,
    Ipv6Prefix, LocalInet6, MacAddr, Owner, SocketOwner, StaggeredStart, Switch, Tap, Vm,
};

use host::{error_text, is_not_found};
use parser::Parser;

/// The configuration file vmd reads when not given `-f`.
pub const DEFAULT_PATH: &str = "/etc/vm.conf";

/// How the main file was named, which decides what a missing file means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// The default path: a missing file is an empty configuration.
    #[default]
    Default,
    /// Given with `vmd -f` or `vmctl load`: a missing file is an empty
    /// configuration plus the warning `failed to open <file>`.
    Explicit,
}

/// How to read a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// `vmd -D name=value` definitions; they override the file's.
    pub defines: Vec<Define>,
    pub origin: Origin,
    /// Id of the file's first switch. 1 for a complete configuration
    /// (start-up, `reload`); for `vmctl load`, one more than the highest
    /// id the daemon has given out, so ids stay unique.
    pub first_switch_id: u32,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            defines: Vec::new(),
            origin: Origin::Default,
            first_switch_id: 1,
        }
    }
}

/// A configuration that parsed without errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: Config,
    /// Warnings in the order found; print the non-[debug](Warning::is_debug)
    /// ones on stderr (or log them).
    pub warnings: Vec<Warning>,
}

/// A configuration with errors: none of it may be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Every error, in file order (includes in place), at least one.
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Warning>,
}

impl Rejected {
    /// The errors as vmd prints them, `file:line: message`.
    pub fn error_lines(&self) -> Vec<String> {
        self.errors.iter().map(ToString::to_string).collect()
    }
}

/// Reads and parses `path` from the file system with the system's user and
/// group databases.
pub fn load(path: &str, options: &LoadOptions) -> Result<Loaded, Rejected> {
    load_with(&SystemHost, path, options)
}

/// [`load`] against any [`Host`].
pub fn load_with(host: &dyn Host, path: &str, options: &LoadOptions) -> Result<Loaded, Rejected> {
    match host.read_file(path) {
        Ok(text) => parse(host, path, text, options),
        Err(err) if is_not_found(&err) => Ok(Loaded {
            config: Config::default(),
            warnings: match options.origin {
                Origin::Default => Vec::new(),
                Origin::Explicit => vec![Warning::MissingFile {
                    path: path.to_string(),
                }],
            },
        }),
        Err(err) => Err(Rejected {
            errors: vec![Diagnostic {
                location: None,
                message: format!("failed to open {path}: {}", error_text(&err)),
            }],
            warnings: Vec::new(),
        }),
    }
}

/// Parses configuration text; `file` names it in diagnostics. Includes,
/// `boot`/`disk`/`initrd` paths and owners are resolved through `host`.
pub fn parse(
    host: &dyn Host,
    file: &str,
    text: impl Into<Vec<u8>>,
    options: &LoadOptions,
) -> Result<Loaded, Rejected> {
    let outcome = Parser::new(
        host,
        file,
        text.into(),
        &options.defines,
        options.first_switch_id,
    )
    .run();
    let report = outcome.report;
    if report.errors.is_empty() {
        Ok(Loaded {
            config: outcome.config,
            warnings: report.warnings,
        })
    } else {
        Err(Rejected {
            errors: report.errors,
            warnings: report.warnings,
        })
    }
}

/// The result of `vmd -n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// What to print on stderr, one line each: the errors, then the
    /// warnings, then `configuration OK` if there were no errors.
    pub lines: Vec<String>,
    pub ok: bool,
}

impl CheckOutcome {
    /// vmd's exit status: 0 if the configuration is valid, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.ok { 0 } else { 1 }
    }
}

/// `vmd -n`: parses `path` and says what to print.
pub fn check(path: &str, options: &LoadOptions) -> CheckOutcome {
    check_with(&SystemHost, path, options)
}

/// [`check`] against any [`Host`].
pub fn check_with(host: &dyn Host, path: &str, options: &LoadOptions) -> CheckOutcome {
    let (errors, warnings) = match load_with(host, path, options) {
        Ok(loaded) => (Vec::new(), loaded.warnings),
        Err(rejected) => (rejected.errors, rejected.warnings),
    };
    let ok = errors.is_empty();
    let mut lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.extend(
        warnings
            .iter()
            .filter(|w| !w.is_debug())
            .map(ToString::to_string),
    );
    if ok {
        lines.push("configuration OK".to_string());
    }
    CheckOutcome { lines, ok }
}
