//! `realguest bench`: the same Linux guest under our vmd and under QEMU
//! with KVM, side by side, measured (never asserted; not part of the test
//! suite). bench/real-guest-bench.sh builds and runs it.
//!
//! Both sides boot the fixture kernel and initramfs directly, with the
//! same memory ([`MEMORY_MIB`]), one vCPU, a raw virtio-blk disk, a
//! virtio-net NIC on a tap, a virtio-scsi CD and a virtio-rng device. On a
//! host without hardware KVM both run inside the same outer guest (see
//! [`crate::outer`]), QEMU being copied into it with its libraries and
//! firmware. Rounds alternate (ours, QEMU, ours, ...); each side of a
//! round is one fresh boot and measures:
//!
//! * `boot_s`: seconds from `vmctl start` (or QEMU's start) to the guest
//!   init's `@@guest ready` line on the serial console;
//! * `wr4k`, `rd4k`, `wr1m`, `rd1m`: MiB/s of the guest's
//!   `dd oflag=direct` / `iflag=direct` on `/dev/vda`, 4 KiB and 1 MiB
//!   blocks;
//! * `g2h`, `h2g`: MiB/s of busybox `nc` from the guest to a listener of
//!   ours on the host side of the tap, and back.
//!
//! Times are the host's wall clock: the guest's clock runs slow when it is
//! nested under an emulator. A dd's time is the console command's, less the
//! console's round trip (a `true` timed the same way); a transfer's is
//! from the listener's accept to the last byte.
//!
//! The runner prints one `@@rg bench sample` line per boot; the host side
//! prints each measure's median per side and the ratio ours/QEMU.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::console::Console;
use crate::guest::{Env, Guest};
use crate::kvm_stats::KvmStats;
use crate::{arg_value, outer};

/// Guest memory on both sides.
pub const MEMORY_MIB: u64 = 512;
/// The raw disk both guests get.
const DISK_MIB: u64 = 256;
/// Blocks of each dd: 4 KiB ones, and 1 MiB ones.
const COUNT_4K: u64 = 4096;
const COUNT_1M: u64 = 128;
/// Bytes of each nc transfer.
const NET_BYTES: u64 = 128 << 20;
const G2H_PORT: u16 = 5101;
const H2G_PORT: u16 = 5102;
/// The tap QEMU's NIC uses (QEMU makes it), and its addresses: a /31 of
/// its own, outside the 100.64.0.0/16 vmd gives its local interfaces.
const QEMU_TAP: &str = "rgbench0";
const QEMU_HOST_IP: &str = "100.127.0.2";
const QEMU_GUEST_IP: &str = "100.127.0.3";
/// Both sides' kernel command line. Without KASLR, an instruction
/// address the outer kernel traced (the soak's `--trace`) reads against
/// the kernel's System.map.
const CMDLINE: &str = "console=ttyS0 panic=-1 nokaslr rg.boot=bench";
/// Our VM's name.
pub const VM_NAME: &str = "bench";
/// Where the runner keeps its images in the outer guest: tmpfs, so the
/// outer disk's emulation does not weigh on either side.
const RUN_DIR: &str = "/tmp/bench";
/// Generous: a nested guest is slow. A boot takes 10-35 s nested; one
/// that has not reached user space in [`BOOT_TIMEOUT`] is a failed sample.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(300);
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(150);
/// How long a transfer may take, from the guest's `nc` on.
const NET_TIMEOUT: Duration = Duration::from_secs(120);

/// The measures, in the order they are printed, and whether more is
/// better (throughputs) or less (times).
pub const MEASURES: &[(&str, &str, bool)] = &[
    ("boot_s", "start to @@guest ready (s)", false),
    ("wr4k", "dd 4K O_DIRECT write (MiB/s)", true),
    ("rd4k", "dd 4K O_DIRECT read (MiB/s)", true),
    ("wr1m", "dd 1M O_DIRECT write (MiB/s)", true),
    ("rd1m", "dd 1M O_DIRECT read (MiB/s)", true),
    ("g2h", "nc guest->host (MiB/s)", true),
    ("h2g", "nc host->guest (MiB/s)", true),
    // KVM's count of the guest's exits during each dd, per block
    // (crate::kvm_stats); absent where KVM's counters cannot be read.
    ("wr4k_exits", "KVM exits per 4K write", false),
    ("rd4k_exits", "KVM exits per 4K read", false),
    ("wr1m_exits", "KVM exits per 1M write", false),
    ("rd1m_exits", "KVM exits per 1M read", false),
];

