//! The lines the scenario runner prints and the harness reads back. Inside
//! the outer guest the runner's standard output is the outer serial
//! console, mixed with whatever the outer kernel prints; every line of
//! ours starts with `@@rg `, so the two never mix up.
//!
//! * `@@rg result NAME pass DETAIL` / `@@rg result NAME fail REASON`
//! * `@@rg log NAME TEXT`: one line of what explains a failure (the
//!   guest's console, vmd's log)
//! * `@@rg check NAME KIND ARG...`: a check only the host can make once
//!   the runner is done (`qemu-img check` of an image, the bytes an image
//!   holds), see [`crate::host_checks`]
//! * `@@rg retry NAME...`: the runner tries these scenarios (one group)
//!   again; until a new verdict on one of them comes, it is undecided, so
//!   an outer guest that ends mid-retry leaves its group to the next one
//! * `@@rg stall TEXT`: what the outer guest was doing when the runner
//!   had reported nothing for minutes ([`crate::stall`])
//! * `@@rg done`: the runner finished.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const PREFIX: &str = "@@rg ";

/// One scenario's outcome as the runner saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass(String),
    Fail(String),
}

/// Everything a run reported, in order.
#[derive(Debug, Default)]
pub struct Run {
    pub results: Vec<(String, Verdict)>,
    pub logs: Vec<(String, String)>,
    /// Each check with its scenario's name and the try it belongs to: how
    /// many verdicts on that scenario came before it (a check is asked
    /// for before its verdict is printed).
    pub checks: Vec<(String, usize, Vec<String>)>,
    /// Scenarios the runner began to try again and gave no new verdict
    /// on: the run did not decide them.
    pub retrying: Vec<String>,
    pub done: bool,
}

/// When the runner last reported, in milliseconds since [`started`].
static LAST_REPORT_MS: AtomicU64 = AtomicU64::new(0);

fn started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// Prints one line of ours.
pub fn emit(line: &str) {
    emit_aside(line);
    let now = started().elapsed().as_millis() as u64;
    LAST_REPORT_MS.store(now, Ordering::Relaxed);
}

/// Prints one line of ours that is not news of the run (a description
/// of a silence): [`quiet_for`] does not count it.
pub fn emit_aside(line: &str) {
    let mut out = std::io::stdout().lock();
    // One write per line: the outer console interleaves kernel messages
    // between writes, never inside one.
    let _ = out.write_all(format!("{PREFIX}{line}\n").as_bytes());
    let _ = out.flush();
}

/// How long ago the runner last reported (since it started, if never).
pub fn quiet_for() -> Duration {
    let last = Duration::from_millis(LAST_REPORT_MS.load(Ordering::Relaxed));
    started().elapsed().saturating_sub(last)
}

pub fn result(name: &str, verdict: &Verdict) {
    match verdict {
        Verdict::Pass(detail) => emit(&format!("result {name} pass {}", one_line(detail))),
        Verdict::Fail(reason) => emit(&format!("result {name} fail {}", one_line(reason))),
    }
}

pub fn log(name: &str, text: &str) {
    for line in text.lines() {
        emit(&format!("log {name} {line}"));
    }
}

pub fn check(name: &str, kind: &str, args: &[&str]) {
    emit(&format!("check {name} {kind} {}", args.join(" ")));
}

pub fn retry(names: &[&str]) {
    emit(&format!("retry {}", names.join(" ")));
}

