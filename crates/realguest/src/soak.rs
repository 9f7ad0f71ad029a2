//! `realguest soak`: boots the benchmark's guest (see [`bench`]) many
//! times under our vmd and under QEMU with KVM, alternating, and counts
//! the boots that die or hang on each side. Nested, an inner guest dies
//! now and then (a vCPU triple fault with no word from the guest, or a
//! hang early in boot); the same count for QEMU's own KVM in the same
//! outer guest says whether the emulation underneath or vmd causes it.
//! bench/real-guest-soak.sh builds and runs it.
//!
//! Each try on a side: start the guest, wait for its `@@guest ready`,
//! `reboot -f` it and wait for the next boot's `@@guest ready` (a guest
//! reboot showed hangs before), then write and read 64 MiB with O_DIRECT
//! on its disk, then end it. A try fails as
//!
//! * `reset`: the guest restarted without having been asked (the
//!   kernel's banner came twice after the last requested restart, or vmd
//!   logged a triple fault), whether or not it then came up again;
//! * `hung`: no `@@guest ready` (or the disk command did not finish)
//!   within the time, with no reset seen;
//! * `ended`: the VM went away (the console client or QEMU ended);
//! * `error`: the harness could not start or stop the VM.
//!
//! A failed try of ours also says whether the guest answers on a console
//! attached anew (`fresh_console=answers` or `silent`).
//!
//! Nested, the tries run in several outer guests (`--per-outer` pairs in
//! each): an outer guest may run 20 minutes, and one that dies takes only
//! its own tries with it.
//!
//! With `--trace`, the outer kernel traces its KVM's exits and injections
//! (tracefs events `kvm:kvm_exit`, `kvm:kvm_inj_exception`,
//! `kvm:kvm_inj_virq`, `kvm:kvm_userspace_exit`) through every try, and a
//! try that reset prints what came before each `shutdown` exit: on AMD,
//! KVM resets a vCPU before vmd hears of its triple fault, so this trace
//! is the only record of where the guest was (the exit's `rip`; the
//! guests boot with `nokaslr`, so it reads against the kernel's
//! System.map).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use realguest::arg_value;
use realguest::bench::{self, Vm};
use realguest::guest::{COMMAND_TIMEOUT, Env};

/// The kernel's first line, on every boot.
const BANNER: &str = "Linux version ";
/// What the kernel prints as it restarts on request.
const RESTARTING: &str = "reboot: Restarting system";
/// What vmd logs when a vCPU triple-faults (crates/vmm, vcpu.rs).
const TRIPLE_FAULT: &str = "triple fault";
/// The disk command run after the reboot.
const WORK: &str = "dd if=/dev/zero of=/dev/vda bs=1M count=64 oflag=direct 2>/dev/null && \
                    dd if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct 2>/dev/null";

/// The `soak` and `soak-guest` subcommands; `None` for any other.
pub fn dispatch(args: &[String]) -> Option<ExitCode> {
    match args.first().map(String::as_str) {
        Some("soak") => Some(match host(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("realguest soak: {e}");
                ExitCode::FAILURE
            }
        }),
        Some("soak-guest") => Some(runner(args)),
        _ => None,
    }
}

/// One try's result, as the runner reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Try {
    pub side: String,
    pub n: u32,
    /// `ok`, `reset`, `hung`, `ended` or `error`.
    pub outcome: String,
    /// Where it failed: `boot`, `reboot`, `disk`, or `-`.
    pub phase: String,
    /// The rest: times, unexpected restarts, the console's last line.
    pub notes: Vec<(String, String)>,
}