/// The two sides.
pub const SIDES: [&str; 2] = ["vmd", "qemu"];

/// One measured boot: `(measure, value)` pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub side: String,
    pub round: u32,
    pub values: Vec<(String, f64)>,
    /// Anything else the runner reported (huge pages in use, errors).
    pub notes: Vec<(String, String)>,
}

impl Sample {
    /// The `@@rg bench sample ...` line's body.
    pub fn to_line(&self) -> String {
        let mut line = format!("bench sample side={} round={}", self.side, self.round);
        for (k, v) in &self.values {
            line.push_str(&format!(" {k}={v:.3}"));
        }
        for (k, v) in &self.notes {
            line.push_str(&format!(" {k}={}", v.replace(char::is_whitespace, "_")));
        }
        line
    }

    /// Parses a console line holding `@@rg bench sample`.
    pub fn parse(line: &str) -> Option<Sample> {
        let body = line.split_once("@@rg bench sample ")?.1;
        let mut sample = Sample {
            side: String::new(),
            round: 0,
            values: Vec::new(),
            notes: Vec::new(),
        };
        for word in body.split_whitespace() {
            let (k, v) = word.split_once('=')?;
            match k {
                "side" => sample.side = v.to_string(),
                "round" => sample.round = v.parse().ok()?,
                _ if MEASURES.iter().any(|(m, _, _)| *m == k) => {
                    sample.values.push((k.to_string(), v.parse().ok()?))
                }
                _ => sample.notes.push((k.to_string(), v.to_string())),
            }
        }
        (!sample.side.is_empty()).then_some(sample)
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// The summary table: per measure, each side's median over its samples
/// (and how many), and ours/QEMU.
pub fn summarize(samples: &[Sample]) -> String {
    let mut out = format!(
        "{:<30} {:>10} {:>10} {:>11}  {}\n",
        "measure", "vmd", "qemu", "vmd/qemu", "(medians)"
    );
    for (key, label, more_is_better) in MEASURES {
        let med = |side: &str| {
            let mut v: Vec<f64> = samples
                .iter()
                .filter(|s| s.side == side)
                .filter_map(|s| s.values.iter().find(|(k, _)| k == key).map(|(_, v)| *v))
                .collect();
            let n = v.len();
            (median(&mut v), n)
        };
        let ((ours, n_ours), (qemu, n_qemu)) = (med("vmd"), med("qemu"));
        let fmt = |m: Option<f64>, n: usize| m.map_or("-".to_string(), |m| format!("{m:.2} ({n})"));
        let ratio = match (ours, qemu) {
            (Some(o), Some(q)) if q > 0.0 => format!("{:.2}", o / q),
            _ => "-".into(),
        };
        let better = if *more_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        out.push_str(&format!(
            "{label:<30} {:>10} {:>10} {ratio:>11}  {better}\n",
            fmt(ours, n_ours),
            fmt(qemu, n_qemu)
        ));
    }
    out
}

pub use crate::report::emit;

/// A line that shows how far a long run has come.
fn progress(side: &str, what: &str, since: Instant) {
    emit(&format!(
        "bench step {side}: {what} ({:.1} s)",
        since.elapsed().as_secs_f64()
    ));
}

fn sh(command: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .map_err(|e| format!("{command}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{command}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The files QEMU reads to boot a kernel directly with these devices: its
/// BIOS, the linuxboot option ROM and KVM's vapic ROM.
fn qemu_firmware() -> Vec<PathBuf> {
    [
        "/usr/share/qemu/bios-256k.bin",
        "/usr/share/qemu/linuxboot_dma.bin",
        "/usr/share/qemu/linuxboot.bin",
        "/usr/share/qemu/kvmvapic.bin",
        "/usr/share/qemu/pvh.bin",
        "/usr/share/qemu/multiboot_dma.bin",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.exists())
    .collect()
}

fn which(program: &str) -> Result<PathBuf, String> {
    let out = sh(&format!("command -v {program}"))?;
    let path = out.trim();
    if path.is_empty() {
        Err(format!("{program} is not installed"))
    } else {
        Ok(PathBuf::from(path))
    }
}

/// The `bench` and `bench-guest` subcommands; `None` for any other.
pub fn dispatch(args: &[String]) -> Option<ExitCode> {
    match args.first().map(String::as_str) {
        Some("bench") => Some(match host(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("realguest bench: {e}");
                ExitCode::FAILURE
            }
        }),
        Some("bench-guest") => Some(runner(args)),
        _ => None,
    }
}

/// What a host-side run (the benchmark, the soak) needs: the fixtures,
/// the programs, where its images go, and whether it runs nested.
pub struct Setup {
    pub fixtures: PathBuf,
    /// This build's programs (the harness itself).
    pub bin_dir: PathBuf,
    /// The vmd and vmctl run: those built with this harness unless
    /// `--vmd-dir` names others (a build from before a change, say).
    pub vmd_dir: PathBuf,
    pub scratch: PathBuf,
    pub nested: bool,
    /// `--outer-npt on|off` (default on): whether the outer KVM gives the
    /// guests nested paging ([`outer::outer_kvm_options`]). On, as KVM on
    /// hardware always does, so that the measures and the soak's counts
    /// are of the paging users get; the scenarios run with it off.
    pub outer_npt: bool,
}

/// Builds the fixtures and reads the options both host sides share:
/// `--fixtures DIR`, `--keep DIR` (default `NAME` next to the programs),
/// `--vmd-dir DIR`, `--outer-npt on|off`; `VMD_REAL_GUESTS=direct|nested`
/// overrides the choice of layer.
pub fn setup(args: &[String], name: &str) -> Result<Setup, String> {
    let fixtures = arg_value(args, "--fixtures").map_or_else(
        || testkit::fixtures::root().join("real-guest"),
        PathBuf::from,
    );
    crate::build_fixture("real-guest-fixture.sh", &fixtures, "the fixtures")?;
    let bin_dir = testkit::daemon::bin_dir();
    let scratch = arg_value(args, "--keep").map_or_else(|| bin_dir.join(name), PathBuf::from);
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    // Hardware KVM: the vendor module is loaded. Else KVM cannot run a
    // stock kernel here and both sides run in the outer guest.
    let nested = match std::env::var("VMD_REAL_GUESTS").ok().as_deref() {
        Some("direct") => false,
        Some("nested") => true,
        _ => {
            !(Path::new("/dev/kvm").exists()
                && ["kvm_intel", "kvm_amd"]
                    .iter()
                    .any(|m| Path::new("/sys/module").join(m).exists()))
        }
    };
    let vmd_dir = arg_value(args, "--vmd-dir").map_or_else(|| bin_dir.clone(), PathBuf::from);
    Ok(Setup {
        fixtures,
        bin_dir,
        vmd_dir,
        scratch,
        nested,
        outer_npt: match arg_value(args, "--outer-npt").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => return Err(format!("--outer-npt {other}: not on or off")),
        },
    })
}

impl Setup {
    /// Where the run happens, for its first line.
    pub fn layer(&self) -> &'static str {
        if self.nested {
            "nested in qemu-system-x86_64 -accel tcg -cpu max (emulated SVM)"
        } else {
            "directly on this host's KVM"
        }
    }

    /// Runs `realguest SUBCOMMAND --fixtures DIR --bin-dir DIR ARGS` where
    /// KVM runs whole kernels: in a fresh outer guest (with QEMU and its
    /// firmware), echoing its `@@rg` lines that start with one of `echo`,
    /// or right here. Returns the transcript.
    pub fn run(&self, subcommand: &str, args: &str, echo: &[&str]) -> Result<String, String> {
        if !self.nested {
            let out = Command::new(self.bin_dir.join("realguest"))
                .arg(subcommand)
                .arg("--fixtures")
                .arg(&self.fixtures)
                .arg("--bin-dir")
                .arg(&self.vmd_dir)
                .args(args.split_whitespace())
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| e.to_string())?;
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let qemu = which("qemu-system-x86_64")?;
        let scratch = self.scratch.as_path();
        let stage = scratch.join("bench-bin");
        std::fs::create_dir_all(&stage).map_err(|e| e.to_string())?;
        for (name, from) in [
            ("realguest", &self.bin_dir),
            ("vmd", &self.vmd_dir),
            ("vmctl", &self.vmd_dir),
        ] {
            std::fs::copy(from.join(name), stage.join(name))
                .map_err(|e| format!("{}: {e}", from.join(name).display()))?;
        }
        let root = Path::new("/var/tmp/vmd-real-guests");
        let payload = outer::Payload {
            programs: vec![qemu],
            files: qemu_firmware(),
            command: Some(format!(
                "/bin/realguest {subcommand} --fixtures {}/fx --bin-dir /bin {args}\n\
                 echo \"@@rg runner-exit $?\"",
                root.display()
            )),
            nested_paging: self.outer_npt,
        };
        let fixtures = self.fixtures.as_path();
        let initramfs = outer::build_initramfs_with(scratch, &stage, fixtures, root, &payload)?;
        let disk = outer::build_data_disk(scratch, fixtures)?;
        let t = outer::boot_echoing(scratch, &fixtures.join("bzImage"), &initramfs, &disk, echo);
        let _ = std::fs::remove_file(&disk);
        t
    }
}

/// `realguest bench [--rounds N] [--vmd-dir DIR] [--fixtures DIR]
/// [--keep DIR] [--shmem-thp MODE] [--outer-npt on|off]`, as root: builds the fixtures, runs
/// the rounds (nested unless `/dev/kvm` is hardware KVM), prints the
/// samples and the summary.
fn host(args: &[String]) -> Result<(), String> {
    let setup = setup(args, "real-guest-bench")?;
    let rounds: u32 = arg_value(args, "--rounds")
        .map(|r| r.parse().map_err(|_| format!("--rounds {r}: not a number")))
        .transpose()?
        .unwrap_or(5);
    // shmem_enabled for the guest RAM's memfd (see vmd(8), "Guest memory"):
    // set in the outer guest as an administrator sets it on a host.
    let thp = arg_value(args, "--shmem-thp").unwrap_or_else(|| "advise".into());
    println!(
        "real-guest bench: {rounds} rounds, vmd from {}, shmem_enabled={thp}, {} MiB and 1 vCPU per guest, {}",
        setup.vmd_dir.display(),
        MEMORY_MIB,
        setup.layer()
    );
    // Nested, an outer guest may die (docs/real-guests.md): the rounds it
    // did not finish run in a new one. A round cut in half is dropped
    // whole, so every round kept has both sides measured in one outer
    // guest, one after the other.
    let scratch = setup.scratch.as_path();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next = 1;
    let mut outer = 0;
    let mut failure = None;
    while next <= rounds && outer < BENCH_OUTER_BOOTS {
        outer += 1;
        let transcript = setup.run(
            "bench-guest",
            &format!(
                "--first {next} --rounds {} --shmem-thp {thp}",
                rounds - next + 1
            ),
            &["bench", "stall", "outer", "fatal", "runner-exit"],
        );
        // An outer guest that died still leaves the samples it printed;
        // one that reset (QEMU then exits cleanly) never printed the
        // runner's end.
        let (transcript, error) = match transcript {
            Ok(t) if !t.contains("@@rg bench done") => (
                t,
                Some("the outer guest ended before the benchmark's runner finished".to_string()),
            ),
            Ok(t) => (t, None),
            Err(e) => (
                std::fs::read_to_string(scratch.join("outer-console.log")).unwrap_or_default(),
                Some(e),
            ),
        };
        outer::keep_logs(scratch, "bench-transcript", outer, &transcript)?;
        let (kept, after) =
            whole_rounds(transcript.lines().filter_map(Sample::parse).collect(), next);
        samples.extend(kept);
        next = after;
        if let Some(e) = &error
            && next <= rounds
        {
            println!(
                "realguest bench: outer guest {outer}: {e}; rounds from {next} go on in a new one"
            );
        }
        failure = error;
    }
    println!();
    for s in &samples {
        println!("{}", s.to_line());
    }
    println!();
    print!("{}", summarize(&samples));
    if next <= rounds {
        return Err(format!(
            "{} of {rounds} rounds done in {outer} outer guests{}",
            next - 1,
            failure.map_or(String::new(), |e| format!(" (the last: {e})"))
        ));
    }
    Ok(())
}

/// Outer guests a benchmark may use before it gives up.
const BENCH_OUTER_BOOTS: u32 = 4;

/// The samples of the rounds from `first` on that have every side
/// measured, and the round to run next: the first not finished.
fn whole_rounds(samples: Vec<Sample>, first: u32) -> (Vec<Sample>, u32) {
    let whole = |round: u32| {
        SIDES
            .iter()
            .all(|side| samples.iter().any(|s| s.round == round && s.side == *side))
    };
    let mut next = first;
    while whole(next) {
        next += 1;
    }
    let kept = samples
        .into_iter()
        .filter(|s| s.round >= first && s.round < next)
        .collect();
    (kept, next)
}

/// The runner: `realguest bench-guest --fixtures DIR --bin-dir DIR
/// --first N --rounds K --shmem-thp MODE` (rounds N to N+K-1), where KVM
/// runs whole kernels.
pub fn runner(args: &[String]) -> ExitCode {
    let (Some(fixtures), Some(bin_dir)) =
        (arg_value(args, "--fixtures"), arg_value(args, "--bin-dir"))
    else {
        eprintln!(
            "usage: realguest bench-guest --fixtures DIR --bin-dir DIR [--first N] [--rounds N] [--shmem-thp MODE]"
        );
        return ExitCode::from(2);
    };
    let rounds: u32 = arg_value(args, "--rounds")
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let knob = set_shmem_thp(arg_value(args, "--shmem-thp").as_deref());
    emit(&format!(
        "bench note: shmem_enabled {}, qemu {}",
        knob.trim(),
        sh("qemu-system-x86_64 --version | head -1")
            .unwrap_or_default()
            .trim()
    ));
    let first: u32 = arg_value(args, "--first")
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let env = runner_env(&fixtures, &bin_dir);
    crate::stall::watch(crate::stall::DESCRIBE_AFTER);
    for round in first..first + rounds {
        for side in SIDES {
            let sample = measure(&env, side, round);
            emit(&sample.to_line());
        }
    }
    drop(env);
    emit("bench done");
    ExitCode::SUCCESS
}

/// Sets the outer kernel's shmem_enabled (whether shared memory, vmd's
/// guest RAM among it, gets transparent huge pages) to `mode` when given;
/// returns the setting in force.
pub fn set_shmem_thp(mode: Option<&str>) -> String {
    let knob = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
    if let Some(mode) = mode
        && let Err(e) = std::fs::write(knob, mode)
    {
        emit(&format!("bench note: cannot set {knob} to {mode}: {e}"));
    }
    std::fs::read_to_string(knob).unwrap_or_default()
}

/// The runner's vmd (a daemon of its own) and work directory. Call it
/// before any thread is started: it sets `VMD_BIN_DIR`.
pub fn runner_env(fixtures: &str, bin_dir: &str) -> Env {
    // SAFETY: the caller starts no thread before this.
    unsafe { std::env::set_var("VMD_BIN_DIR", bin_dir) };
    let work = PathBuf::from(RUN_DIR);
    let _ = std::fs::create_dir_all(&work);
    let daemon = testkit::daemon::TestDaemon::start();
    Env {
        daemon,
        vmctl: PathBuf::from(bin_dir).join("vmctl"),
        fixtures: PathBuf::from(fixtures),
        work,
    }
}

/// Huge pages the outer kernel has handed out (anonymous and shmem), MiB.
pub fn huge_pages_mib() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    format!(
        "anon:{},shmem:{}",
        kib("AnonHugePages:") / 1024,
        kib("ShmemHugePages:") / 1024
    )
}

/// One boot of one side, measured; a failure is a note on the sample.
fn measure(env: &Env, side: &str, round: u32) -> Sample {
    let mut sample = Sample {
        side: side.to_string(),
        round,
        values: Vec::new(),
        notes: Vec::new(),
    };
    if let Err(e) = measure_into(env, side, &mut sample) {
        sample.notes.push(("error".into(), e));
    }
    sample
}

/// A VM of either side, for as long as it is measured.
pub enum Vm<'a> {
    Ours(Guest<'a>),
    Qemu(Console),
}

impl Vm<'_> {
    pub fn console(&mut self) -> &mut Console {
        match self {
            Vm::Ours(g) => &mut g.console,
            Vm::Qemu(c) => c,
        }
    }
}

