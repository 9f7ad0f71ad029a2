//! The outer layer, for hosts whose `/dev/kvm` cannot run a stock kernel:
//! QEMU without KVM (`-accel tcg -cpu max`) emulates AMD SVM, so the
//! fixture kernel inside it loads `kvm_amd`, gets a `/dev/kvm` that
//! virtualizes a whole kernel, and our vmd runs the inner guests there.
//!
//! The outer guest boots from a small initramfs (busybox, vmd, vmctl, this
//! harness, their libraries, the KVM and bridge modules, SeaBIOS) and
//! mounts a data disk at the work directory's parent: the fixtures go in
//! through it (made with `mke2fs -d`, no loop mounts), and the images the
//! scenarios write come back out of it (`debugfs rdump`), at the same
//! paths, so qcow2 backing paths stay valid on the host.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::command_output;

/// The outer guest's memory: the inner VMs' RAM comes out of it.
const OUTER_MEMORY: &str = "3G";
/// How long the whole outer run may take before it is stopped.
pub const OUTER_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long the outer guest may print nothing before it is taken as hung:
/// the runner reports at least every few minutes (its longest wait, a
/// boot, is 150 s), and a hung outer guest is better started anew.
pub const OUTER_SILENCE: Duration = Duration::from_secs(6 * 60);
/// How long the outer guest may print nothing before a byte is typed on
/// its serial console, and again each time this passes while it stays
/// silent. The outer guest's serial transmitter has been seen stuck: on
/// 2026-12-07 a soak's runner described a silence of its own, and none of
/// it came out until a byte typed 200 s later made the port's interrupt
/// handler look at the transmitter again; then all of it came at once.
/// The runner's longest waits report their progress every minute, so 90 s
/// without a line is already unusual; the byte costs a healthy outer guest
/// nothing (nothing in it reads its console) and frees a stuck one long
/// before OUTER_SILENCE.
const OUTER_POKE_EVERY: Duration = Duration::from_secs(90);
/// The byte typed: a space, which the outer kernel's tty echoes.
const POKE: &[u8] = b" ";

/// The modules the outer guest loads: KVM for either vendor, taps,
/// bridges, and its own data disk.
const OUTER_MODULES: &[&str] = &[
    "kvm_amd",
    "kvm_intel",
    "tun",
    "bridge",
    "virtio_pci",
    "virtio_blk",
];

/// The shared libraries `binary` loads, as `ldd` names them.
fn libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}

/// The module files `names` need, dependencies first, from `modules.dep`.
fn module_closure(modules: &Path, names: &[&str]) -> Result<Vec<String>, String> {
    let dep = std::fs::read_to_string(modules.join("modules.dep"))
        .map_err(|e| format!("modules.dep: {e}"))?;
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let Some(line) = dep.lines().find(|l| {
            let file = l.split(':').next().unwrap_or("");
            let stem = file
                .rsplit('/')
                .next()
                .unwrap_or("")
                .trim_end_matches(".ko");
            stem.replace('-', "_") == *name
        }) else {
            continue;
        };
        let (file, deps) = line.split_once(':').unwrap_or((line, ""));
        for m in deps.split_whitespace().rev().chain(std::iter::once(file)) {
            if !out.iter().any(|o| o == m) {
                out.push(m.to_string());
            }
        }
    }
    Ok(out)
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
}

/// What the outer guest runs besides vmd, vmctl and this harness: the
/// scenario runner by default; the benchmark adds QEMU and its firmware.
#[derive(Debug, Default, Clone)]
pub struct Payload {
    /// Programs copied to the same path, with the libraries `ldd` names.
    pub programs: Vec<PathBuf>,
    /// Files copied to the same path (symbolic links followed).
    pub files: Vec<PathBuf>,
    /// The shell lines /init runs once the data disk is mounted, in place
    /// of the scenario runner; `None` runs the scenarios.
    pub command: Option<String>,
    /// The outer KVM gives its guests nested paging (`kvm_amd npt=1`):
    /// off for the scenarios (see [`outer_kvm_options`]), on by default
    /// for the soak and the benchmark.
    pub nested_paging: bool,
}

