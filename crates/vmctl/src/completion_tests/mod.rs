//! The shell completions in completions/ (bash, zsh, fish) against the
//! command table: each shell completes every command word, each command's
//! flags and nothing else, the arguments of -B, `log` and `reset`, and
//! the VM names that `vmctl status` lists. A stub `vmctl` first in PATH
//! prints a table made by the real table code.
//!
//! bash is driven through COMP_WORDS, zsh through a pseudo-terminal
//! (zpty) with its real completion system, fish through `complete -C`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use proto::control::{VmInfo, state};
use testkit::mdoc::{getopt_flags, repo_root};
use testkit::tmp::TempDir;

use crate::cli::COMMANDS;
use crate::commands::status::{Filter, StatusArgs, SystemAccounts, render};

#[derive(Debug, Clone, Copy)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

fn vm(id: u32, name: &str, state: u32) -> VmInfo {
    let running = state & state::RUNNING != 0;
    VmInfo {
        id,
        name: name.into(),
        max_mem: 512 << 20,
        cur_mem: 1 << 20,
        vcpus: 1,
        pid: running.then_some(100 + id),
        tty: running.then(|| format!("/dev/pts/{id}")),
        owner_uid: 0,
        owner_gid: None,
        state,
    }
}

const RUNNING: [&str; 2] = ["web", "lab-1.example"];
const STOPPED: [&str; 1] = ["db"];

/// A directory with a `vmctl` that prints the status table of three VMs
/// (`status -r`: the two running ones), as the real vmctl would.
fn stub_vmctl(dir: &Path) {
    let vms = [
        vm(1, RUNNING[0], state::RUNNING),
        vm(2, STOPPED[0], 0),
        vm(3, RUNNING[1], state::RUNNING | state::PAUSED),
    ];
    let table = |running_only| {
        let args = StatusArgs {
            filter: Filter {
                running_only,
                target: None,
            },
            json: false,
            verbose: false,
        };
        render(&vms, &args, &SystemAccounts).0.join("\n")
    };
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = status ] || exit 1\nif [ \"$2\" = -r ]; then\ncat <<'END'\n{}\nEND\nelse\ncat <<'END'\n{}\nEND\nfi\n",
        table(true),
        table(false)
    );
    let path = dir.join("vmctl");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Harness {
    dir: TempDir,
    path: String,
}

impl Harness {
    fn new() -> Harness {
        let dir = TempDir::new("completion");
        stub_vmctl(dir.path());
        std::fs::write(dir.join("capture.bash"), include_str!("capture.bash")).unwrap();
        std::fs::write(dir.join("capture.zsh"), include_str!("capture.zsh")).unwrap();
        // zsh and fish look completions up by directory, as installed.
        std::fs::create_dir(dir.join("fpath")).unwrap();
        std::fs::copy(completion("_vmctl"), dir.join("fpath/_vmctl")).unwrap();
        std::fs::create_dir(dir.join("fish")).unwrap();
        std::fs::copy(completion("vmctl.fish"), dir.join("fish/vmctl.fish")).unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Harness { dir, path }
    }

    /// What `shell` offers on a TAB after `line`, sorted.
    fn complete(&self, shell: Shell, line: &str) -> BTreeSet<String> {
        let dir = self.dir.path();
        // A shell that hangs fails the test instead of stalling it.
        let mut command = Command::new("timeout");
        command.arg("60");
        match shell {
            Shell::Bash => {
                command
                    .arg("bash")
                    .arg(dir.join("capture.bash"))
                    .arg(completion("vmctl.bash"))
                    .arg(line);
            }
            Shell::Zsh => {
                command
                    .args(["zsh", "-f"])
                    .arg(dir.join("capture.zsh"))
                    .arg(dir.join("fpath"))
                    .arg(line);
            }
            Shell::Fish => {
                command.args(["fish", "--no-config", "-c"]).arg(format!(
                    "set -p fish_complete_path {}; complete -C {}",
                    dir.join("fish").display(),
                    quote(line)
                ));
            }
        }
        let output = command
            .env("PATH", &self.path)
            .env("HOME", dir)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("TERM", "xterm")
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("run {shell:?} ({e}); scripts/install-deps.sh installs it"));
        assert!(
            output.status.success(),
            "{shell:?} on {line:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            // fish prints `candidate<TAB>description`.
            .map(|l| l.split('\t').next().unwrap_or_default().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

fn completion(name: &str) -> PathBuf {
    repo_root().join("completions").join(name)
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "\\'"))
}

fn set<'a>(words: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    words.into_iter().map(str::to_string).collect()
}