fn measure_into(env: &Env, side: &str, sample: &mut Sample) -> Result<(), String> {
    let started = Instant::now();
    progress(side, "starting", started);
    let mut vm = start_vm(env, side, false, 1)?;
    let result = (|| {
        vm.console().wait_line("@@guest ready", BOOT_TIMEOUT)?;
        progress(side, "guest ready", started);
        sample
            .values
            .push(("boot_s".into(), started.elapsed().as_secs_f64()));
        sample
            .notes
            .push(("hugepages_mib".into(), huge_pages_mib()));
        // Let the shell print its prompt before anything is typed.
        std::thread::sleep(Duration::from_secs(1));
        let c = vm.console();
        // The console's round trip, taken off each dd's time.
        let mut trips: Vec<f64> = (0..3)
            .map(|_| timed(c, "true").map(|(t, _)| t))
            .collect::<Result<_, _>>()?;
        let trip = median(&mut trips).unwrap_or(0.0);
        sample
            .notes
            .push(("console_trip_s".into(), format!("{trip:.3}")));
        for (key, command, blocks, block_size) in [
            (
                "wr1m",
                format!("dd if=/dev/zero of=/dev/vda bs=1M count={COUNT_1M} oflag=direct"),
                COUNT_1M,
                1 << 20,
            ),
            (
                "rd1m",
                format!("dd if=/dev/vda of=/dev/null bs=1M count={COUNT_1M} iflag=direct"),
                COUNT_1M,
                1 << 20,
            ),
            (
                "wr4k",
                format!("dd if=/dev/zero of=/dev/vda bs=4k count={COUNT_4K} oflag=direct"),
                COUNT_4K,
                1 << 12,
            ),
            (
                "rd4k",
                format!("dd if=/dev/vda of=/dev/null bs=4k count={COUNT_4K} iflag=direct"),
                COUNT_4K,
                1 << 12,
            ),
        ] {
            let before = KvmStats::read();
            let (t, _) = timed(c, &format!("{command} 2>/dev/null"))?;
            let after = KvmStats::read();
            progress(side, key, started);
            sample.values.push((
                key.into(),
                mib_per_s(blocks * block_size, (t - trip).max(1e-3)),
            ));
            // The console's typing and echo of the command are in these
            // counts too, alike on both sides: a few hundred exits, little
            // against 4,096 blocks of 4 KiB, a few a block against 128 of
            // 1 MiB.
            if let (Some(before), Some(after)) = (before, after) {
                sample.values.push((
                    format!("{key}_exits"),
                    before.exits_until(&after) as f64 / blocks as f64,
                ));
                sample
                    .notes
                    .push((format!("{key}_kvm"), before.per(&after, blocks)));
            }
        }
        progress(side, "network", started);
        // Static addresses on both sides: vmd's -L tap is 100.64.<id>.2/31
        // and its DHCP server would offer .3; the same address set by hand
        // keeps the guest's DHCP client out of what is measured.
        let (host, guest_ip) = match side {
            "vmd" => {
                let id = env.vm_id(VM_NAME).ok_or("the VM is not listed")?;
                (format!("100.64.{id}.2"), format!("100.64.{id}.3"))
            }
            _ => (QEMU_HOST_IP.to_string(), QEMU_GUEST_IP.to_string()),
        };
        c.run_ok(
            &format!("ip link set eth0 up && ip addr add {guest_ip}/31 dev eth0"),
            STEP_TIMEOUT,
        )?;
        c.run_ok(
            &format!(
                "dd if=/dev/zero of=/tmp/blob bs=1M count={} 2>/dev/null",
                NET_BYTES >> 20
            ),
            STEP_TIMEOUT,
        )?;
        progress(side, "network up", started);
        let g2h = guest_to_host(c, &host)?;
        sample.values.push(("g2h".into(), g2h));
        let h2g = host_to_guest(c, &host)?;
        sample.values.push(("h2g".into(), h2g));
        progress(side, "done", started);
        Ok(())
    })();
    if result.is_err() {
        log_failure(env, side, &mut vm, 30);
    }
    stop_vm(env, vm)?;
    result
}