/// The options the outer guest's `kvm_amd` is loaded with. Without nested
/// paging the outer KVM shadows the inner guest's page tables itself, so
/// the emulator underneath never walks nested page tables: that walk is
/// where the inner guest's resets were traced (a page walk failing in the
/// decompressor's first copy), and with it on, outer guests died in most
/// runs (triple faults, recursive page faults in the outer kernel, hung
/// inner boots); with it off, docs/real-guests.md ("Where it runs") has
/// the count. Nothing of vmd changes: on hardware KVM, the host's own
/// settings stand.
pub fn outer_kvm_options(nested_paging: bool) -> &'static str {
    if nested_paging { "npt=1" } else { "npt=0" }
}

/// The scenario runner's lines of /init. The outer guest is a host set up
/// as vmd(8) ("Guest memory") recommends: shared memory, and so vmd's
/// guest RAM, may have transparent huge pages. With the outer KVM's
/// nested paging on (as the soak and the benchmark have it), 4 KiB pages
/// meant thousands more nested page faults per boot, and among them,
/// about one boot in nine, a page walk that failed and reset the inner
/// guest (docs/real-guests.md); the soak and the benchmark set the knob
/// themselves, to compare both.
pub fn scenario_command(work_root: &Path) -> String {
    let root = work_root.display();
    format!(
        "echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled\n\
         /bin/realguest guest --fixtures {root}/fx --work {root}/work --bin-dir /bin\n\
         echo \"@@rg runner-exit $?\""
    )
}

/// What the outer guest's /init does: mount, load KVM, mount the data
/// disk, run `command` (the scenarios), power off.
fn init_script(work_root: &Path, command: &str, nested_paging: bool) -> String {
    let root = work_root.display();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
modprobe kvm_amd {kvm_amd} 2>/dev/null
for m in {modules}; do modprobe $m 2>/dev/null; done
ip link set lo up
mkdir -p {root}
mount -t ext4 /dev/vda {root} || echo "@@rg fatal: cannot mount the data disk"
echo "@@rg outer: $(uname -r), kvm: $(ls /sys/module | grep -E '^kvm_(amd|intel)$'), nested paging: $(cat /sys/module/kvm_amd/parameters/npt 2>/dev/null || echo -)"
export VMD_REAL_GUESTS_NESTED=1
{groups}# The host types on this console when it falls silent (OUTER_POKE_EVERY):
# nothing here reads it.
{{
{command}
}} < /dev/null
sync
umount {root}
poweroff -f
"#,
        kvm_amd = outer_kvm_options(nested_paging),
        modules = OUTER_MODULES.join(" "),
        groups = std::env::var("VMD_REAL_GUESTS_GROUPS")
            .map(|g| format!("export VMD_REAL_GUESTS_GROUPS={g}\n"))
            .unwrap_or_default(),
    )
}

/// Builds the outer guest's initramfs in `dir`, with `payload`'s programs
/// and files added and its command run in place of the scenarios (the
/// default payload runs them); returns its path.
pub fn build_initramfs_with(
    dir: &Path,
    bin_dir: &Path,
    fixtures: &Path,
    work_root: &Path,
    payload: &Payload,
) -> Result<PathBuf, String> {
    let root = dir.join("outer-root");
    let _ = std::fs::remove_dir_all(&root);
    for d in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc",
        "var/empty",
        "root",
    ] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    copy(Path::new("/bin/busybox"), &root.join("bin/busybox"))?;
    for name in ["vmd", "vmctl", "realguest"] {
        let from = bin_dir.join(name);
        command_output(
            Command::new("strip")
                .arg("-o")
                .arg(root.join("bin").join(name))
                .arg(&from),
        )?;
        for lib in libraries(&from)? {
            copy(&lib, &root.join(lib.strip_prefix("/").unwrap_or(&lib)))?;
        }
    }
    for program in &payload.programs {
        copy(
            program,
            &root.join(program.strip_prefix("/").unwrap_or(program)),
        )?;
        for lib in libraries(program)? {
            copy(&lib, &root.join(lib.strip_prefix("/").unwrap_or(&lib)))?;
        }
    }
    for file in &payload.files {
        copy(file, &root.join(file.strip_prefix("/").unwrap_or(file)))?;
    }
    // The firmware vmd boots when no -b is given.
    for bios in [
        "/usr/share/seabios/bios-256k.bin",
        "/usr/share/seabios/bios.bin",
    ] {
        copy(Path::new(bios), &root.join(&bios[1..]))?;
    }
    // The user VM processes run as, as dist/postinst makes it.
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n_vmd:x:999:999:vmd:/var/empty:/bin/false\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(root.join("etc/group"), "root:x:0:\ntty:x:5:\n_vmd:x:999:\n")
        .map_err(|e| e.to_string())?;
    let modules = fixtures.join("modules");
    let release = std::fs::read_to_string(fixtures.join("release"))
        .map_err(|e| format!("the fixtures' kernel release: {e}"))?;
    let release = release.trim();
    let target = root.join("lib/modules").join(release);
    for m in module_closure(&modules, OUTER_MODULES)? {
        copy(&modules.join(&m), &target.join(&m))?;
    }
    copy(&modules.join("modules.dep"), &target.join("modules.dep"))?;
    let init = root.join("init");
    let command = payload
        .command
        .clone()
        .unwrap_or_else(|| scenario_command(work_root));
    std::fs::write(
        &init,
        init_script(work_root, &command, payload.nested_paging),
    )
    .map_err(|e| e.to_string())?;
    command_output(Command::new("chmod").arg("755").arg(&init))?;

    let image = dir.join("outer.img");
    let cpio = format!(
        "cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}",
        root.display(),
        image.display()
    );
    command_output(Command::new("sh").arg("-c").arg(&cpio))?;
    Ok(image)
}