impl Try {
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "soak try side={} n={} outcome={} phase={}",
            self.side, self.n, self.outcome, self.phase
        );
        for (k, v) in &self.notes {
            let v: String = v
                .chars()
                .filter(|c| !c.is_control())
                .map(|c| if c.is_whitespace() { '_' } else { c })
                .collect();
            line.push_str(&format!(" {k}={}", if v.is_empty() { "-" } else { &v }));
        }
        line
    }

    pub fn parse(line: &str) -> Option<Try> {
        let body = line.split_once("@@rg soak try ")?.1;
        let mut t = Try {
            side: String::new(),
            n: 0,
            outcome: String::new(),
            phase: String::new(),
            notes: Vec::new(),
        };
        for word in body.split_whitespace() {
            let (k, v) = word.split_once('=')?;
            match k {
                "side" => t.side = v.into(),
                "n" => t.n = v.parse().ok()?,
                "outcome" => t.outcome = v.into(),
                "phase" => t.phase = v.into(),
                _ => t.notes.push((k.into(), v.into())),
            }
        }
        (!t.side.is_empty() && !t.outcome.is_empty()).then_some(t)
    }

    fn note(&self, key: &str) -> &str {
        self.notes
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Unrequested restarts in a console transcript: the kernel banners after
/// the last requested restart, less the one boot expected there.
pub fn unrequested_restarts(console: &str) -> usize {
    let since = console
        .rfind(RESTARTING)
        .map_or(console, |at| &console[at..]);
    since.matches(BANNER).count().saturating_sub(1)
}

/// Per side: tries, and how many ended each way.
pub fn summarize(tries: &[Try]) -> String {
    let outcomes = ["ok", "reset", "hung", "ended", "error"];
    let mut out = format!("{:<6} {:>6}", "side", "tries");
    for o in outcomes {
        out.push_str(&format!(" {o:>6}"));
    }
    out.push_str(&format!(" {:>16}\n", "median boot (s)"));
    for side in bench::SIDES {
        let mine: Vec<&Try> = tries.iter().filter(|t| t.side == side).collect();
        out.push_str(&format!("{side:<6} {:>6}", mine.len()));
        for o in outcomes {
            out.push_str(&format!(
                " {:>6}",
                mine.iter().filter(|t| t.outcome == o).count()
            ));
        }
        let mut boots: Vec<f64> = mine
            .iter()
            .filter_map(|t| t.note("boot_s").parse().ok())
            .collect();
        let median = bench::median(&mut boots).map_or("-".into(), |m| format!("{m:.1}"));
        out.push_str(&format!(" {median:>16}\n"));
    }
    out
}

/// `realguest soak [--pairs N] [--per-outer K] [--minutes M] [--cpus C] [--trace] [--hold-kvm] [--side S]
/// [--qemu-ram memfd|anonymous] [--shmem-thp MODE] [--outer-npt on|off]
/// [--vmd-dir DIR] [--fixtures DIR] [--keep DIR]`, as root.
fn host(args: &[String]) -> Result<(), String> {
    let setup = bench::setup(args, "real-guest-soak")?;
    let number = |flag: &str, default: u32| -> Result<u32, String> {
        arg_value(args, flag)
            .map(|v| v.parse().map_err(|_| format!("{flag} {v}: not a number")))
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    let pairs = number("--pairs", 20)?;
    // About a minute a pair nested: an outer guest has 20.
    let per_outer = number("--per-outer", 8)?.max(1);
    let minutes = number("--minutes", 0)?;
    let cpus = number("--cpus", 1)?.max(1);
    let trace = args.iter().any(|a| a == "--trace");
    let hold_kvm = args.iter().any(|a| a == "--hold-kvm");
    let side = arg_value(args, "--side");
    let thp = arg_value(args, "--shmem-thp");
    let qemu_ram = arg_value(args, "--qemu-ram");
    if let Some(ram) = qemu_ram.as_deref()
        && ram != "memfd"
        && ram != "anonymous"
    {
        return Err(format!("--qemu-ram {ram}: not memfd or anonymous"));
    }
    if let Some(side) = &side
        && !bench::SIDES.contains(&side.as_str())
    {
        return Err(format!(
            "--side {side}: not one of {}",
            bench::SIDES.join(", ")
        ));
    }
    let budget = (minutes > 0).then(|| Duration::from_secs(u64::from(minutes) * 60));
    println!(
        "real-guest soak: {pairs} tries {}, {cpus} vCPU(s) a guest, vmd from {}, {}",
        side.as_ref()
            .map_or("a side (vmd, QEMU, vmd, ...)".into(), |s| format!(
                "on {s} only"
            )),
        setup.vmd_dir.display(),
        setup.layer()
    );
    let started = Instant::now();
    let mut tries: Vec<Try> = Vec::new();
    let mut outer_failures = Vec::new();
    let mut first = 1;
    let mut batch = 0;
    while first <= pairs {
        if budget.is_some_and(|b| started.elapsed() >= b) {
            println!("real-guest soak: --minutes {minutes} spent; stopping before try {first}");
            break;
        }
        batch += 1;
        let count = per_outer.min(pairs - first + 1);
        let transcript = setup.run(
            "soak-guest",
            &format!(
                "--first {first} --pairs {count} --cpus {cpus}{}{}{}{}{}",
                if trace { " --trace" } else { "" },
                thp.as_ref()
                    .map_or(String::new(), |m| format!(" --shmem-thp {m}")),
                if qemu_ram.as_deref() == Some("memfd") {
                    " --qemu-ram-memfd"
                } else {
                    ""
                },
                if hold_kvm { " --hold-kvm" } else { "" },
                side.as_ref()
                    .map_or(String::new(), |s| format!(" --side {s}"))
            ),
            &[
                "soak try",
                "soak trace",
                "stall",
                "outer",
                "fatal",
                "runner-exit",
            ],
        );
        // An outer guest that died still leaves the tries it reported.
        let transcript = match transcript {
            Ok(t) if !t.contains("@@rg soak done") => {
                // Reset or powered off mid-run: its kernel may have said
                // why (a panic's first line).
                let why = t
                    .lines()
                    .find(|l| l.contains("BUG:") || l.contains("Kernel panic"))
                    .unwrap_or("no word from its kernel")
                    .trim()
                    .to_string();
                println!(
                    "real-guest soak: outer guest {batch} ended before its runner finished: {why}"
                );
                outer_failures.push(why);
                t
            }
            Ok(t) => t,
            Err(e) => {
                println!("real-guest soak: outer guest {batch}: {e}");
                outer_failures.push(e);
                std::fs::read_to_string(setup.scratch.join("outer-console.log")).unwrap_or_default()
            }
        };
        realguest::outer::keep_logs(&setup.scratch, "soak-transcript", batch, &transcript)?;
        tries.extend(transcript.lines().filter_map(Try::parse));
        first += count;
    }
    println!();
    for t in tries.iter().filter(|t| t.outcome != "ok") {
        println!("{}", t.to_line());
    }
    println!();
    print!("{}", summarize(&tries));
    println!(
        "outer guests: {batch}, of which {} ended abnormally; transcripts in {}",
        outer_failures.len(),
        setup.scratch.display()
    );
    Ok(())
}

/// The runner: `realguest soak-guest --fixtures DIR --bin-dir DIR
/// --first N --pairs K`, where KVM runs whole kernels.
fn runner(args: &[String]) -> ExitCode {
    let (Some(fixtures), Some(bin_dir)) =
        (arg_value(args, "--fixtures"), arg_value(args, "--bin-dir"))
    else {
        eprintln!(
            "usage: realguest soak-guest --fixtures DIR --bin-dir DIR --first N --pairs K [--cpus C]"
        );
        return ExitCode::from(2);
    };
    let number = |flag: &str| arg_value(args, flag).and_then(|v| v.parse::<u32>().ok());
    let first = number("--first").unwrap_or(1);
    let pairs = number("--pairs").unwrap_or(1);
    let cpus = number("--cpus").unwrap_or(1);
    let trace = if args.iter().any(|a| a == "--trace") {
        match KvmTrace::start() {
            Ok(t) => Some(t),
            Err(e) => {
                bench::emit(&format!("soak trace unavailable: {e}"));
                None
            }
        }
    } else {
        None
    };
    if args.iter().any(|a| a == "--qemu-ram-memfd") {
        // SAFETY: no thread is started yet.
        unsafe { std::env::set_var(bench::QEMU_RAM_MEMFD, "1") };
    }
    let _held = args.iter().any(|a| a == "--hold-kvm").then(|| {
        let (held, note) = realguest::kvm_hold::hold_noted();
        bench::emit(&format!("soak note: {note}"));
        held
    });
    let env = bench::runner_env(&fixtures, &bin_dir);
    let thp = bench::set_shmem_thp(arg_value(args, "--shmem-thp").as_deref());
    bench::emit(&format!("soak note: shmem_enabled {}", thp.trim()));
    realguest::stall::watch(realguest::stall::DESCRIBE_AFTER);
    let only = arg_value(args, "--side");
    for n in first..first + pairs {
        for side in bench::SIDES
            .into_iter()
            .filter(|s| only.as_deref().is_none_or(|o| o == *s))
        {
            if let Some(trace) = &trace {
                trace.clear();
            }
            let t = one(&env, side, n, cpus);
            bench::emit(&t.to_line());
            if let Some(trace) = &trace
                && t.outcome == "reset"
            {
                for line in trace.before_shutdowns(TRACE_CONTEXT) {
                    bench::emit(&format!("soak trace {side} {n}: {line}"));
                }
            }
        }
    }
    drop(env);
    bench::emit("soak done");
    ExitCode::SUCCESS
}

/// Trace lines shown before each `shutdown` exit.
const TRACE_CONTEXT: usize = 60;

/// The outer kernel's tracefs, recording KVM's exits and injections.
struct KvmTrace {
    dir: std::path::PathBuf,
}

impl KvmTrace {
    const EVENTS: [&str; 4] = [
        "kvm/kvm_exit",
        "kvm/kvm_inj_exception",
        "kvm/kvm_inj_virq",
        "kvm/kvm_userspace_exit",
    ];

    fn start() -> Result<KvmTrace, String> {
        let dir = std::path::PathBuf::from("/sys/kernel/tracing");
        if !dir.join("trace").exists() {
            realguest::command_output(
                std::process::Command::new("mount")
                    .args(["-t", "tracefs", "tracefs"])
                    .arg(&dir),
            )?;
        }
        let t = KvmTrace { dir };
        // Per CPU; the tries' last seconds are what matter.
        t.write("buffer_size_kb", "16384")?;
        for event in Self::EVENTS {
            t.write(&format!("events/{event}/enable"), "1")?;
        }
        t.write("tracing_on", "1")?;
        Ok(t)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.dir.join(file), value)
            .map_err(|e| format!("{}: {e}", self.dir.join(file).display()))
    }

    /// Empties the buffer (opening `trace` for writing clears it).
    fn clear(&self) {
        let _ = self.write("trace", "");
    }

    /// The `context` lines before each `shutdown` exit, and the exit.
    fn before_shutdowns(&self, context: usize) -> Vec<String> {
        let _ = self.write("tracing_on", "0");
        let text = std::fs::read_to_string(self.dir.join("trace")).unwrap_or_default();
        let _ = self.write("tracing_on", "1");
        before_shutdowns(&text, context)
    }
}

/// In a trace, the `context` events before each `shutdown` exit, and the
/// exit; or a line saying there was none.
fn before_shutdowns(text: &str, context: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("reason shutdown") {
            out.push(format!(
                "--- {} events before a shutdown exit ---",
                context.min(i)
            ));
            out.extend(
                lines[i.saturating_sub(context)..=i]
                    .iter()
                    .map(|l| l.to_string()),
            );
        }
    }
    if out.is_empty() {
        out.push(format!(
            "no shutdown exit among the {} events kept; the last: {}",
            lines.len(),
            lines.last().unwrap_or(&"-")
        ));
    }
    out
}