/// A fresh empty disk for one boot.
fn fresh_disk(env: &Env) -> Result<String, String> {
    let disk = env.work.join("disk.raw");
    let _ = std::fs::remove_file(&disk);
    sh(&format!("truncate -s {DISK_MIB}M {}", disk.display()))?;
    Ok(disk.display().to_string())
}

/// Starts the benchmark's guest on `side` ("vmd" or "qemu") on a fresh
/// disk, its console attached. A guest `reboot` restarts it on both
/// sides when `reboot` holds; else QEMU ends at a reboot (vmd restarts
/// it, as it does a VM started from the command line). `cpus` vCPUs.
pub fn start_vm<'a>(env: &'a Env, side: &str, reboot: bool, cpus: u32) -> Result<Vm<'a>, String> {
    let disk = fresh_disk(env)?;
    let cpus = cpus.to_string();
    Ok(match side {
        "vmd" => {
            let args: Vec<String> = [
                "-b",
                &env.fixture("bzImage"),
                "--initrd",
                &env.fixture("inner.img"),
                "--cmdline",
                CMDLINE,
                "-m",
                &format!("{MEMORY_MIB}M"),
                "-p",
                &cpus,
                "-d",
                &disk,
                "-r",
                &env.fixture("data.iso"),
                "-L",
            ]
            .map(String::from)
            .to_vec();
            Vm::Ours(Guest::start(env, VM_NAME, &args)?)
        }
        _ => Vm::Qemu(start_qemu(env, &disk, reboot, &cpus)?),
    })
}

