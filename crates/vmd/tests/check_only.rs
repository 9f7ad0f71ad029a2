//! `vmd -n` as OpenBSD's: it only parses, prints each message as vmd does
//! on stderr (with or without `file:line: `, and what follows), then
//! `configuration OK` or nothing, and exits 0 or 1. No root needed.

use std::process::{Command, Output};

use testkit::daemon::binary;
use testkit::tmp::TempDir;

fn check(args: &[&str]) -> Output {
    Command::new(binary("vmd"))
        .arg("-n")
        .args(args)
        .output()
        .unwrap()
}

fn check_text(dir: &TempDir, text: &str) -> (Option<i32>, String, String) {
    let path = dir.join("vm.conf");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    let out = check(&["-f", &path]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
    )
}

#[test]
fn a_vm_with_nothing_to_boot_is_not_checked() {
    // vmd checks that when it registers a VM, which -n does not do.
    let dir = TempDir::new("check-noboot");
    let (code, stderr, _) = check_text(&dir, "vm \"a\" {\n\tmemory 512M\n}\n");
    assert_eq!((code, stderr.as_str()), (Some(0), "configuration OK\n"));
}

#[test]
fn a_missing_file_named_with_f_fails() {
    let out = check(&["-f", "/nonexistent/vm.conf"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "failed to open /nonexistent/vm.conf: No such file or directory\n"
    );
}

#[test]
fn messages_their_places_and_what_follows() {
    let dir = TempDir::new("check-lines");
    let (code, stderr, path) = check_text(
        &dir,
        "vm \"a\" {\n\tdisk /nonexistent.img\n}\n\
         vm \"b\" {\n\tinterface { lladdr nope }\n}\n\
         vm \"c\" {\n\tmemory $size\n}\n\
         x = \"1\"\n",
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        format!(
            "disk /nonexistent.img: No such file or directory\n\
             {path}:2: failed to parse disks: /nonexistent.img\n\
             {path}:5: invalid address: nope\n\
             \n\
             {path}:8: macro 'size' not defined\n\
             {path}:8: syntax error\n\
             warning: macro 'x' not used\n"
        )
    );
}