/// Makes the data disk: the fixtures under `fx/`, an empty `work/`.
pub fn build_data_disk(dir: &Path, fixtures: &Path) -> Result<PathBuf, String> {
    build_data_disk_with(dir, fixtures, &[])
}

/// The fixtures every outer guest's data disk carries.
const DATA_FIXTURES: [&str; 6] = [
    "bzImage",
    "inner.img",
    "grub-disk.img",
    "grub-cd.iso",
    "data.iso",
    "data.md5",
];

/// [`build_data_disk`] with the fixtures `extra` too (the cloud image).
pub fn build_data_disk_with(
    dir: &Path,
    fixtures: &Path,
    extra: &[&str],
) -> Result<PathBuf, String> {
    let staging = dir.join("data-root");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(staging.join("work")).map_err(|e| e.to_string())?;
    for f in DATA_FIXTURES.iter().chain(extra) {
        copy(&fixtures.join(f), &staging.join("fx").join(f))?;
    }
    let disk = dir.join("data.img");
    let _ = std::fs::remove_file(&disk);
    // No journal: the host reads the disk with debugfs, which does not
    // replay one, after an outer guest that may have ended without
    // unmounting it; what the runner synced is then in place.
    command_output(
        Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-O", "^has_journal", "-F", "-d"])
            .arg(&staging)
            .arg(&disk)
            .arg("4G"),
    )?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(disk)
}

/// Boots the outer guest, stopping it after `timeout`; returns its
/// console transcript. Lines of the runner are echoed as they come, so a
/// long run shows its progress.
pub fn boot(
    dir: &Path,
    kernel: &Path,
    initramfs: &Path,
    disk: &Path,
    timeout: Duration,
) -> Result<String, String> {
    boot_within(
        dir,
        kernel,
        initramfs,
        disk,
        &[
            "result",
            "outer",
            "fatal",
            "runner-exit",
            "progress",
            "stall",
        ],
        timeout,
    )
}

/// Keeps what outer guest `n` left in `dir`: its transcript as
/// `{name}-{n}.log`, and QEMU's log and the CPUs' registers (when a hung
/// outer guest was stopped) renamed with `-{n}` before the next boot
/// writes new ones.
pub fn keep_logs(dir: &Path, name: &str, n: u32, transcript: &str) -> Result<(), String> {
    std::fs::write(dir.join(format!("{name}-{n}.log")), transcript).map_err(|e| e.to_string())?;
    for log in ["outer-qemu", "outer-registers"] {
        let _ = std::fs::rename(
            dir.join(format!("{log}.log")),
            dir.join(format!("{log}-{n}.log")),
        );
    }
    Ok(())
}