/// Emits the last `lines` lines of the VM's console and, for ours, of
/// vmd's log: they explain a failure.
pub fn log_failure(env: &Env, side: &str, vm: &mut Vm, lines: usize) {
    let text = testkit::daemon::strip_escapes(&vm.console().text());
    let all: Vec<&str> = text.lines().collect();
    for line in &all[all.len().saturating_sub(lines)..] {
        emit(&format!("bench log {side} console: {line}"));
    }
    if side == "vmd" {
        let log = env.daemon.log();
        let all: Vec<&str> = log.lines().collect();
        for line in &all[all.len().saturating_sub(lines)..] {
            emit(&format!("bench log vmd: {line}"));
        }
    }
}

/// Ends the VM: ours with `vmctl stop -f`, waiting until it is gone;
/// QEMU with its process.
pub fn stop_vm(env: &Env, vm: Vm) -> Result<(), String> {
    match vm {
        Vm::Ours(g) => {
            drop(g);
            let _ = env.vmctl(&["stop", "-f", VM_NAME]);
            env.wait("the bench VM to go", Duration::from_secs(120), || {
                env.vm_state(VM_NAME).is_none_or(|s| s == "stopped")
            })
        }
        Vm::Qemu(c) => {
            drop(c);
            Ok(())
        }
    }
}

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64 / seconds
}