pub fn done() {
    emit("done");
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

impl Run {
    /// Reads the runner's lines out of a console transcript.
    pub fn parse(transcript: &str) -> Run {
        let mut run = Run::default();
        for raw in transcript.lines() {
            let Some(at) = raw.find(PREFIX) else { continue };
            let line = raw[at + PREFIX.len()..].trim_end_matches('\r');
            let mut words = line.splitn(2, ' ');
            let kind = words.next().unwrap_or("");
            let rest = words.next().unwrap_or("");
            match kind {
                "result" => {
                    let mut parts = rest.splitn(3, ' ');
                    let name = parts.next().unwrap_or("").to_string();
                    let verdict = parts.next().unwrap_or("");
                    let text = parts.next().unwrap_or("").to_string();
                    let verdict = if verdict == "pass" {
                        Verdict::Pass(text)
                    } else {
                        Verdict::Fail(text)
                    };
                    run.retrying.retain(|n| *n != name);
                    run.results.push((name, verdict));
                }
                "retry" => run
                    .retrying
                    .extend(rest.split_whitespace().map(String::from)),
                "log" => {
                    let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
                    run.logs.push((name.to_string(), text.to_string()));
                }
                "check" => {
                    let mut parts = rest.split(' ').map(String::from);
                    let name = parts.next().unwrap_or_default();
                    let tried = run.results.iter().filter(|(n, _)| *n == name).count();
                    run.checks.push((name, tried, parts.collect()));
                }
                "done" => run.done = true,
                _ => {}
            }
        }
        run
    }

    /// The checks asked for by the last try of scenario `name`.
    pub fn last_checks(&self, name: &str) -> Vec<&[String]> {
        let tries = self.results.iter().filter(|(n, _)| n == name).count();
        self.checks
            .iter()
            .filter(|(n, tried, _)| n == name && tries > 0 && *tried == tries - 1)
            .map(|(_, _, args)| args.as_slice())
            .collect()
    }

    /// Whether the run decided `name`: it gave a verdict and did not begin
    /// to try it again after the last one.
    pub fn decided(&self, name: &str) -> bool {
        !self.retrying.iter().any(|n| n == name) && self.results.iter().any(|(n, _)| n == name)
    }

    /// The lines logged for scenario `name`.
    pub fn log_of(&self, name: &str) -> Vec<&str> {
        self.logs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, l)| l.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_found_among_kernel_messages() {
        let transcript = "[ 1.0] kvm: loaded\r\n\
            @@rg result boot-direct pass cpus=2\r\n\
            [ 2.0] random\r\n\
            junk@@rg result net-dhcp fail no lease\n\
            @@rg log net-dhcp guest# udhcpc\n\
            @@rg check blk-qcow2 qcow2 /data/a.qcow2\n\
            @@rg done\n";
        let run = Run::parse(transcript);
        assert_eq!(
            run.results,
            vec![
                ("boot-direct".into(), Verdict::Pass("cpus=2".into())),
                ("net-dhcp".into(), Verdict::Fail("no lease".into())),
            ]
        );
        assert_eq!(run.log_of("net-dhcp"), vec!["guest# udhcpc"]);
        assert_eq!(
            run.checks,
            vec![(
                "blk-qcow2".to_string(),
                0,
                vec!["qcow2".to_string(), "/data/a.qcow2".to_string()]
            )]
        );
        assert!(run.done);
        assert!(!Run::parse("@@rg result x pass\n").done);
    }

    #[test]
    fn a_second_try_brings_its_own_checks() {
        let run = Run::parse(
            "@@rg check blk-raw ext2-file /w/raw.img /blob aaaa\n\
             @@rg result blk-raw fail the first try\n\
             @@rg check blk-raw ext2-file /w/raw.img /blob bbbb\n\
             @@rg result blk-raw pass the second\n",
        );
        let checks = run.last_checks("blk-raw");
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].last().map(String::as_str), Some("bbbb"));
        assert!(run.last_checks("other").is_empty());
    }

    #[test]
    fn a_retry_cut_short_leaves_its_scenarios_undecided() {
        let run = Run::parse(
            "@@rg result cloud-a fail the first try\n\
             @@rg result cloud-b fail not reached\n\
             @@rg result main-a pass fine\n\
             @@rg retry cloud-a cloud-b\n\
             @@rg result cloud-a pass the second try\n",
        );
        assert!(run.decided("cloud-a"));
        assert!(!run.decided("cloud-b"), "its retry gave no verdict yet");
        assert!(run.decided("main-a"));
        assert!(!run.decided("never-run"));
    }
}
