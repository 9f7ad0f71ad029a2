//! `realguest`: runs the real-guest scenarios and prints each by name.
//!
//! * `realguest [--fixtures DIR] [--keep DIR]`, as root: builds the
//!   fixtures (scripts/real-guest-fixture.sh), runs the scenarios directly
//!   on hardware KVM or nested under QEMU's emulator, checks the images on
//!   the host, prints one line per scenario and `N passed, N failed`;
//!   exits 1 if any failed.
//! * `realguest guest --fixtures DIR --work DIR --bin-dir DIR`: the runner
//!   itself (inside the outer guest, or started by the above).
//! * `realguest bench ...` and `realguest soak ...`: the benchmark and the
//!   boot soak (bench/real-guest-bench.sh, bench/real-guest-soak.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use realguest::report::{self, Run, Verdict};
use realguest::{build_fixture, guest, host_checks, outer, scenarios};

mod soak;

/// Where the scenarios' images live, at the same path on the host and in
/// the outer guest.
const WORK_ROOT: &str = "/var/tmp/vmd-real-guests";
const SWITCH_BRIDGE: &str = "rgbr0";
/// What the cloud group adds to the outer guest's time limit: its VM's
/// first boot and its reboot may each take up to 15 minutes nested, and a
/// failed try runs again.
const CLOUD_TIME: Duration = Duration::from_secs(40 * 60);

