//! vmctl's messages that need no daemon (vmctl(8)): exact
//! stderr and exit status of the built binary.

mod common;

use common::{TempDir, no_daemon, outcome, run_vmctl};

const GLOBAL_USAGE: &str = "usage:\tvmctl [-v] command [arg ...]\n";

/// `start`'s usage: the reference's, with the Linux extensions `-p`,
/// `--cmdline`, `--initrd`, `--ssh-key` and `--user-data`.
const START_USAGE: &str = "start [-cL] [-B device] [-b path] [-d disk] [-i count]\n\
                           \t\t[-m size] [-n switch] [-p count] [-r path] [-t name]\n\
                           \t\t[--cmdline string] [--initrd path] [--ssh-key file]\n\
                           \t\t[--user-data file] id | name";

fn run(args: &[&str]) -> (i32, String, String) {
    outcome(&run_vmctl(&no_daemon(), args))
}

/// Asserts exit status 1, nothing on stdout and exactly `stderr`.
fn fails_with(args: &[&str], stderr: &str) {
    let (status, out, err) = run(args);
    assert_eq!(
        (status, out.as_str(), err.as_str()),
        (1, "", stderr),
        "vmctl {args:?}"
    );
}

fn connect_error() -> String {
    format!(
        "vmctl: connect: {}: No such file or directory\n",
        no_daemon().display()
    )
}

#[test]
fn global_usage() {
    // Without a command word the list of commands follows the usage line
    // (tests/help.rs); a bad global option gets the usage line alone.
    for args in [&[][..], &["-v"]] {
        let (status, out, err) = run(args);
        assert_eq!((status, out.as_str()), (1, ""), "vmctl {args:?}");
        assert!(err.starts_with(GLOBAL_USAGE), "vmctl {args:?}: {err}");
    }
    fails_with(&["-x", "status"], GLOBAL_USAGE);
    fails_with(&["-vx"], GLOBAL_USAGE);
}

#[test]
fn ambiguous_and_unknown_command_words() {
    for word in ["", "s", "st", "sta", "c", "l", "lo", "r", "re"] {
        fails_with(
            &[word],
            &format!("ambiguous argument: {word}\n{GLOBAL_USAGE}"),
        );
    }
    for word in ["foo", "stopp", "Status", "x"] {
        fails_with(
            &[word],
            &format!("unknown argument: {word}\n{GLOBAL_USAGE}"),
        );
    }
    // Global options go before the command word only.
    // (`status -v` is status's own option, a Linux extension.)
    fails_with(&["stop", "-v"], "usage:\tvmctl [-v] stop [-fw] [id | -a]\n");
    fails_with(&["pause", "-v"], "vmctl: invalid id: -v\n");
}

#[test]
fn per_command_usage_lines() {
    let cases: &[(&[&str], &str)] = &[
        (&["console"], "console id"),
        (&["console", "a", "b"], "console id"),
        (&["load"], "load filename"),
        (&["log"], "log [brief | verbose]"),
        (&["log", "loud"], "log [brief | verbose]"),
        (&["log", "briefly"], "log [brief | verbose]"),
        (&["pause"], "pause id"),
        (&["receive"], "receive name"),
        (&["reload", "x"], "reload "),
        (&["reset", "everything"], "reset [all | switches | vms]"),
        (&["reset", "all", "vms"], "reset [all | switches | vms]"),
        (&["send"], "send id"),
        (&["show", "a", "b"], "show [-jrv] [id]"),
        (&["sh", "-x"], "show [-jrv] [id]"),
        (&["status", "-a"], "status [-jrv] [id]"),
        (&["help", "a", "b"], "help [command]"),
        (&["start"], START_USAGE),
        (&["star", "-x", "vm"], START_USAGE),
        (&["start", "vm", "-c"], START_USAGE),
        (&["start", "-m"], START_USAGE),
        (&["stop"], "stop [-fw] [id | -a]"),
        (&["stop", "-a", "vm"], "stop [-fw] [id | -a]"),
        (&["stop", "vm", "-a"], "stop [-fw] [id | -a]"),
        (&["stop", "-x", "vm"], "stop [-fw] [id | -a]"),
        (&["unpause"], "unpause id"),
        (&["wait"], "wait id"),
        (&["w", "a", "b"], "wait id"),
    ];
    for (args, usage) in cases {
        fails_with(args, &format!("usage:\tvmctl [-v] {usage}\n"));
    }
}

