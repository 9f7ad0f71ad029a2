//! What the outer guest was doing when the runner stopped reporting.
//!
//! The host stops an outer guest that prints nothing for a while (see
//! [`crate::outer`]), and a silent outer guest says nothing about why: the
//! whole outer kernel may be stuck (a vCPU inside the emulated `VMRUN`
//! that never exits), or only the runner, waiting on vmd or on a guest.
//! [`watch`] tells them apart from the inside: once the runner has
//! reported nothing for the time given, it prints, once per silence, the
//! load and every user thread's state, wait channel and kernel stack.
//! An outer guest stopped without those lines was frozen whole.
//!
//! It does not ask the outer kernel for each CPU's backtrace (`sysrq l`):
//! that sends every other CPU a non-maskable interrupt, and a CPU that
//! takes one inside the emulated `VMRUN` crosses the emulated SVM's NMI
//! path. On 2026-12-07 two outer guests in a row (a CI dry run's, then a
//! soak's) printed the request's first line and nothing more, and were
//! stopped minutes later with both CPUs halted. The threads' lines, which
//! need no interrupt, tell a stuck runner from a stuck guest; the host
//! reads a frozen outer guest's registers itself (`outer.rs`).

use std::path::Path;
use std::time::Duration;

use crate::report;

/// The silence the runners describe: well before the host takes the
/// outer guest for hung.
pub const DESCRIBE_AFTER: Duration = Duration::from_secs(3 * 60);
const _: () = assert!(DESCRIBE_AFTER.as_secs() < crate::outer::OUTER_SILENCE.as_secs());

/// Starts the watcher thread: a silence of the runner longer than
/// `after` is described once.
pub fn watch(after: Duration) {
    std::thread::spawn(move || {
        let mut described = false;
        loop {
            std::thread::sleep(Duration::from_secs(5));
            let quiet = report::quiet_for();
            if quiet < after {
                described = false;
            } else if !described {
                described = true;
                for line in describe(quiet) {
                    report::emit_aside(&format!("stall {line}"));
                }
            }
        }
    });
}

/// The lines of a description.
fn describe(quiet: Duration) -> Vec<String> {
    let mut out = vec![format!(
        "the runner has reported nothing for {} s",
        quiet.as_secs()
    )];
    out.extend(snapshot());
    out
}

/// What the machine is doing now: the load and every user thread. Also
/// for a guest that hung while the runner went on.
pub fn snapshot() -> Vec<String> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = vec![format!("load {}", load.trim())];
    out.extend(threads(Path::new("/proc")));
    out
}

/// One line per thread of every user process: pid, tid, name, state,
/// wait channel and kernel stack (innermost first).
fn threads(proc: &Path) -> Vec<String> {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return out;
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let dir = proc.join(pid.to_string());
        // Kernel threads have no command line.
        if read(&dir.join("cmdline")).is_empty() {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(dir.join("task")) else {
            continue;
        };
        let mut tids: Vec<u32> = tasks
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_unstable();
        for tid in tids {
            let task = dir.join("task").join(tid.to_string());
            let stat = read(&task.join("stat"));
            out.push(format!(
                "{pid}/{tid} {} wchan={} stack={}",
                state_of(&stat),
                read(&task.join("wchan")).trim(),
                one_line_stack(&read(&task.join("stack")))
            ));
        }
    }
    out
}

/// `(name) S` out of a `stat` line: the name may hold spaces and
/// parentheses, the state follows the last `)`.
fn state_of(stat: &str) -> String {
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return "?".into();
    };
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("?");
    format!("({}) {state}", &stat[open + 1..close])
}

/// A kernel stack's frames on one line, without their offsets.
fn one_line_stack(stack: &str) -> String {
    let frames: Vec<&str> = stack
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|f| f.split('+').next().unwrap_or(f))
        .collect();
    if frames.is_empty() {
        "-".into()
    } else {
        frames.join("<")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_name_and_state() {
        assert_eq!(
            state_of("176 (vcpu 0) R 1 176 0 0 -1 4194624"),
            "(vcpu 0) R"
        );
        assert_eq!(state_of("9 (a) b)) S 1"), "(a) b)) S");
        assert_eq!(state_of(""), "?");
    }

    #[test]
    fn a_kernel_stack_is_one_line_of_frames() {
        let stack = "[<0>] kvm_vcpu_block+0x3f/0x80 [kvm]\n[<0>] kvm_arch_vcpu_ioctl_run+0x1c2/0x5a0 [kvm]\n";
        assert_eq!(
            one_line_stack(stack),
            "kvm_vcpu_block<kvm_arch_vcpu_ioctl_run"
        );
        assert_eq!(one_line_stack(""), "-");
    }

    #[test]
    fn this_process_is_described() {
        let me = std::process::id();
        let lines = threads(Path::new("/proc"));
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{me}/{me} ("))),
            "{lines:?}"
        );
    }
}