/// [`boot`], echoing the `@@rg` lines whose body starts with one of `echo`,
/// within [`OUTER_TIMEOUT`].
pub fn boot_echoing(
    dir: &Path,
    kernel: &Path,
    initramfs: &Path,
    disk: &Path,
    echo: &[&str],
) -> Result<String, String> {
    boot_within(dir, kernel, initramfs, disk, echo, OUTER_TIMEOUT)
}

/// The outer kernel's command line: its console on the serial port, a
/// reboot instead of a hang on a panic, and quiet unless `verbose` (every
/// message of the outer kernel, for chasing a failure in it). `extra`
/// (`VMD_REAL_GUESTS_OUTER_APPEND`) is added last, for trying the outer
/// kernel with other settings (docs/real-guests.md).
fn outer_command_line(verbose: bool, extra: Option<&str>) -> String {
    let mut line = String::from(if verbose {
        "console=ttyS0 panic=-1 loglevel=7"
    } else {
        "console=ttyS0 panic=-1 quiet loglevel=3"
    });
    if let Some(extra) = extra.map(str::trim).filter(|extra| !extra.is_empty()) {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

fn boot_within(
    dir: &Path,
    kernel: &Path,
    initramfs: &Path,
    disk: &Path,
    echo: &[&str],
    timeout: Duration,
) -> Result<String, String> {
    let log_path = dir.join("outer-console.log");
    let qemu_log_path = dir.join("outer-qemu.log");
    let _ = std::fs::remove_file(&qemu_log_path);
    let monitor_path = dir.join("outer-monitor.sock");
    let _ = std::fs::remove_file(&monitor_path);
    let registers_path = dir.join("outer-registers.log");
    let _ = std::fs::remove_file(&registers_path);
    let mut log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let added = std::env::var("VMD_REAL_GUESTS_OUTER_APPEND").ok();
    let command_line = outer_command_line(
        std::env::var_os("VMD_REAL_GUESTS_VERBOSE").is_some(),
        added.as_deref(),
    );
    if added.is_some() {
        // A run with other settings says so, in its transcript too.
        println!("outer kernel command line: {command_line}");
    }
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            OUTER_MEMORY,
        ])
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(&command_line)
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        // What the emulator saw the outer guest do wrong: an outer guest
        // that ends without a word from its kernel was reset (a triple
        // fault, logged here) or powered off.
        .args(["-d", "guest_errors,cpu_reset", "-D"])
        .arg(&qemu_log_path)
        // Asked for the CPUs' registers before a hung outer guest is
        // stopped: where a frozen outer guest's CPUs were.
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", monitor_path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    let mut serial_input = child.stdin.take().expect("piped stdin");
    let pid = child.id();
    let started = Instant::now();
    // A watchdog: an outer guest that hangs is stopped. It stands down
    // once this boot is over; it checks and signals under the lock this
    // thread takes before it reaps QEMU, so the pid it signals is still
    // QEMU's (at worst a zombie's), never a process that took it after.
    // It also stops an outer guest that has printed nothing for
    // OUTER_SILENCE.
    let over = std::sync::Arc::new(std::sync::Mutex::new(false));
    let watched = over.clone();
    let last_output = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
    let last_seen = last_output.clone();
    // The bytes typed on the console since it last printed a line.
    let pokes = std::sync::Arc::new(std::sync::Mutex::new(Pokes::default()));
    let poking = pokes.clone();
    let (monitor, registers) = (monitor_path.clone(), registers_path.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let over = watched.lock().unwrap_or_else(|e| e.into_inner());
            if *over {
                return;
            }
            let silent = last_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed();
            let mut pokes = poking.lock().unwrap_or_else(|e| e.into_inner());
            if pokes.due(silent) {
                let typed = serial_input
                    .write_all(POKE)
                    .and_then(|()| serial_input.flush());
                if let Err(e) = typed {
                    println!(
                        "  [{:>4} s] cannot type on the outer guest's console: {e}",
                        started.elapsed().as_secs()
                    );
                }
                pokes.typed += 1;
                pokes.last = Some(Instant::now());
            }
            if Instant::now() >= deadline || silent >= OUTER_SILENCE {
                let why = if silent >= OUTER_SILENCE {
                    format!("silent for {} s", silent.as_secs())
                } else {
                    format!("not done after {} s", timeout.as_secs())
                };
                println!(
                    "  [{:>4} s] outer guest {why}, stopped; {}",
                    started.elapsed().as_secs(),
                    pokes.account()
                );
                if let Some(answer) = ask_monitor(&monitor, "info registers -a") {
                    let _ = std::fs::write(&registers, answer);
                }
                // SAFETY: QEMU is our child and not reaped yet (see above).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                return;
            }
        }
    });
    let mut transcript = String::new();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut handle = |line: Vec<u8>| {
        let silence = std::mem::replace(
            &mut *last_output.lock().unwrap_or_else(|e| e.into_inner()),
            Instant::now(),
        )
        .elapsed();
        let typed = std::mem::take(&mut *pokes.lock().unwrap_or_else(|e| e.into_inner()));
        if typed.typed > 0 {
            println!(
                "  [{:>4} s] outer guest printed again after {} s of silence; {}",
                started.elapsed().as_secs(),
                silence.as_secs(),
                typed.account()
            );
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let _ = writeln!(log, "{line}");
        if let Some(at) = line.find("@@rg ") {
            let body = &line[at + 5..];
            // Groups a retry leaves out report "not run": no progress.
            if echo.iter().any(|e| body.starts_with(e))
                && !body.contains("not run (VMD_REAL_GUESTS_GROUPS)")
            {
                println!(
                    "  [{:>4} s] {}",
                    started.elapsed().as_secs(),
                    body.trim_end()
                );
            }
        }
        transcript.push_str(&line);
        transcript.push('\n');
    };
    let mut lines = Lines::default();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stdout.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // The echo of a typed byte comes alone, without a line end: the
        // outer kernel still takes its serial port's interrupts.
        if chunk[..n].iter().all(|b| POKE.contains(b)) {
            let mut pokes = pokes.lock().unwrap_or_else(|e| e.into_inner());
            if pokes.typed > 0 {
                pokes.echoed = true;
            }
        }
        for line in lines.push(&chunk[..n]) {
            handle(line);
        }
    }
    if let Some(rest) = lines.rest() {
        handle(rest);
    }
    *over.lock().unwrap_or_else(|e| e.into_inner()) = true;
    let status = child.wait().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&monitor_path);
    let qemu_log = std::fs::read_to_string(&qemu_log_path).unwrap_or_default();
    if qemu_log.contains("Triple fault") {
        return Err(format!(
            "the outer guest triple-faulted after {:?} (QEMU's log: {}; console: {})",
            started.elapsed(),
            qemu_log_path.display(),
            log_path.display()
        ));
    }
    if !status.success() {
        let registers = if registers_path.exists() {
            format!("; its CPUs' registers: {}", registers_path.display())
        } else {
            String::new()
        };
        return Err(format!(
            "the outer QEMU ended with {status} after {:?} (console: {}{registers})",
            started.elapsed(),
            log_path.display()
        ));
    }
    Ok(transcript)
}

