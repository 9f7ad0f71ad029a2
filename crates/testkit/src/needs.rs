//! What a test needs from the machine it runs on, checked first thing in
//! the test: `testkit::needs!(root, kvm, "nasm");`. Where something is
//! missing the test says so on one line of stderr and returns, so that the
//! unit tests run on a contributor's machine without root or /dev/kvm; with
//! `VMD_TESTS_NO_SKIP=1` (CI) the same reason fails the test instead, so
//! nothing is skipped unseen there. docs/testing.md lists who needs what.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The environment variable that turns a skip into a failure.
pub const NO_SKIP: &str = "VMD_TESTS_NO_SKIP";

/// One thing a test needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// An effective uid of 0: the daemon, network namespaces, other users'
    /// credentials, devices opened as another user.
    Root,
    /// /dev/kvm opened read-write and answering as KVM.
    Kvm,
    /// A program found on PATH (e.g. `nasm`, `qemu-img`).
    Tool(&'static str),
}

/// KVM_GET_API_VERSION: `_IO(KVMIO, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xae00;
/// The only API version KVM has ever answered.
const KVM_API_VERSION: libc::c_int = 12;

impl Need {
    /// What is missing and why, or `None` where this need is met.
    pub fn missing(self) -> Option<String> {
        match self {
            Need::Root => {
                // SAFETY: geteuid has no preconditions and cannot fail.
                let euid = unsafe { libc::geteuid() };
                (euid != 0).then(|| format!("root (running as uid {euid})"))
            }
            Need::Kvm => kvm_missing().map(|why| format!("/dev/kvm ({why})")),
            Need::Tool(name) => (!on_path(name))
                .then(|| format!("{name} (not found on PATH; scripts/install-deps.sh)")),
        }
    }
}

/// Why /dev/kvm is of no use here, or `None`. Opening it is not enough: a
/// device bound over it (as /dev/null hides it in a test of this very
/// check) opens too, so KVM must also answer its API version.
fn kvm_missing() -> Option<String> {
    device_not_kvm(Path::new("/dev/kvm"))
}

/// Why `device` is not a usable KVM, or `None`.
fn device_not_kvm(device: &Path) -> Option<String> {
    let kvm = match OpenOptions::new().read(true).write(true).open(device) {
        Ok(kvm) => kvm,
        Err(e) => return Some(format!("open: {e}")),
    };
    // SAFETY: KVM_GET_API_VERSION takes no argument and only reads the
    // descriptor, which `kvm` keeps open for the call.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION) };
    if version < 0 {
        let e = std::io::Error::last_os_error();
        return Some(format!("KVM_GET_API_VERSION: {e}"));
    }
    (version != KVM_API_VERSION)
        .then(|| format!("KVM_GET_API_VERSION answered {version}, not {KVM_API_VERSION}"))
}

/// Whether an executable file `name` is in one of PATH's directories.
fn on_path(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| executable(&dir.join(name)))
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The reasons `needs` are not met here, each "what (why)"; empty where
/// all are.
pub fn missing(needs: &[Need]) -> Vec<String> {
    needs.iter().filter_map(|need| need.missing()).collect()
}

/// Whether test `test` can go on: true where every need is met. Otherwise
/// prints `skipped <test>: needs <what (why)>, ...` straight to the
/// process's stderr (libtest captures `eprintln!`, not the descriptor, so
/// the line shows in `cargo test`'s output) and returns false, or panics
/// with the same reason where `VMD_TESTS_NO_SKIP=1`.
pub fn check(test: &str, needs: &[Need]) -> bool {
    let missing = missing(needs);
    if missing.is_empty() {
        return true;
    }
    if no_skip() {
        panic!("{}", failure(test, &missing));
    }
    // One write_all of the whole line, so lines of tests that skip at the
    // same time do not interleave.
    let _ = std::io::stderr().write_all(skip_line(test, &missing).as_bytes());
    false
}

fn reason(missing: &[String]) -> String {
    format!("needs {}", missing.join(", "))
}

/// The line a skipped test prints.
fn skip_line(test: &str, missing: &[String]) -> String {
    format!("skipped {test}: {}\n", reason(missing))
}

/// The panic message of a test that may not skip.
fn failure(test: &str, missing: &[String]) -> String {
    format!(
        "{test}: {} ({NO_SKIP}=1: a missing need fails the test)",
        reason(missing)
    )
}

