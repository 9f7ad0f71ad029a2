//! The configurations the project ships are valid for `vmd -n`: the
//! example in vm.conf(5), and dist/vm.conf, which is installed as
//! /etc/vm.conf, both as shipped (everything commented out) and with its
//! example lines enabled. Paths in them go through the `images` macro, so
//! `-D images=DIR` points them at files made here.

use std::process::Command;

use testkit::daemon::binary;
use testkit::mdoc::{Page, repo_root};
use testkit::tmp::TempDir;

/// Runs `vmd -n -D images=<dir> -f <file>`; returns its standard error.
fn check(dir: &TempDir, text: &str) -> (bool, String) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for file in [
        "web.qcow2",
        "vmlinuz",
        "initrd.img",
        "install.iso",
        "lab1.img",
        "new.qcow2",
    ] {
        std::fs::write(images.join(file), b"").unwrap();
    }
    let conf = dir.join("vm.conf");
    std::fs::write(&conf, text).unwrap();
    let output = Command::new(binary("vmd"))
        .arg("-n")
        .arg("-D")
        .arg(format!("images={}", images.display()))
        .arg("-f")
        .arg(&conf)
        .output()
        .expect("run vmd -n");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_valid(text: &str, what: &str) {
    let dir = TempDir::new("example");
    let (ok, stderr) = check(&dir, text);
    assert!(
        ok && stderr == "configuration OK\n",
        "{what}: vmd -n says:\n{stderr}\n--- the file ---\n{text}"
    );
}

#[test]
fn vm_conf_page_example() {
    let blocks = Page::read("vm.conf.5").literal_blocks("EXAMPLES");
    let example = &blocks[0];
    assert!(example.contains("vm \"template\" instance"), "{example}");
    assert_valid(example, "the example of vm.conf(5)");

    // The check has teeth: the same example with a mistake is refused.
    let dir = TempDir::new("example");
    let broken = example.replace("memory 2G", "memory 2X");
    let (ok, stderr) = check(&dir, &broken);
    assert!(!ok && stderr.contains("invalid memory size"), "{stderr}");
}

/// dist/vm.conf with the `#` taken off its example lines (those that
/// begin with one `#`; explanations begin with `##`).
fn enabled(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.starts_with('#') => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn installed_vm_conf() {
    let text = std::fs::read_to_string(repo_root().join("dist/vm.conf")).unwrap();
    // As installed it configures nothing.
    assert!(text.lines().all(|l| l.is_empty() || l.starts_with('#')));
    assert_valid(&text, "dist/vm.conf");
    let example = enabled(&text);
    assert!(example.contains("\nvm \"web\" {"), "{example}");
    assert_valid(&example, "dist/vm.conf with its example enabled");
}