/// Runs `command` in the guest's shell; its wall time and output.
fn timed(c: &mut Console, command: &str) -> Result<(f64, String), String> {
    let t = Instant::now();
    let out = c.run_ok(command, STEP_TIMEOUT)?;
    Ok((t.elapsed().as_secs_f64(), out))
}

/// Set (by the soak's `--qemu-ram memfd`): QEMU's guest RAM is a memfd,
/// as vmd's is, instead of anonymous memory (which gets transparent huge
/// pages where shared memory does not).
pub const QEMU_RAM_MEMFD: &str = "VMD_BENCH_QEMU_RAM_MEMFD";

/// QEMU with KVM and the devices vmd gives the guest, its serial console
/// on a terminal as vmctl's is. [`Console`] runs `PROGRAM console NAME`,
/// so the program is a script that ignores those words and starts QEMU.
fn start_qemu(env: &Env, disk: &str, reboot: bool, cpus: &str) -> Result<Console, String> {
    let script = env.work.join("qemu-console.sh");
    let command = format!(
        "#!/bin/sh\nexec qemu-system-x86_64 -enable-kvm -cpu host -M pc -m {MEMORY_MIB} -smp {cpus} \
         -nodefaults -no-user-config -vga none -display none -monitor none -serial stdio {no_reboot}{ram}\
         -kernel {kernel} -initrd {initrd} -append '{CMDLINE}' \
         -drive file={disk},format=raw,if=none,id=d0 -device virtio-blk-pci,drive=d0 \
         -netdev tap,id=n0,ifname={QEMU_TAP},script=no,downscript=no \
         -device virtio-net-pci,netdev=n0,romfile= \
         -device virtio-scsi-pci -drive if=none,id=cd,media=cdrom,readonly=on,file={iso} \
         -device scsi-cd,drive=cd -device virtio-rng-pci\n",
        kernel = env.fixture("bzImage"),
        initrd = env.fixture("inner.img"),
        iso = env.fixture("data.iso"),
        no_reboot = if reboot { "" } else { "-no-reboot " },
        ram = if std::env::var_os(QEMU_RAM_MEMFD).is_some() {
            format!(
                "-object memory-backend-memfd,id=ram,size={MEMORY_MIB}M -machine memory-backend=ram "
            )
        } else {
            String::new()
        },
    );
    std::fs::write(&script, command).map_err(|e| e.to_string())?;
    sh(&format!("chmod 755 {}", script.display()))?;
    let console =
        Console::attach(&script, &env.daemon.socket, "qemu").map_err(|e| format!("qemu: {e}"))?;
    // QEMU makes the tap (busybox's ip cannot) and it goes with QEMU; its
    // address is set once it exists, long before the guest's drivers load.
    let tap = Path::new("/sys/class/net").join(QEMU_TAP);
    env.wait("QEMU's tap", Duration::from_secs(30), || tap.exists())?;
    sh(&format!(
        "ip addr add {QEMU_HOST_IP}/31 dev {QEMU_TAP} && ip link set {QEMU_TAP} up"
    ))?;
    Ok(console)
}

