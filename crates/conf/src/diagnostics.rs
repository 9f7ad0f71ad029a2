//! What a parse run tells the operator: errors (which reject the file) and
//! warnings (which do not), kept apart because vmd prints them differently
//! and only errors decide whether the configuration is used.

use std::fmt;

/// A place in a configuration file: the file name as it was given (the main
/// path, or an `include` argument) and a 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: String,
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One line of an error report. Displays as `<file>:<line>: <message>`, or
/// as the bare message where vmd gives no place: for a main file that
/// cannot be read, and for the cause vmd logs before some errors (`disk
/// /x: No such file or directory` before `vm.conf:3: failed to parse disks:
/// /x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Option<Location>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{location}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Something worth telling that does not reject the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A macro defined in the file (not with `-D`) that nothing expanded.
    /// Displays as `warning: macro '<name>' not used`.
    MacroNotUsed { name: String },
    /// An explicitly named main file that does not exist; the configuration
    /// is empty. Displays as `failed to open <path>: No such file or
    /// directory`.
    MissingFile { path: String },
    /// A second `vm` block with a name already defined in this run; the
    /// later one is skipped (vm.conf(5), "VMs"). Debug-level: vmd logs it only
    /// when verbose, and [`crate::check`] does not print it. Displays as
    /// `vm "<name>" skipped (already exists)`.
    VmSkipped { name: String, location: Location },
}

impl Warning {
    /// Whether this is only a debug-level note rather than a warning the
    /// operator always sees.
    pub fn is_debug(&self) -> bool {
        matches!(self, Warning::VmSkipped { .. })
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::MacroNotUsed { name } => write!(f, "warning: macro '{name}' not used"),
            Warning::MissingFile { path } => {
                write!(f, "failed to open {path}: No such file or directory")
            }
            Warning::VmSkipped { name, .. } => write!(f, "vm \"{name}\" skipped (already exists)"),
        }
    }
}

/// Collects errors and warnings in the order they are found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Warning>,
}

impl Report {
    pub fn error(&mut self, file: &str, line: u32, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            location: Some(Location {
                file: file.to_string(),
                line,
            }),
            message: message.into(),
        });
    }

    /// The cause of the error reported next, without a place.
    pub fn note(&mut self, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            location: None,
            message: message.into(),
        });
    }
}