/// How a try failed: its outcome word, its phase, what it met.
struct Failure {
    outcome: &'static str,
    phase: &'static str,
    what: String,
}

/// One try on `side`.
fn one(env: &Env, side: &str, n: u32, cpus: u32) -> Try {
    let mut t = Try {
        side: side.into(),
        n,
        outcome: "ok".into(),
        phase: "-".into(),
        notes: Vec::new(),
    };
    let faults_before = env.daemon.log().matches(TRIPLE_FAULT).count();
    let started = Instant::now();
    let mut vm = match bench::start_vm(env, side, true, cpus) {
        Ok(vm) => vm,
        Err(e) => {
            t.outcome = "error".into();
            t.phase = "start".into();
            t.notes.push(("what".into(), e));
            return t;
        }
    };
    let step = |what: &str| bench::emit(&format!("soak step {side} {n}: {what}"));
    step("started");
    let result = steps(&mut vm, &mut t, started, step);
    let faults = env.daemon.log().matches(TRIPLE_FAULT).count() - faults_before;
    let console = testkit::daemon::strip_escapes(&vm.console().text());
    let restarts = unrequested_restarts(&console);
    t.notes.push(("restarts".into(), restarts.to_string()));
    if side == "vmd" {
        t.notes.push(("triple_faults".into(), faults.to_string()));
    }
    let failure = match result {
        // A restart nobody asked for that the guest got over is still a
        // death.
        Ok(()) if restarts > 0 || faults > 0 => Some(Failure {
            outcome: "reset",
            phase: "-",
            what: "restarted unasked, then came up".into(),
        }),
        Ok(()) => None,
        Err(mut f) => {
            if restarts > 0 || faults > 0 {
                f.outcome = "reset";
            }
            Some(f)
        }
    };
    if let Some(f) = failure {
        t.outcome = f.outcome.into();
        t.phase = f.phase.into();
        let last = realguest::console::last_line(&console, 160);
        t.notes.push(("last".into(), last));
        t.notes
            .push(("what".into(), f.what.chars().take(300).collect()));
        bench::emit(&format!("soak log {side} try {n}: {}", f.what));
        // Where the VM's threads are while it is still up: a vCPU
        // running inside the emulated VMRUN, or waiting in vmd.
        for line in realguest::stall::snapshot() {
            bench::emit(&format!("soak log {side} try {n}: now {line}"));
        }
        bench::log_failure(env, side, &mut vm, 60);
        if let Vm::Ours(g) = &mut vm {
            t.notes.push(("fresh_console".into(), probe(g)));
        }
    }
    if let Err(e) = bench::stop_vm(env, vm) {
        bench::emit(&format!("soak log {side} try {n}: stopping: {e}"));
    }
    t
}