/// Accepts one connection within [`NET_TIMEOUT`]: a guest whose `nc`
/// never connects leaves no thread behind holding the port.
fn accept(listener: &TcpListener) -> Result<std::net::TcpStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + NET_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(NET_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(NET_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("no connection from the guest: {e}")),
        }
    }
}

/// `nc` from the guest's /tmp/blob to a listener here: MiB/s from accept
/// to the last byte.
fn guest_to_host(c: &mut Console, host: &str) -> Result<f64, String> {
    let listener = TcpListener::bind(("0.0.0.0", G2H_PORT)).map_err(|e| e.to_string())?;
    let receiver = std::thread::spawn(move || -> Result<f64, String> {
        let mut s = accept(&listener)?;
        let t = Instant::now();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        while got < NET_BYTES {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n as u64,
                Err(e) => return Err(e.to_string()),
            }
        }
        let secs = t.elapsed().as_secs_f64();
        // The guest's nc ends when this side closes.
        let _ = s.shutdown(Shutdown::Both);
        if got != NET_BYTES {
            return Err(format!("guest->host: {got} of {NET_BYTES} bytes"));
        }
        Ok(mib_per_s(got, secs))
    });
    let sent = c.run_ok(
        &format!("nc -w 10 {host} {G2H_PORT} < /tmp/blob"),
        NET_TIMEOUT,
    );
    let rate = receiver
        .join()
        .map_err(|_| "the receiver panicked".to_string())?;
    sent?;
    rate
}

