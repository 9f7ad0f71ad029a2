//! Start-up benchmark: the same SeaBIOS with the same memory under our vmd
//! and under QEMU with KVM, several runs each. Prints medians and ratios
//! for the time from the start command to the first console byte, and for
//! the memory of the VMM's processes not counting guest RAM.
//!
//! Run through `bench/startup.sh` (release build, root, /dev/kvm).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bios() -> String {
    std::env::var("BENCH_BIOS").unwrap_or_else(|_| "/usr/share/seabios/bios-256k.bin".into())
}
const MEMORY_MIB: u64 = 512;

/// Memory a process uses besides guest RAM: anonymous plus file-backed
/// resident pages. Guest RAM is shared memory (a memfd) for both VMMs and
/// shows up as RssShmem, which is left out.
fn vmm_memory_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    field("RssAnon:") + field("RssFile:")
}

/// Reads from `child`'s stdout until the first byte arrives; returns when.
fn first_byte(child: &mut Child) -> Option<Instant> {
    let mut out = child.stdout.take()?;
    let mut byte = [0u8; 1];
    match out.read(&mut byte) {
        Ok(1) => {
            let at = Instant::now();
            // Keep draining in the background so the writer never blocks.
            std::thread::spawn(move || {
                let mut sink = [0u8; 4096];
                while matches!(out.read(&mut sink), Ok(n) if n > 0) {}
            });
            Some(at)
        }
        _ => None,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

struct Sample {
    first_byte_ms: f64,
    memory_kib: f64,
}

fn run_vmd(bin: &Path, socket: &Path, run: usize) -> Sample {
    let name = format!("bench{run}");
    let start = Instant::now();
    let mut client = Command::new(bin.join("vmctl"))
        .args(["start", "-c", "-b", &bios(), "-m"])
        .arg(format!("{MEMORY_MIB}M"))
        .arg(&name)
        .env("VMD_SOCKET", socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("vmctl start -c");
    let at = first_byte(&mut client).expect("console output");
    let first_byte_ms = at.duration_since(start).as_secs_f64() * 1000.0;
    // Let the firmware settle before measuring memory.
    std::thread::sleep(Duration::from_secs(2));
    let status = Command::new(bin.join("vmctl"))
        .args(["status", &name])
        .env("VMD_SOCKET", socket)
        .output()
        .expect("vmctl status");
    let text = String::from_utf8_lossy(&status.stdout);
    let pid: u32 = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("VM pid");
    let memory_kib = vmm_memory_kib(pid) as f64;
    let _ = Command::new(bin.join("vmctl"))
        .args(["stop", "-f", "-w", &name])
        .env("VMD_SOCKET", socket)
        .output();
    let _ = client.kill();
    let _ = client.wait();
    Sample {
        first_byte_ms,
        memory_kib,
    }
}

fn run_qemu(sercon: &Path) -> Sample {
    let start = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-enable-kvm",
            "-nodefaults",
            "-display",
            "none",
            "-no-user-config",
        ])
        .args(["-m", &format!("{MEMORY_MIB}M")])
        .args([
            "-object",
            &format!("memory-backend-memfd,id=ram,size={MEMORY_MIB}M"),
            "-machine",
            "pc,memory-backend=ram",
        ])
        .args(["-bios", &bios(), "-serial", "stdio"])
        .arg("-fw_cfg")
        .arg(format!("name=etc/sercon-port,file={}", sercon.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let at = first_byte(&mut qemu).expect("QEMU console output");
    let first_byte_ms = at.duration_since(start).as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_secs(2));
    let memory_kib = vmm_memory_kib(qemu.id()) as f64;
    let _ = qemu.kill();
    let _ = qemu.wait();
    Sample {
        first_byte_ms,
        memory_kib,
    }
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(7);
    let bin: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = std::env::temp_dir().join(format!("vmd-startup-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("vmd.sock");
    let sercon = dir.join("sercon");
    std::fs::write(&sercon, 0x3f8u16.to_le_bytes()).unwrap();

    let mut daemon = Command::new(bin.join("vmd"))
        .arg("-d")
        .env("VMD_SOCKET", &socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vmd");
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for run in 0..runs {
        // Alternate so that both see the same machine conditions.
        ours.push(run_vmd(&bin, &socket, run));
        theirs.push(run_qemu(&sercon));
    }
    let daemon_kib = vmm_memory_kib(daemon.id()) as f64;
    // SAFETY: signalling the daemon this program started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let mut our_time: Vec<f64> = ours.iter().map(|s| s.first_byte_ms).collect();
    let mut qemu_time: Vec<f64> = theirs.iter().map(|s| s.first_byte_ms).collect();
    let mut our_mem: Vec<f64> = ours.iter().map(|s| s.memory_kib).collect();
    let mut qemu_mem: Vec<f64> = theirs.iter().map(|s| s.memory_kib).collect();
    let (t_ours, t_qemu) = (median(&mut our_time), median(&mut qemu_time));
    let (m_ours, m_qemu) = (median(&mut our_mem), median(&mut qemu_mem));
    println!(
        "startup benchmark: {}, {MEMORY_MIB} MiB, {runs} runs each (medians)",
        bios()
    );
    println!(
        "  start command -> first console byte: vmd {t_ours:.1} ms, qemu {t_qemu:.1} ms, ratio {:.2}",
        t_ours / t_qemu
    );
    println!(
        "  VMM memory without guest RAM (RssAnon+RssFile): vmd VM process {:.1} MiB, qemu {:.1} MiB, ratio {:.2}",
        m_ours / 1024.0,
        m_qemu / 1024.0,
        m_ours / m_qemu
    );
    println!(
        "  vmd daemon (shared by all VMs): {:.1} MiB; VM process + daemon vs qemu: ratio {:.2}",
        daemon_kib / 1024.0,
        (m_ours + daemon_kib) / m_qemu
    );
}