fn arg_value(args: &[String], flag: &str) -> Option<PathBuf> {
    realguest::arg_value(args, flag).map(PathBuf::from)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = realguest::bench::dispatch(&args) {
        return code;
    }
    if let Some(code) = soak::dispatch(&args) {
        return code;
    }
    if args.first().map(String::as_str) == Some("guest") {
        return runner(&args);
    }
    match host(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("realguest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The runner: a vmd of its own, a bridge for the switch scenario, every
/// scenario.
fn runner(args: &[String]) -> ExitCode {
    let (Some(fixtures), Some(work), Some(bin_dir)) = (
        arg_value(args, "--fixtures"),
        arg_value(args, "--work"),
        arg_value(args, "--bin-dir"),
    ) else {
        eprintln!("usage: realguest guest --fixtures DIR --work DIR --bin-dir DIR");
        return ExitCode::from(2);
    };
    // SAFETY: set before any thread is started.
    unsafe { std::env::set_var("VMD_BIN_DIR", &bin_dir) };
    realguest::stall::watch(realguest::stall::DESCRIBE_AFTER);
    // Inside the outer guest only: one idle KVM VM for the whole run, so
    // the outer kernel does not patch its code and switch SVM on and off
    // around every guest boot (realguest::kvm_hold).
    let _held = std::env::var_os("VMD_REAL_GUESTS_NESTED").and_then(|_| {
        let (held, note) = realguest::kvm_hold::hold_noted();
        report::emit(&format!("outer note: {note}"));
        held
    });
    let _ = std::fs::create_dir_all(&work);
    let _ = Command::new("ip")
        .args(["link", "add", SWITCH_BRIDGE, "type", "bridge"])
        .status();
    let _ = Command::new("ip")
        .args(["link", "set", SWITCH_BRIDGE, "up"])
        .status();
    let conf = work.join("vm.conf");
    let _ = std::fs::write(
        &conf,
        format!("switch \"rgswitch\" {{\n\tinterface {SWITCH_BRIDGE}\n}}\n"),
    );
    let daemon = testkit::daemon::TestDaemon::start_with(&["-f", &conf.display().to_string()]);
    let env = guest::Env {
        daemon,
        vmctl: bin_dir.join("vmctl"),
        fixtures,
        work,
    };
    scenarios::run_all(&env);
    drop(env);
    let _ = Command::new("ip")
        .args(["link", "del", SWITCH_BRIDGE])
        .status();
    report::done();
    ExitCode::SUCCESS
}

/// Whether `/dev/kvm` is hardware KVM: the vendor module is loaded.
fn hardware_kvm() -> Option<&'static str> {
    if !Path::new("/dev/kvm").exists() {
        return None;
    }
    ["kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|m| Path::new("/sys/module").join(m).exists())
}

fn host(args: &[String]) -> Result<bool, String> {
    let fixtures = arg_value(args, "--fixtures")
        .unwrap_or_else(|| testkit::fixtures::root().join("real-guest"));
    build_fixture("real-guest-fixture.sh", &fixtures, "the fixtures")?;
    // The cloud image, when its group runs: minutes to build the first
    // time, then cached beside the other fixtures.
    let cloud = scenarios::wanted_here("cloud");
    if cloud {
        eprint!(
            "{}",
            build_fixture("cloud-image-fixture.sh", &fixtures, "the cloud image")?
        );
    }
    let version = std::fs::read_to_string(fixtures.join("version")).unwrap_or_default();
    let bin_dir = testkit::daemon::bin_dir();
    let work_root = PathBuf::from(WORK_ROOT);
    let scratch = arg_value(args, "--keep").unwrap_or_else(|| bin_dir.join("real-guests"));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(work_root.join("work"));

    let forced = std::env::var("VMD_REAL_GUESTS").ok();
    let direct = match forced.as_deref() {
        Some("direct") => true,
        Some("nested") => false,
        _ => hardware_kvm().is_some(),
    };
    if direct {
        println!(
            "real guests: /dev/kvm is hardware KVM ({}): the scenarios run directly; guest kernel {}",
            hardware_kvm().unwrap_or("forced"),
            version.trim()
        );
        let out = Command::new(bin_dir.join("realguest"))
            .arg("guest")
            .arg("--fixtures")
            .arg(&fixtures)
            .arg("--work")
            .arg(work_root.join("work"))
            .arg("--bin-dir")
            .arg(&bin_dir)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| e.to_string())?;
        let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
        std::fs::write(scratch.join("transcript.log"), &transcript).map_err(|e| e.to_string())?;
        let run = Run::parse(&transcript);
        let mut verdicts = vec![None; scenarios::ALL.len()];
        merge(&mut verdicts, &run, None, &scratch);
        return Ok(summarize(&verdicts, &run, &transcript));
    }
    println!(
        "real guests: /dev/kvm is not hardware KVM here: the scenarios run nested, \
         inside qemu-system-x86_64 -accel tcg -cpu max (emulated SVM); guest kernel {}",
        version.trim()
    );
    // The emulated SVM at times takes the whole outer guest down (a reset,
    // a panic in the outer kernel); the groups it did not finish then run
    // again in a new outer guest. A CI dry run with the outer KVM's nested
    // paging on lost five outer guests in a row (three triple faults, two
    // panics): up to eight, and none started after OUTER_BUDGET, which
    // keeps the suite inside CI's limit on a bad day.
    let mut verdicts = vec![None; scenarios::ALL.len()];
    let mut pending: Option<Vec<&str>> = None;
    let mut last = (Run::default(), String::new());
    const OUTER_BOOTS: u32 = 8;
    const OUTER_BUDGET: Duration = Duration::from_secs(40 * 60);
    let started = std::time::Instant::now();
    for attempt in 1..=OUTER_BOOTS {
        // The cloud scenarios log in with OpenSSH's client.
        let programs = if cloud {
            ["/usr/bin/ssh", "/usr/bin/ssh-keygen"]
                .map(PathBuf::from)
                .to_vec()
        } else {
            Vec::new()
        };
        let payload = outer::Payload {
            programs,
            command: pending.as_ref().map(|groups| {
                format!(
                    "export VMD_REAL_GUESTS_GROUPS={}\n{}",
                    groups.join(","),
                    outer::scenario_command(&work_root)
                )
            }),
            ..Default::default()
        };
        let initramfs =
            outer::build_initramfs_with(&scratch, &bin_dir, &fixtures, &work_root, &payload)?;
        let extra: &[&str] = if cloud { &["cloud.qcow2"] } else { &[] };
        let disk = outer::build_data_disk_with(&scratch, &fixtures, extra)?;
        // The cloud group's first boot and reboot take up to half an hour
        // nested (crates/realguest/src/scenarios/cloud.rs).
        let timeout = outer::OUTER_TIMEOUT + if cloud { CLOUD_TIME } else { Duration::ZERO };
        // An outer guest stopped as hung, or whose QEMU failed, is one
        // that ended early too: what it reported is on its console, and
        // the groups it left run again in the next one.
        let transcript = match outer::boot(
            &scratch,
            &fixtures.join("bzImage"),
            &initramfs,
            &disk,
            timeout,
        ) {
            Ok(transcript) => transcript,
            Err(e) => {
                println!("real guests: {e}");
                std::fs::read_to_string(scratch.join("outer-console.log")).unwrap_or_default()
            }
        };
        if let Err(e) = outer::extract_work(&disk, &work_root) {
            // The scenarios that wrote there fail their host checks.
            println!("real guests: the outer guest's work directory is unreadable: {e}");
        }
        let _ = std::fs::remove_file(&disk);
        outer::keep_logs(&scratch, "transcript", attempt, &transcript)?;
        let run = Run::parse(&transcript);
        merge(&mut verdicts, &run, pending.as_deref(), &scratch);
        let unfinished: Vec<&str> = scenarios::groups()
            .into_iter()
            .filter(|(group, _)| scenarios::wanted_here(group))
            .filter(|(_, names)| {
                names.iter().any(|n| {
                    let i = scenarios::ALL.iter().position(|a| a == n).unwrap_or(0);
                    verdicts[i].is_none()
                })
            })
            .map(|(group, _)| group)
            .collect();
        last = (run, transcript);
        if unfinished.is_empty() || attempt == OUTER_BOOTS {
            break;
        }
        if started.elapsed() >= OUTER_BUDGET {
            println!(
                "real guests: {} min spent in {attempt} outer guests: not starting another for {}",
                started.elapsed().as_secs() / 60,
                unfinished.join(", ")
            );
            break;
        }
        println!(
            "real guests: the outer guest ended before the runner finished; \
             running {} again in a new outer guest",
            unfinished.join(", ")
        );
        pending = Some(unfinished);
    }
    Ok(summarize(&verdicts, &last.0, &last.1))
}

/// Takes a run's verdicts into `verdicts` (one per scenario of
/// [`scenarios::ALL`]): only those of `groups` when given. A scenario the
/// runner tried twice keeps its last verdict, and says what the first try
/// met; one that passed must also pass the host's checks.
fn merge(verdicts: &mut [Option<Verdict>], run: &Run, groups: Option<&[&str]>, scratch: &Path) {
    let chosen: Vec<&str> = scenarios::groups()
        .into_iter()
        .filter(|(g, _)| groups.is_none_or(|gs| gs.contains(g)) && scenarios::wanted_here(g))
        .flat_map(|(_, names)| names.iter().copied())
        .collect();
    for (i, name) in scenarios::ALL.iter().enumerate() {
        if !chosen.contains(name) {
            continue;
        }
        let tries: Vec<&Verdict> = run
            .results
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect();
        let Some(&last) = tries.last() else { continue };
        if !run.decided(name) {
            // A retry the outer guest cut short: the group runs again in
            // the next one.
            continue;
        }
        let verdict = match last {
            Verdict::Pass(detail) => {
                let detail = match tries.first() {
                    Some(Verdict::Fail(first)) if tries.len() > 1 => {
                        let first: String = first.chars().take(300).collect();
                        format!("{detail} (try {}; the first failed: {first})", tries.len())
                    }
                    _ => detail.clone(),
                };
                run.last_checks(name)
                    .into_iter()
                    .try_fold(detail, |detail, check| {
                        host_checks::run(check, scratch).map(|c| format!("{detail}; {c}"))
                    })
                    .map_or_else(Verdict::Fail, Verdict::Pass)
            }
            fail => fail.clone(),
        };
        verdicts[i] = Some(verdict);
    }
}

/// Prints one line per scenario, what explains the failures, and the
/// closing count.
fn summarize(verdicts: &[Option<Verdict>], run: &Run, transcript: &str) -> bool {
    let verdicts: Vec<(String, Verdict)> = scenarios::ALL
        .iter()
        .zip(verdicts)
        .filter(|(name, _)| scenarios::scenario_wanted(name))
        .map(|(name, v)| {
            let v = v.clone().unwrap_or_else(|| {
                let first = run.results.iter().find(|(n, _)| n == name);
                Verdict::Fail(match first {
                    Some((_, Verdict::Fail(reason))) => format!(
                        "the outer guest ended while the runner tried it again; \
                         the try before failed: {reason}"
                    ),
                    _ => "the runner did not finish: the outer guest or the runner ended \
                          first (see the transcript's last lines below)"
                        .into(),
                })
            });
            (name.to_string(), v)
        })
        .collect();
    println!();
    let mut failed = 0;
    for (name, verdict) in &verdicts {
        match verdict {
            Verdict::Pass(detail) => println!("PASS {name:<16} {detail}"),
            Verdict::Fail(reason) => {
                failed += 1;
                println!("FAIL {name:<16} {reason}");
            }
        }
    }
    if !run.done {
        println!("\n--- the transcript's last lines ---");
        let lines: Vec<&str> = transcript.lines().collect();
        for line in &lines[lines.len().saturating_sub(30)..] {
            println!("{line}");
        }
    }
    // The runner logs the console and vmd's log of every group that
    // failed; they explain the failures above.
    if failed > 0 && !run.logs.is_empty() {
        println!("\n--- what the guests and vmd showed ---");
        for (group, line) in &run.logs {
            println!("[{group}] {line}");
        }
    }
    println!(
        "\nreal-guests: {} passed, {failed} failed",
        verdicts.len() - failed
    );
    failed == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_whose_retry_was_cut_short_stays_undecided() {
        let run = Run::parse(
            "@@rg result boot-direct fail the first try\n\
             @@rg retry boot-direct\n\
             @@rg result boot-direct pass the second try\n\
             @@rg result cloud-runcmd pass fine\n\
             @@rg result cloud-ssh fail no answer\n\
             @@rg retry cloud-runcmd cloud-ssh\n\
             @@rg result cloud-runcmd pass again\n",
        );
        let mut verdicts = vec![None; scenarios::ALL.len()];
        merge(&mut verdicts, &run, None, Path::new("/nonexistent"));
        let of =
            |name: &str| verdicts[scenarios::ALL.iter().position(|n| *n == name).unwrap()].clone();
        assert!(matches!(of("boot-direct"), Some(Verdict::Pass(d)) if d.contains("try 2")));
        assert_eq!(of("cloud-runcmd"), Some(Verdict::Pass("again".into())));
        assert_eq!(of("cloud-ssh"), None, "the retry gave no verdict on it");
    }
}
