//! `vmctl create [-b base | -i disk] [-s size] disk` (vmctl(8), create).
//!
//! Creates a sparse raw image, an empty qcow2 image, a qcow2 overlay on a
//! base image (`-b`), or a copy of another image in either format (`-i`,
//! which also flattens a backing chain). Runs locally; vmd is not involved.
//! All image work is the disk crate's; this module is the command's
//! grammar, its checks and its messages.

use std::io::IsTerminal;
use std::path::Path;

use disk::{Access, BaseError, ConvertError, DiskFormat, ImageChain};

use crate::cli::{self, CommandId};
use crate::getopt::Opt;
use crate::output;

/// The usage string of the command table (vmctl(8), "DESCRIPTION").
pub const USAGE: &str = "[-b base | -i disk] [-s size] disk";

const MIB: u64 = 1 << 20;

/// Where the command's messages go. [`run`] writes them to stderr; tests
/// record them.
pub trait Report {
    /// `vmctl: <message>`.
    fn warnx(&mut self, message: &str);
    /// Text as is, no prefix.
    fn plain(&mut self, text: &str);
    /// The command's usage line.
    fn usage(&mut self);
    /// Whether a progress bar should be drawn (stderr is a terminal).
    fn wants_progress(&self) -> bool;
    /// Draws the progress bar (only called when wanted).
    fn progress(&mut self, line: &str);
    /// A debug message, shown with `vmctl -v`.
    fn debug(&mut self, message: &str) {
        let _ = message;
    }
}

/// The messages on stderr, as vmctl prints them.
struct Stderr;

impl Report for Stderr {
    fn warnx(&mut self, message: &str) {
        output::warnx(message);
    }

    fn plain(&mut self, text: &str) {
        output::eprint_raw(text);
    }

    fn usage(&mut self) {
        output::command_usage("create", USAGE);
    }

    fn wants_progress(&self) -> bool {
        std::io::stderr().is_terminal()
    }

    fn progress(&mut self, line: &str) {
        output::eprint_raw(line);
    }

    fn debug(&mut self, message: &str) {
        output::debug(message);
    }
}

/// Runs `create` with the words after the command word; returns the exit
/// status.
pub fn run(args: &[String]) -> i32 {
    run_with(args, &mut Stderr)
}

/// [`run`] with the messages sent to `report`.
pub fn run_with(args: &[String], report: &mut dyn Report) -> i32 {
    match create(args, report) {
        Ok(()) => 0,
        Err(Failed) => 1,
    }
}

/// The command failed; its message has been reported.
struct Failed;

fn create(args: &[String], report: &mut dyn Report) -> Result<(), Failed> {
    let mut base: Option<String> = None;
    let mut input: Option<String> = None;
    let mut size: Option<u64> = None;
    let mut opts = cli::command(CommandId::Create).getopt(args);
    for opt in opts.by_ref() {
        match opt {
            Opt::Found('b', Some(value)) => base = Some(value),
            Opt::Found('i', Some(value)) => input = Some(value),
            // Sizes are checked as they are met, as getopt hands them over.
            Opt::Found('s', Some(value)) => size = Some(parse_disk_size(&value, report)?),
            Opt::Unknown(c) => return usage(report, &format!("unknown option -- {c}")),
            Opt::MissingArgument(c) => {
                return usage(report, &format!("option requires an argument -- {c}"));
            }
            Opt::Found(..) => return usage(report, ""),
        }
    }
    let [operand] = opts.operands() else {
        return usage(report, "");
    };
    let (disk, format) = disk::detect_format(operand);
    let disk = Path::new(&disk);

    if let Some(input) = input {
        if base.is_some() {
            return fail(report, "conflicting -b and -i arguments");
        }
        return convert(&input, disk, format, size, report);
    }
    if base.is_some() && format != DiskFormat::Qcow2 {
        return fail(report, "base images require qcow2 disk format");
    }
    match base {
        Some(base) => create_overlay(disk, &base, size, report),
        None => {
            let Some(size) = size else {
                report.plain(&format!(
                    "could not create {operand}: missing size argument\n"
                ));
                report.usage();
                return Err(Failed);
            };
            if let Err(err) = disk::create_image(disk, format, size) {
                return fail(
                    report,
                    &with_strerror("create imagefile operation failed", &err),
                );
            }
            report.warnx(&format!("{} imagefile created", format.name()));
            Ok(())
        }
    }
}

/// `-s`: a scaled size of at least 1 MiB, rounded down to whole MiB with a
/// warning (vmctl(8), "Sizes").
fn parse_disk_size(word: &str, report: &mut dyn Report) -> Result<u64, Failed> {
    let value = match scaled::scan_scaled(word) {
        Ok(value) => value,
        Err(err) => {
            return fail(
                report,
                &format!("invalid disk size: {word}: {}", err.strerror()),
            );
        }
    };
    if value < MIB as i64 {
        return fail(report, "disk size must be at least 1MB");
    }
    let rounded = value as u64 / MIB * MIB;
    if rounded != value as u64 {
        report.warnx(&format!(
            "disk size rounded to {}",
            scaled::fmt_scaled(rounded as i64)
        ));
    }
    Ok(rounded)
}