/// `nc` in the guest from a sender here: MiB/s from accept until the
/// guest, having read everything, closes.
fn host_to_guest(c: &mut Console, host: &str) -> Result<f64, String> {
    let listener = TcpListener::bind(("0.0.0.0", H2G_PORT)).map_err(|e| e.to_string())?;
    let sender = std::thread::spawn(move || -> Result<f64, String> {
        let mut s = accept(&listener)?;
        let t = Instant::now();
        let buf = vec![0x5au8; 1 << 16];
        let mut sent = 0u64;
        while sent < NET_BYTES {
            s.write_all(&buf).map_err(|e| e.to_string())?;
            sent += buf.len() as u64;
        }
        // The guest's nc ends at our end of stream and then closes.
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        Ok(mib_per_s(sent, t.elapsed().as_secs_f64()))
    });
    let out = c.run_ok(&format!("nc -w 10 {host} {H2G_PORT} | wc -c"), NET_TIMEOUT);
    let rate = sender
        .join()
        .map_err(|_| "the sender panicked".to_string())??;
    let out = out?;
    // The kernel may print on the console meanwhile: wc's count is the
    // output's last line.
    if out.lines().last().map(str::trim) != Some(NET_BYTES.to_string().as_str()) {
        return Err(format!(
            "host->guest: the guest read {out:?} bytes of {NET_BYTES}"
        ));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_an_outer_guest_cut_in_half_is_run_again_whole() {
        let sample = |side: &str, round| Sample {
            side: side.into(),
            round,
            values: vec![("boot_s".into(), f64::from(round))],
            notes: Vec::new(),
        };
        // Rounds 3 and 4 whole, round 5 cut after vmd's half.
        let got = vec![
            sample("vmd", 3),
            sample("qemu", 3),
            sample("vmd", 4),
            sample("qemu", 4),
            sample("vmd", 5),
        ];
        let (kept, next) = whole_rounds(got, 3);
        assert_eq!(next, 5);
        assert_eq!(kept.len(), 4);
        assert!(kept.iter().all(|s| s.round < 5));
        // An outer guest that died before its first round finished.
        let (kept, next) = whole_rounds(vec![sample("vmd", 1)], 1);
        assert_eq!((kept.len(), next), (0, 1));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn sample_lines_round_trip_and_summarize() {
        let s = Sample {
            side: "vmd".into(),
            round: 2,
            values: vec![("boot_s".into(), 12.5), ("rd4k".into(), 3.25)],
            notes: vec![("hugepages_mib".into(), "anon:0,shmem:140".into())],
        };
        let line = format!("noise @@rg {}", s.to_line());
        assert_eq!(Sample::parse(&line), Some(s.clone()));
        let q = Sample {
            side: "qemu".into(),
            values: vec![("boot_s".into(), 10.0), ("rd4k".into(), 6.5)],
            ..s.clone()
        };
        let table = summarize(&[s, q]);
        let boot = table.lines().find(|l| l.starts_with("start to")).unwrap();
        assert!(
            boot.contains("12.50 (1)") && boot.contains("10.00 (1)") && boot.contains("1.25"),
            "{boot}"
        );
        let rd = table
            .lines()
            .find(|l| l.contains("4K O_DIRECT read"))
            .unwrap();
        assert!(rd.contains("0.50"), "{rd}");
    }
}
