//! vm.conf, vmd's configuration file (vm.conf(5)): lexer, parser and the
//! typed model the daemon applies.
//!
//! # Entry points
//!
//! * [`load`] reads a file the way vmd does at start-up, on `reload`
//!   (`Origin::Default` for the default path, `Origin::Explicit` for `-f`)
//!   and on `vmctl load` (`Origin::Explicit`), and returns either the
//!   [`Config`] with its [`Warning`]s or every error found ([`Rejected`]).
//! * [`check`] is `vmd -n`: the lines to print on stderr and whether the
//!   file is valid (`configuration OK`, exit 0) or not (exit 1). It only
//!   parses: what registering a block checks (a VM with nothing to boot, a
//!   switch defined twice) is not checked, as with vmd's `-n`.
//! * [`load_with`], [`parse`] and [`check_with`] do the same against any
//!   [`Host`] (see [`MemoryHost`] for tests).
//!
//! # What the daemon does with a [`Config`]
//!
//! * Globals: [`Config::settings`] at start-up and `reload` (defaults plus
//!   the file); [`GlobalOptions::apply_to`] the current settings for
//!   `vmctl load`. `local inet6` without a prefix is [`LocalInet6::Random`]:
//!   the daemon draws the prefix once per lifetime ([`Ipv6Prefix::random_ula`]).
//! * Switches: only enabled ones are listed, with ids from
//!   [`LoadOptions::first_switch_id`].
//! * VMs: in file order; skip a name the daemon already has. For a VM with
//!   [`Vm::instance_of`], resolve the template and inherit (vm.conf(5), "Instances");
//!   the device checks done here for plain VMs are the daemon's for
//!   instances. Random MACs for interfaces without `lladdr`:
//!   [`MacAddr::random_for_interface`].
//!
//! # Decisions where the spec leaves room
//!
//! * Messages, their places and what follows them are vmd's: a syntax
//!   error at the offending token's line; errors about a whole block
//!   (`is missing interface name`, `vm "…" failed: …`) at its closing
//!   brace; the causes vmd logs without a place (`disk /x: No such file or
//!   directory`, `memory size must be at least 1MB`) on their own line
//!   before the error; an error found by the lexer (`macro 'x' not
//!   defined`) followed by `syntax error`. After an error the rest of the
//!   statement, block included, is skipped and what follows is read as
//!   top-level lines; a syntax error within the next three tokens is not
//!   reported. The table in `tests/openbsd_messages.rs` shows each.
//! * Messages of our own, in the same style: `string is not valid UTF-8`,
//!   `switch name too long: N` and `switch "…" defined more than once`
//!   (when registering), `invalid staggered start parallel|delay: N`, and
//!   for the Linux extensions `invalid number of cpus: N`, `cpus|cmdline|
//!   initrd|user-data|ssh-key specified more than once`, `initrd|user-data|
//!   ssh-key path not found: E`.
//! * `cpus`, `cmdline`, `initrd`, `user-data`, `ssh-key` (and the `allow
//!   instance` flag `cpus`) are
//!   recognised by position, not reserved, so every file the reference
//!   accepts still parses.
//! * `disk` accepts vmctl's `raw:`/`qcow2:` prefixes; `format` wins over a
//!   prefix; without either only the qcow2 magic decides (no extension
//!   rule, unlike `vmctl create`).
//! * Owner names that are not in the databases but are numeric are ids.
//! * `local prefix` accepts a number-led form unquoted (`10/8`).
//! * A bare number is accepted as a macro value (`n = 2`); elsewhere a
//!   number is not a string (`vm 100 {` and `cmdline $n` with n = `3` are
//!   syntax errors, as in the reference grammar).
//! * `\r` counts as a blank; bytes ≥ 0x80 may appear in unquoted words.
//! * `include` paths are used as written (relative to the daemon's working
//!   directory); nesting is limited to 32 levels.
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
//! assert_eq!(check.lines, ["failed to open /missing.conf: No such file or directory"]);
//! assert!(!check.ok);
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
use parser::{Mode, Parser};

/// The reserved words of the grammar (vm.conf(5), "DESCRIPTION"), `add`, `id` and
/// `size` included although nothing uses them.
pub const RESERVED_WORDS: &[&str] = lexer::RESERVED_WORDS;

/// The words of the Linux extensions (`cpus`, `cmdline`, `initrd`,
/// `user-data`, `ssh-key`), which are not reserved.
pub const EXTENSION_WORDS: &[&str] = lexer::EXTENSION_WORDS;

/// The configuration file vmd reads when not given `-f`.
pub const DEFAULT_PATH: &str = "/etc/vm.conf";

/// How the main file was named, which decides what a missing file means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// The default path: a missing file is an empty configuration.
    #[default]
    Default,
    /// Given with `vmd -f` or `vmctl load`: a missing file is an empty
    /// configuration plus the warning `failed to open <file>: No such file
    /// or directory`; [`check`] fails on it.
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

impl std::fmt::Display for Rejected {
    /// The errors, one per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error_lines().join("\n"))
    }
}

impl std::error::Error for Rejected {}

/// Reads and parses `path` from the file system with the system's user and
/// group databases.
pub fn load(path: &str, options: &LoadOptions) -> Result<Loaded, Rejected> {
    load_with(&SystemHost, path, options)
}

/// [`load`] against any [`Host`].
pub fn load_with(host: &dyn Host, path: &str, options: &LoadOptions) -> Result<Loaded, Rejected> {
    read_and_parse(host, path, options, Mode::Register)
}

fn read_and_parse(
    host: &dyn Host,
    path: &str,
    options: &LoadOptions,
    mode: Mode,
) -> Result<Loaded, Rejected> {
    match host.read_file(path) {
        Ok(text) => parse_as(host, path, text, options, mode),
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
    parse_as(host, file, text.into(), options, Mode::Register)
}

fn parse_as(
    host: &dyn Host,
    file: &str,
    text: Vec<u8>,
    options: &LoadOptions,
    mode: Mode,
) -> Result<Loaded, Rejected> {
    let outcome = Parser::new(
        host,
        file,
        text,
        &options.defines,
        options.first_switch_id,
        mode,
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
    /// warnings, then `configuration OK` if there were no errors. A message
    /// of vmd's that ends in a newline is followed by an empty line.
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

/// [`check`] against any [`Host`]. An explicitly named file that does not
/// exist fails the check (vmd would go on with an empty configuration and
/// say `configuration OK` after the warning, hiding a mistyped path).
pub fn check_with(host: &dyn Host, path: &str, options: &LoadOptions) -> CheckOutcome {
    let (errors, warnings): (Vec<String>, Vec<Warning>) =
        match read_and_parse(host, path, options, Mode::Check) {
            Ok(loaded) => {
                let (missing, warnings): (Vec<Warning>, Vec<Warning>) = loaded
                    .warnings
                    .into_iter()
                    .partition(|w| matches!(w, Warning::MissingFile { .. }));
                (missing.iter().map(ToString::to_string).collect(), warnings)
            }
            Err(rejected) => (
                rejected.errors.iter().map(ToString::to_string).collect(),
                rejected.warnings,
            ),
        };
    let ok = errors.is_empty();
    let mut lines: Vec<String> = Vec::new();
    for error in &errors {
        lines.extend(error.split('\n').map(String::from));
    }
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