/// `-b base`: a qcow2 overlay; its size is the base's unless `-s` asks
/// for more. A larger overlay is a Linux extension (vmctl(8), create):
/// past the end of the base it reads as zeros, so a small base image
/// gives a larger disk without being copied.
fn create_overlay(
    disk: &Path,
    base: &str,
    size: Option<u64>,
    report: &mut dyn Report,
) -> Result<(), Failed> {
    let base_size = match disk::base_image_size(disk, base) {
        Ok(base_size) => base_size,
        Err(BaseError::NotQcow2) => return fail(report, "base image is not a qcow2 file"),
        Err(BaseError::Unreadable(err)) if err.is_locked() => {
            report.warnx(&err.to_string());
            return fail(
                report,
                &errno_message("create imagefile operation failed", err.errno()),
            );
        }
        Err(BaseError::Unreadable(err)) => {
            return fail(
                report,
                &errno_message("create imagefile operation failed", err.errno()),
            );
        }
        Err(BaseError::Invalid(err)) => return fail(report, &err.to_string()),
    };
    let size = size.unwrap_or(base_size);
    if size < base_size {
        return fail(
            report,
            &format!(
                "size cannot be smaller than base image size ({})",
                scaled::fmt_scaled(base_size as i64)
            ),
        );
    }
    if let Err(err) = disk::create_overlay(disk, base, size) {
        return fail(
            report,
            &with_strerror("create imagefile operation failed", &err),
        );
    }
    report.warnx("qcow2 imagefile created");
    Ok(())
}

/// `-i input`: copies (and flattens) `input` into a new image (vmctl(8), create).
fn convert(
    input: &str,
    disk: &Path,
    format: DiskFormat,
    size: Option<u64>,
    report: &mut dyn Report,
) -> Result<(), Failed> {
    let (input_path, input_format) = disk::detect_format(input);
    let source = match ImageChain::open(&input_path, input_format, Access::ReadOnly)
        .and_then(|c| c.into_backend())
    {
        Ok(source) => source,
        Err(err) => {
            report.warnx(&err.to_string());
            return fail(report, "failed to open source image file");
        }
    };
    let requested = size.unwrap_or(source.size());
    if requested < source.size() {
        return fail(report, "size cannot be smaller than input disk size");
    }
    let Some(final_size) = requested.checked_next_multiple_of(MIB) else {
        return fail(report, "failed to create destination image file");
    };

    if let Err(err) = disk::create_image(disk, format, final_size) {
        report.warnx(&with_strerror(&disk.display().to_string(), &err));
        return fail(report, "failed to create destination image file");
    }
    // Opened again through the common opener, which also checks what was
    // just created.
    let dest =
        match ImageChain::open(disk, format, Access::ReadWrite).and_then(|c| c.into_backend()) {
            Ok(dest) => dest,
            Err(err) => {
                report.warnx(&err.to_string());
                remove_partial(disk);
                return fail(report, "failed to open destination image file");
            }
        };

    let mut bar = report.wants_progress().then(ProgressBar::default);
    let name = disk.display().to_string();
    let result = disk::convert(source.as_ref(), dest.as_ref(), &mut |done, total| {
        report.debug(&format!("{name}: {done}/{total} bytes copied"));
        if let Some(line) = bar.as_mut().and_then(|bar| bar.update(done, total)) {
            report.progress(&line);
        }
    });
    if bar.is_some() {
        report.progress("\n");
    }
    drop(dest);
    match result {
        Ok(()) => {}
        Err(ConvertError::Read(err)) => {
            report.warnx(&err.to_string());
            remove_partial(disk);
            return fail(report, "failed to read from source");
        }
        Err(ConvertError::Write(err)) => {
            report.warnx(&err.to_string());
            remove_partial(disk);
            return fail(report, "failed to write to destination");
        }
    }
    if final_size > requested {
        report.warnx(&format!(
            "destination size rounded to {} megabytes",
            final_size / MIB
        ));
    }
    report.warnx(&format!("{} imagefile created", format.name()));
    Ok(())
}

/// A destination that could not be completed is not left behind.
fn remove_partial(disk: &Path) {
    let _ = std::fs::remove_file(disk);
}

fn usage(report: &mut dyn Report, message: &str) -> Result<(), Failed> {
    if !message.is_empty() {
        report.warnx(message);
    }
    report.usage();
    Err(Failed)
}

fn fail<T>(report: &mut dyn Report, message: &str) -> Result<T, Failed> {
    report.warnx(message);
    Err(Failed)
}

/// `message: strerror(errno)` for a system error, `message: error` else.
fn with_strerror(message: &str, err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => errno_message(message, errno),
        None => format!("{message}: {err}"),
    }
}

fn errno_message(message: &str, errno: i32) -> String {
    format!("{message}: {}", proto::error::strerror(errno))
}

/// A one-line progress bar redrawn in place: `\r 42% [#####     ] 430M/1.0G`.
#[derive(Default)]
pub struct ProgressBar {
    shown: Option<u64>,
}

impl ProgressBar {
    const WIDTH: u64 = 40;

    /// The line to draw for `done` of `total`, or `None` when the visible
    /// percentage has not changed since the last line.
    pub fn update(&mut self, done: u64, total: u64) -> Option<String> {
        let percent = match total {
            0 => 100,
            _ => (u128::from(done.min(total)) * 100 / u128::from(total)) as u64,
        };
        if self.shown == Some(percent) {
            return None;
        }
        self.shown = Some(percent);
        let filled = (percent * Self::WIDTH / 100) as usize;
        Some(format!(
            "\r{percent:3}% [{}{}] {}/{}",
            "#".repeat(filled),
            " ".repeat(Self::WIDTH as usize - filled),
            scaled::fmt_scaled(done.min(total) as i64),
            scaled::fmt_scaled(total as i64),
        ))
    }
}