#[test]
fn program_name_comes_from_argv0() {
    let dir = TempDir::new();
    let link = dir.path.join("myctl");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vmctl"), &link).unwrap();
    let output = std::process::Command::new(&link)
        .args(["pause", "-x"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "myctl: invalid id: -x\n"
    );
    let output = std::process::Command::new(&link)
        .arg("-x")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "usage:\tmyctl [-v] command [arg ...]\n"
    );
    let output = std::process::Command::new(&link).output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.starts_with("usage:\tmyctl [-v] command [arg ...]\ncommands:\n")
            && err.ends_with("Type `myctl help command` for the options of a command.\n"),
        "{err}"
    );
}

#[test]
fn id_errors() {
    let long = "n".repeat(64);
    // Commands without options take `-x` for an id.
    for command in ["console", "pause", "unpause", "wait", "send"] {
        fails_with(&[command, "-x"], "vmctl: invalid id: -x\n");
    }
    for command in [
        "console", "pause", "unpause", "wait", "send", "stop", "status",
    ] {
        fails_with(
            &[command, &long],
            &format!("vmctl: name too long\nvmctl: invalid id: {long}\n"),
        );
    }
    fails_with(
        &["stop", "-w", "-f", "-y"],
        "usage:\tvmctl [-v] stop [-fw] [id | -a]\n",
    );
    fails_with(
        &["receive", "12"],
        "vmctl: invalid vm name\nvmctl: invalid id: 12\n",
    );
    fails_with(&["receive", "-x"], "vmctl: invalid id: -x\n");
    fails_with(&["start", "--", "-vm"], "vmctl: invalid id: -vm\n");
    // Commands with options end them at `--`; the others take it as a word.
    fails_with(&["stop", "--", "-x"], "vmctl: invalid id: -x\n");
    fails_with(&["status", "--", "-x"], "vmctl: invalid id: -x\n");
    fails_with(&["pause", "--", "-x"], "usage:\tvmctl [-v] pause id\n");
}

#[test]
fn start_name_errors() {
    fails_with(&["start", "_web"], "vmctl: invalid VM name\n");
    fails_with(&["start", "web/1"], "vmctl: invalid VM name\n");
    let long = "t".repeat(64);
    fails_with(
        &["start", "-t", &long, "vm"],
        &format!("vmctl: instance vm name too long\nvmctl: invalid name: {long}\n"),
    );
}

#[test]
fn size_errors_and_rounding() {
    fails_with(
        &["start", "-m", "4GB", "vm"],
        "vmctl: invalid memory size: 4GB: Invalid argument\n",
    );
    fails_with(
        &["start", "-m", "99999999999999999999999", "vm"],
        "vmctl: invalid memory size: 99999999999999999999999: Numerical result out of range\n",
    );
    fails_with(
        &["start", "-m", "1023K", "vm"],
        "vmctl: memory size must be at least 1MB\n",
    );
    fails_with(
        &["start", "-m", "129G", "vm"],
        "vmctl: memory size too large (limit is 128G)\n",
    );
    let dir = TempDir::new();
    let kernel = dir.file("bsd", b"kernel");
    fails_with(
        &["start", "-m", "1.5M", "-b", kernel.to_str().unwrap(), "vm"],
        &format!("vmctl: memory size rounded to 1.0M\n{}", connect_error()),
    );
}