/// Whether the guest of a failed try still answers on a console attached
/// anew: `answers` tells a guest that lives on behind a stalled console
/// session from a dead one (`silent`).
fn probe(g: &mut realguest::guest::Guest) -> String {
    if let Err(e) = g.reattach() {
        return format!("unavailable:{e}");
    }
    std::thread::sleep(Duration::from_secs(2));
    g.console.skip_seen();
    let _ = g.console.type_raw(b"\r");
    match g.console.query("alive", Duration::from_secs(60)) {
        Ok(_) => "answers".into(),
        Err(_) => "silent".into(),
    }
}

/// Boot, reboot, disk: records the times in `t`.
/// `step` tells each step's end: the outer guest's watchdog takes a
/// silent outer guest as hung, and the transcript shows how far a try
/// came.
fn steps(vm: &mut Vm, t: &mut Try, started: Instant, step: impl Fn(&str)) -> Result<(), Failure> {
    let ready = |vm: &mut Vm, phase: &'static str| -> Result<String, Failure> {
        vm.console()
            .wait_line("@@guest ready", bench::BOOT_TIMEOUT)
            .map_err(|e| Failure {
                outcome: if vm.console().attached() {
                    "hung"
                } else {
                    "ended"
                },
                phase,
                what: e,
            })
    };
    let first = ready(vm, "boot")?;
    step("ready");
    t.notes
        .push(("hugepages_mib".into(), bench::huge_pages_mib()));
    t.notes.push((
        "boot_s".into(),
        format!("{:.1}", started.elapsed().as_secs_f64()),
    ));
    // Let the shell print its prompt before anything is typed.
    std::thread::sleep(Duration::from_secs(1));
    vm.console().skip_seen();
    vm.console().type_raw(b"reboot -f\r").map_err(|e| Failure {
        outcome: "ended",
        phase: "reboot",
        what: e.to_string(),
    })?;
    let rebooted = Instant::now();
    let deadline = rebooted + bench::BOOT_TIMEOUT;
    loop {
        if let Vm::Ours(g) = vm
            && !g.console.attached()
        {
            // vmd restarts the VM; its console comes back with it.
            let _ = g.reattach();
            if !g.console.attached() {
                if Instant::now() >= deadline {
                    return Err(Failure {
                        outcome: "ended",
                        phase: "reboot",
                        what: "the console did not come back".into(),
                    });
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        }
        let line = ready(vm, "reboot")?;
        // A console attached anew replays the first boot's line.
        if line != first {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Failure {
                outcome: "hung",
                phase: "reboot",
                what: "no second boot".into(),
            });
        }
    }
    step("ready again");
    t.notes.push((
        "reboot_s".into(),
        format!("{:.1}", rebooted.elapsed().as_secs_f64()),
    ));
    std::thread::sleep(Duration::from_secs(1));
    vm.console()
        .run_ok(WORK, COMMAND_TIMEOUT)
        .map_err(|e| Failure {
            outcome: "hung",
            phase: "disk",
            what: e,
        })?;
    step("disk done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_count_banners_after_the_last_requested_restart() {
        let one = "Linux version 6.1\n@@guest ready\n";
        assert_eq!(unrequested_restarts(one), 0);
        let rebooted = format!("{one}# reboot -f\n[ 9.1] {RESTARTING}\n{one}");
        assert_eq!(unrequested_restarts(&rebooted), 0);
        // A triple fault resets the guest without the kernel's word.
        let reset = format!("{rebooted}Linux version 6.1\n");
        assert_eq!(unrequested_restarts(&reset), 1);
        assert_eq!(
            unrequested_restarts("Linux version 6.1\nLinux version 6.1\n"),
            1
        );
    }

    #[test]
    fn the_events_before_a_shutdown_exit_are_picked_out() {
        let trace = "# tracer: nop\n\
            vcpu0-1 [000] 1.0: kvm_exit: vcpu 0 reason npf rip 0xffffffff81000010\n\
            vcpu0-1 [000] 1.1: kvm_inj_virq: IRQ 0xec\n\
            vcpu0-1 [000] 1.2: kvm_exit: vcpu 0 reason shutdown rip 0xffffffff81234567\n\
            vcpu0-1 [000] 1.3: kvm_userspace_exit: reason KVM_EXIT_SHUTDOWN (8)\n";
        let out = before_shutdowns(trace, 1);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out[1].contains("IRQ 0xec"));
        assert!(out[2].contains("rip 0xffffffff81234567"));
        let none = before_shutdowns("# tracer: nop\nx: kvm_exit: vcpu 0 reason hlt\n", 5);
        assert!(none[0].starts_with("no shutdown exit among the 1 events kept"));
    }

    #[test]
    fn try_lines_round_trip_and_count() {
        let t = Try {
            side: "vmd".into(),
            n: 3,
            outcome: "hung".into(),
            phase: "reboot".into(),
            notes: vec![
                ("boot_s".into(), "12.5".into()),
                ("last".into(), "[ 0.0] Early memory node ranges".into()),
            ],
        };
        let line = format!("x @@rg {}", t.to_line());
        let back = Try::parse(&line).unwrap();
        assert_eq!(back.note("last"), "[_0.0]_Early_memory_node_ranges");
        assert_eq!((back.side.as_str(), back.n), ("vmd", 3));
        let ok = Try {
            side: "qemu".into(),
            outcome: "ok".into(),
            ..t.clone()
        };
        let table = summarize(&[back, ok]);
        let vmd = table.lines().find(|l| l.starts_with("vmd")).unwrap();
        let fields: Vec<&str> = vmd.split_whitespace().collect();
        assert_eq!(fields[..7], ["vmd", "1", "0", "0", "1", "0", "0"]);
        assert_eq!(fields[7], "12.5");
    }
}