/// The bytes typed on the outer guest's silent console (see
/// OUTER_POKE_EVERY), from its last line to its next.
#[derive(Default)]
struct Pokes {
    typed: u32,
    last: Option<Instant>,
    /// Whether the outer kernel echoed one.
    echoed: bool,
}

impl Pokes {
    /// Whether a byte is due, the console having been silent for `silent`.
    fn due(&self, silent: Duration) -> bool {
        silent >= OUTER_POKE_EVERY && self.last.is_none_or(|t| t.elapsed() >= OUTER_POKE_EVERY)
    }

    /// What was typed and whether the outer kernel echoed it, in words.
    fn account(&self) -> String {
        match (self.typed, self.echoed) {
            (0, _) => "no byte typed on its console".into(),
            (n, true) => format!("{n} byte(s) typed on its console, echoed"),
            (n, false) => format!("{n} byte(s) typed on its console, never echoed"),
        }
    }
}

/// The outer guest's console output cut into lines as it arrives, so that
/// output without a line end yet (the echo of the typed byte) is seen
/// when it comes, not when QEMU ends.
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// The lines `chunk` completes, without their line ends.
    fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            lines.push(line);
        }
        lines
    }

    /// A last line that never got its line end.
    fn rest(self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then_some(self.pending)
    }
}