#[test]
fn start_option_errors() {
    let dir = TempDir::new();
    let kernel = dir.file("bsd", b"kernel");
    let kernel = kernel.to_str().unwrap();
    let disk = dir.file("disk.img", b"");
    let disk = disk.to_str().unwrap();
    let iso = dir.file("cd.iso", b"");
    let iso = iso.to_str().unwrap();
    let long = "s".repeat(64);
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["-B", "floppy"], "unknown boot device floppy".into()),
        (
            vec!["-B", "disk", "-B", "net"],
            "boot device specified multiple times".into(),
        ),
        (
            vec!["-b", "/nonexistent/bsd"],
            "invalid boot image path: No such file or directory".into(),
        ),
        (
            vec!["-b", kernel, "-b", kernel],
            "boot image specified multiple times".into(),
        ),
        (
            vec!["-d", "/nonexistent/disk.img"],
            "invalid disk path: /nonexistent/disk.img: No such file or directory".into(),
        ),
        (
            vec!["-i", "0"],
            "count is too small: 0\nvmctl: invalid interface count: 0".into(),
        ),
        (
            vec!["-i", "x"],
            "count is invalid: x\nvmctl: invalid interface count: x".into(),
        ),
        (
            vec!["-i", "9999999999"],
            "count is too large: 9999999999\nvmctl: invalid interface count: 9999999999".into(),
        ),
        (
            vec!["-i", "1", "-i", "1"],
            "interfaces specified multiple times".into(),
        ),
        (
            vec!["-m", "1G", "-m", "1G"],
            "memory specified multiple times".into(),
        ),
        (vec!["-n", &long], "interface name too long".into()),
        (
            vec!["-r", "/nonexistent/cd.iso"],
            "invalid iso image path: /nonexistent/cd.iso: No such file or directory".into(),
        ),
        (
            vec!["-r", iso, "-r", iso],
            "iso image specified multiple times".into(),
        ),
        (
            vec!["-d", disk, "-d", disk, "-d", disk, "-d", disk, "-d", disk],
            "too many disks".into(),
        ),
        (
            vec!["-b", kernel, "-i", "5"],
            "too many network interfaces".into(),
        ),
        (
            vec!["-b", kernel, "-L", "-L", "-n", "a", "-n", "b", "-L"],
            "too many network interfaces".into(),
        ),
        (vec!["-m", "1G"], "no kernel or disk/cdrom specified".into()),
        (
            vec!["-L", "-i", "2"],
            "no kernel or disk/cdrom specified".into(),
        ),
        (
            vec!["-b", dir.path.to_str().unwrap()],
            "kernel must be a regular file".into(),
        ),
        (
            vec!["-p", "65"],
            "count is too large: 65\nvmctl: invalid cpu count: 65".into(),
        ),
        (
            vec!["--initrd", "/nonexistent/initrd"],
            "invalid initrd path: /nonexistent/initrd: No such file or directory".into(),
        ),
        (
            vec!["-b", kernel, "--user-data", "/nonexistent/user-data"],
            "user data /nonexistent/user-data: No such file or directory".into(),
        ),
        (
            vec!["-b", kernel, "--ssh-key", dir.path.to_str().unwrap()],
            format!(
                "ssh key {}: a directory, not a regular file",
                dir.path.to_str().unwrap()
            ),
        ),
    ];
    for (options, message) in cases {
        let mut args = vec!["start"];
        args.extend(options);
        args.push("vm");
        fails_with(&args, &format!("vmctl: {message}\n"));
    }
}

#[test]
fn start_warnings_then_the_connection() {
    let dir = TempDir::new();
    let disk = dir.file("disk.img", b"");
    let iso = dir.file("cd.iso", b"");
    fails_with(
        &["start", "-r", iso.to_str().unwrap(), "vm"],
        &format!(
            "vmctl: starting without disks\nvmctl: starting without network interfaces\n{}",
            connect_error()
        ),
    );
    fails_with(
        &["start", "-d", disk.to_str().unwrap(), "vm"],
        &format!(
            "vmctl: starting without network interfaces\n{}",
            connect_error()
        ),
    );
    fails_with(
        &["start", "-d", disk.to_str().unwrap(), "-L", "vm"],
        &connect_error(),
    );
}

#[test]
fn daemon_commands_without_a_daemon() {
    let commands: &[&[&str]] = &[
        &["status"],
        &["show", "web"],
        &["console", "web"],
        &["pause", "1"],
        &["unpause", "web"],
        &["load", "/etc/vm.conf"],
        &["reload"],
        &["reset"],
        &["log", "verbose"],
        &["start", "web"],
        &["wait", "web"],
        &["send", "web"],
        &["receive", "web"],
        // The lead-in is printed only once the request is on its way.
        &["stop", "web"],
        &["stop", "-a"],
    ];
    for args in commands {
        fails_with(args, &connect_error());
    }
}