/// Whether `VMD_TESTS_NO_SKIP` asks for failures instead of skips.
pub fn no_skip() -> bool {
    std::env::var_os(NO_SKIP).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The test's name as `package::path::to::test`: `function` is the type
/// name of a function item declared inside the test
/// (`crate::module::test::here`), `package` the package it is built
/// for, which an integration test's crate name (its file's name) lacks.
pub fn test_name(package: &str, function: &str) -> String {
    let mut path: Vec<&str> = function
        .split("::")
        .filter(|segment| !segment.starts_with("{{"))
        .collect();
    path.pop();
    let crate_name = package.replace('-', "_");
    if path.first() != Some(&crate_name.as_str()) {
        path.insert(0, package);
    }
    path.join("::")
}

/// The first statement of a test that needs root, /dev/kvm or programs:
/// `testkit::needs!(root, kvm, "qemu-img");` returns from the test (after
/// one `skipped ...` line on stderr) where one is missing, or fails it
/// where `VMD_TESTS_NO_SKIP=1`. Names: `root` (effective uid 0), `kvm`
/// (/dev/kvm usable), and a string for a program on PATH.
#[macro_export]
macro_rules! needs {
    ($($need:tt),+ $(,)?) => {
        if !$crate::needs::check(
            &{
                fn here() {}
                $crate::needs::test_name(
                    ::core::env!("CARGO_PKG_NAME"),
                    ::std::any::type_name_of_val(&here),
                )
            },
            &[$($crate::__need!($need)),+],
        ) {
            return;
        }
    };
}

/// One name of [`needs!`] as a [`Need`].
#[doc(hidden)]
#[macro_export]
macro_rules! __need {
    (root) => {
        $crate::needs::Need::Root
    };
    (kvm) => {
        $crate::needs::Need::Kvm
    };
    ($tool:literal) => {
        $crate::needs::Need::Tool($tool)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_package_once() {
        assert_eq!(
            test_name("vmd", "console_reboot::every_boot::here"),
            "vmd::console_reboot::every_boot"
        );
        assert_eq!(
            test_name("vmd", "vmd::open_as::tests::opens::here"),
            "vmd::open_as::tests::opens"
        );
        assert_eq!(test_name("vmd", "vmd::t::{{closure}}::here"), "vmd::t");
    }

    #[test]
    fn the_macro_names_the_test_it_is_in() {
        let name = {
            fn here() {}
            test_name(env!("CARGO_PKG_NAME"), std::any::type_name_of_val(&here))
        };
        assert_eq!(
            name,
            "testkit::needs::tests::the_macro_names_the_test_it_is_in"
        );
    }

    #[test]
    fn a_missing_program_is_named_with_why() {
        let why = Need::Tool("no-such-program-for-vmd-tests")
            .missing()
            .unwrap();
        assert!(
            why.starts_with("no-such-program-for-vmd-tests (not found on PATH"),
            "{why}"
        );
        assert_eq!(Need::Tool("sh").missing(), None);
    }

    #[test]
    fn root_is_the_effective_uid() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        match Need::Root.missing() {
            None => assert_eq!(euid, 0),
            Some(why) => assert_eq!(why, format!("root (running as uid {euid})")),
        }
    }

    #[test]
    fn a_skip_is_one_line_naming_the_test_and_every_missing_need() {
        let missing = [
            "root (running as uid 1000)".to_string(),
            "/dev/kvm (open: Permission denied (os error 13))".to_string(),
        ];
        assert_eq!(
            skip_line("vmd::startup::boots", &missing),
            "skipped vmd::startup::boots: needs root (running as uid 1000), \
             /dev/kvm (open: Permission denied (os error 13))\n"
        );
        assert_eq!(
            failure("vmd::startup::boots", &missing[..1]),
            "vmd::startup::boots: needs root (running as uid 1000) \
             (VMD_TESTS_NO_SKIP=1: a missing need fails the test)"
        );
    }

    #[test]
    fn kvm_must_answer_as_kvm_not_just_open() {
        assert_eq!(
            device_not_kvm(Path::new("/dev/null")).unwrap(),
            "KVM_GET_API_VERSION: Inappropriate ioctl for device (os error 25)"
        );
        let why = device_not_kvm(Path::new("/nonexistent/kvm")).unwrap();
        assert_eq!(why, "open: No such file or directory (os error 2)");
    }

    /// A test whose needs are met goes on past the macro.
    #[test]
    fn the_macro_lets_a_test_with_its_needs_met_go_on() {
        let mut reached = false;
        let mut go = || {
            crate::needs!("sh");
            reached = true;
        };
        go();
        assert!(reached);
    }
}