/// Sends one command to QEMU's human monitor at `socket`; what it
/// answered within a few seconds.
fn ask_monitor(socket: &Path, command: &str) -> Option<String> {
    use std::io::Read;
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    stream.write_all(format!("{command}\n").as_bytes()).ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 65536];
    // The answer ends when the monitor goes quiet.
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// Copies the work directory back out of the data disk to `work_root`.
pub fn extract_work(disk: &Path, work_root: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(work_root.join("work"));
    std::fs::create_dir_all(work_root).map_err(|e| e.to_string())?;
    command_output(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /work {}", work_root.display()))
            .arg(disk),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outer_command_line_takes_words_added_last() {
        assert_eq!(
            outer_command_line(false, None),
            "console=ttyS0 panic=-1 quiet loglevel=3"
        );
        assert_eq!(
            outer_command_line(true, Some(" nohz=off highres=off ")),
            "console=ttyS0 panic=-1 loglevel=7 nohz=off highres=off"
        );
        assert_eq!(
            outer_command_line(false, Some("  ")),
            outer_command_line(false, None)
        );
    }

    #[test]
    fn console_output_is_cut_into_lines_and_a_last_one_without_its_end_is_kept() {
        let mut lines = Lines::default();
        assert!(lines.push(b"@@rg one").is_empty());
        assert_eq!(
            lines.push(b"\r\n@@rg two\n\n "),
            vec![b"@@rg one\r".to_vec(), b"@@rg two".to_vec(), Vec::new()]
        );
        assert_eq!(lines.rest(), Some(b" ".to_vec()));
        assert_eq!(Lines::default().rest(), None);
    }

    #[test]
    fn a_byte_is_typed_into_a_long_silence_and_again_while_it_lasts() {
        let mut pokes = Pokes::default();
        assert!(!pokes.due(OUTER_POKE_EVERY - Duration::from_secs(1)));
        assert!(pokes.due(OUTER_POKE_EVERY));
        pokes.typed = 1;
        pokes.last = Some(Instant::now());
        assert!(!pokes.due(OUTER_SILENCE));
        pokes.last = Instant::now().checked_sub(OUTER_POKE_EVERY);
        assert!(pokes.due(OUTER_SILENCE));
        assert_eq!(
            pokes.account(),
            "1 byte(s) typed on its console, never echoed"
        );
        pokes.echoed = true;
        assert_eq!(pokes.account(), "1 byte(s) typed on its console, echoed");
        assert_eq!(Pokes::default().account(), "no byte typed on its console");
    }

    #[test]
    fn the_data_disk_has_no_journal_and_gives_its_work_back() {
        testkit::needs!("mke2fs", "dumpe2fs", "debugfs");
        let dir = std::env::temp_dir().join(format!("rg-data-disk-{}", std::process::id()));
        let fixtures = dir.join("fixtures");
        std::fs::create_dir_all(&fixtures).unwrap();
        for f in DATA_FIXTURES {
            std::fs::write(fixtures.join(f), f).unwrap();
        }
        let disk = build_data_disk(&dir, &fixtures).unwrap();
        let header = command_output(Command::new("dumpe2fs").arg("-h").arg(&disk)).unwrap();
        let features = header
            .lines()
            .find(|l| l.starts_with("Filesystem features:"))
            .unwrap();
        assert!(!features.contains("has_journal"), "{features}");
        let root = dir.join("out");
        extract_work(&disk, &root).unwrap();
        assert!(root.join("work").is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn init_runs_the_scenarios_unless_a_payload_says_otherwise() {
        let root = Path::new("/var/tmp/vmd-real-guests");
        let default = init_script(root, &scenario_command(root), false);
        assert!(default.contains(
            "echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled\n\
             /bin/realguest guest --fixtures /var/tmp/vmd-real-guests/fx \
             --work /var/tmp/vmd-real-guests/work --bin-dir /bin\n\
             echo \"@@rg runner-exit $?\"\n} < /dev/null\nsync\n"
        ));
        assert!(default.contains("modprobe kvm_amd npt=0 "));
        let other = init_script(root, "/bin/realguest bench-guest", true);
        assert!(other.contains("modprobe kvm_amd npt=1 "));
        assert!(other.contains("mount -t ext4 /dev/vda /var/tmp/vmd-real-guests"));
        assert!(other.contains("{\n/bin/realguest bench-guest\n} < /dev/null\nsync\n"));
        assert!(!other.contains("realguest guest "));
    }
}