fn check(harness: &Harness, line: &str, expected: &BTreeSet<String>) {
    check_filtered(harness, line, expected, |_| true);
}

/// Compares only the candidates `keep` accepts (fish also offers words
/// that merely contain what was typed).
fn check_filtered(
    harness: &Harness,
    line: &str,
    expected: &BTreeSet<String>,
    keep: impl Fn(&str) -> bool,
) {
    for shell in SHELLS {
        let offered: BTreeSet<String> = harness
            .complete(shell, line)
            .into_iter()
            .filter(|c| keep(c))
            .collect();
        assert_eq!(&offered, expected, "{shell:?} completing {line:?}");
    }
}

fn is_flag(word: &str) -> bool {
    word.starts_with('-')
}

#[test]
fn command_words() {
    testkit::needs!("zsh", "fish");
    let harness = Harness::new();
    let names = set(COMMANDS.iter().map(|c| c.name));
    check(&harness, "vmctl ", &names);
    check(&harness, "vmctl -v ", &names);
    let st = set(COMMANDS
        .iter()
        .map(|c| c.name)
        .filter(|n| n.starts_with("st")));
    check(&harness, "vmctl st", &st);
    check(&harness, "vmctl -", &set(["-v"]));
}

#[test]
fn each_commands_flags() {
    testkit::needs!("zsh", "fish");
    let harness = Harness::new();
    for command in COMMANDS {
        let long: Vec<&str> = command.long_options.iter().map(|o| o.name).collect();
        let flags = getopt_flags(command.options, &long);
        check_filtered(
            &harness,
            &format!("vmctl {} -", command.name),
            &flags,
            is_flag,
        );
        // The word may be abbreviated as vmctl allows.
        let short = &command.name[..command.name.len() - 1];
        if COMMANDS
            .iter()
            .filter(|c| c.name.starts_with(short))
            .count()
            == 1
        {
            check_filtered(&harness, &format!("vmctl {short} -"), &flags, is_flag);
        }
        if !long.is_empty() {
            let longs = flags
                .iter()
                .filter(|f| f.starts_with("--"))
                .map(String::as_str);
            let line = format!("vmctl {} --", command.name);
            check_filtered(&harness, &line, &set(longs), is_flag);
        }
    }
}

#[test]
fn vm_names_from_status() {
    testkit::needs!("zsh", "fish");
    let harness = Harness::new();
    let running = set(RUNNING);
    let all = set(RUNNING.into_iter().chain(STOPPED));
    for line in [
        "vmctl console ",
        "vmctl pause ",
        "vmctl stop ",
        "vmctl stop -fw ",
        "vmctl wait ",
        "vmctl send ",
    ] {
        check(&harness, line, &running);
    }
    for line in [
        "vmctl start ",
        "vmctl star -c -m 1G ",
        "vmctl start -t ",
        "vmctl status ",
        "vmctl show -r ",
        "vmctl unpause ",
    ] {
        check(&harness, line, &all);
    }
    check(&harness, "vmctl console w", &set(["web"]));
}

#[test]
fn fixed_arguments() {
    testkit::needs!("zsh", "fish");
    let harness = Harness::new();
    check(&harness, "vmctl start -B ", &set(["disk", "cdrom", "net"]));
    check(&harness, "vmctl log ", &set(["brief", "verbose"]));
    check(&harness, "vmctl reset ", &set(["all", "switches", "vms"]));
    check(&harness, "vmctl reset s", &set(["switches"]));
    let names = set(COMMANDS.iter().map(|c| c.name));
    check(&harness, "vmctl help ", &names);
    check(&harness, "vmctl h ", &names);
    // Nothing to offer for a size or a new VM's name.
    check(&harness, "vmctl start -m ", &set([]));
    check(&harness, "vmctl receive ", &set([]));
}
