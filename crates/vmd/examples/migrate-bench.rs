//! Send/receive benchmark: the same guest under our vmd and under QEMU
//! with KVM, moved to a file and back. The guest is a tiny firmware that
//! enters long mode, drops to CPL3 and writes every quadword of 512 MiB
//! (from 16 MiB) with its own address, in a VM of 2 GiB; then it spins.
//!
//! * vmd: `vmctl send bench > file`, then `vmctl receive bench2 < file`
//!   (vmctl returns once the received VM runs).
//! * QEMU: QMP `stop`, `migrate "exec:cat > file"` until completed (with
//!   `max-bandwidth` raised from QEMU's default 128 MiB/s, which would
//!   otherwise be what is measured); then a new QEMU with
//!   `-incoming "exec:cat file"`, timed from its start until QMP reports
//!   the migration completed and, after `cont`, the VM running.
//!
//! Prints per side the send time, the stream size, stream and guest-RAM
//! throughput, and the receive-to-running time, with ratios (medians of
//! several runs). Run through `bench/migrate-bench.sh` (release build,
//! root, /dev/kvm, qemu-system-x86, nasm); with `MIGRATE_BENCH_LOG=file`
//! vmd's log goes to that file.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MEMORY_MIB: u64 = 2048;
const TOUCHED_MIB: u64 = 512;

fn guest() -> Vec<u8> {
    testkit::guest::user_mode_firmware(&format!(
        r#"
user_main:
    mov rdi, 16 << 20
    mov rsi, (16 + {TOUCHED_MIB}) << 20
.fill:
    mov [rdi], rdi
    add rdi, 8
    cmp rdi, rsi
    jb .fill
    mov dx, 0x3f8
    mov al, 'T'
    out dx, al
.spin:
    pause
    jmp .spin
"#
    ))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// Reads `out` until the byte `b` arrives; then drains it in the
/// background so that the writer never blocks.
fn wait_for_byte(mut out: impl Read + Send + 'static, b: u8) {
    let mut buf = [0u8; 4096];
    loop {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => panic!("the guest ended before it touched its memory"),
            Ok(n) if buf[..n].contains(&b) => break,
            Ok(_) => {}
        }
    }
    std::thread::spawn(move || while matches!(out.read(&mut buf), Ok(n) if n > 0) {});
}

/// One move: send time, stream bytes, receive-to-running time.
struct Sample {
    send: Duration,
    bytes: u64,
    receive: Duration,
}

struct Vmd {
    bin: PathBuf,
    socket: PathBuf,
    daemon: Child,
}

impl Vmd {
    fn start(bin: &Path, dir: &Path) -> Vmd {
        let socket = dir.join("vmd.sock");
        // MIGRATE_BENCH_LOG=file keeps vmd's log (the VM processes log
        // how long writing each stream took).
        let log = match std::env::var_os("MIGRATE_BENCH_LOG") {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("bench log")),
            None => Stdio::null(),
        };
        let daemon = Command::new(bin.join("vmd"))
            .arg("-d")
            .env("VMD_SOCKET", &socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start vmd");
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Vmd {
            bin: bin.to_path_buf(),
            socket,
            daemon,
        }
    }

    fn vmctl(&self, args: &[&str], stdin: Stdio, stdout: Stdio) -> std::process::Output {
        let out = Command::new(self.bin.join("vmctl"))
            .args(args)
            .env("VMD_SOCKET", &self.socket)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .expect("vmctl");
        assert!(
            out.status.success(),
            "vmctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn run(&self, image: &Path, dir: &Path, run: usize) -> Sample {
        let (name, moved) = (format!("bench{run}"), format!("moved{run}"));
        let memory = format!("{MEMORY_MIB}M");
        let image = image.to_str().unwrap();
        self.vmctl(
            &["start", "-b", image, "-m", &memory, &name],
            Stdio::null(),
            Stdio::null(),
        );
        let mut console = Command::new(self.bin.join("vmctl"))
            .args(["console", &name])
            .env("VMD_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("vmctl console");
        wait_for_byte(console.stdout.take().unwrap(), b'T');

        let file = dir.join("vmd.state");
        let started = Instant::now();
        self.vmctl(
            &["send", &name],
            Stdio::null(),
            Stdio::from(std::fs::File::create(&file).unwrap()),
        );
        let send = started.elapsed();
        let _ = console.kill();
        let _ = console.wait();
        let bytes = std::fs::metadata(&file).unwrap().len();

        let started = Instant::now();
        self.vmctl(
            &["receive", &moved],
            Stdio::from(std::fs::File::open(&file).unwrap()),
            Stdio::null(),
        );
        let receive = started.elapsed();
        self.vmctl(&["stop", "-f", "-w", &moved], Stdio::null(), Stdio::null());
        let _ = std::fs::remove_file(&file);
        Sample {
            send,
            bytes,
            receive,
        }
    }
}

impl Drop for Vmd {
    fn drop(&mut self) {
        // SAFETY: signalling the daemon this program started.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
    }
}

/// A QMP connection: commands in, their returns out, events skipped.
struct Qmp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Qmp {
    fn connect(path: &Path) -> Qmp {
        let stream = (0..500)
            .find_map(|_| {
                UnixStream::connect(path).ok().or_else(|| {
                    std::thread::sleep(Duration::from_millis(10));
                    None
                })
            })
            .expect("QMP socket");
        let mut qmp = Qmp {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        };
        qmp.line(); // greeting
        qmp.execute(r#"{"execute":"qmp_capabilities"}"#);
        qmp
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        assert!(self.reader.read_line(&mut line).unwrap() > 0, "QMP closed");
        line
    }

    /// Sends `command`; returns its answer line.
    fn execute(&mut self, command: &str) -> String {
        writeln!(self.writer, "{command}").unwrap();
        loop {
            let line = self.line();
            if line.contains("\"return\"") || line.contains("\"error\"") {
                assert!(!line.contains("\"error\""), "{command}: {line}");
                return line;
            }
        }
    }

    /// Polls `command` until its answer contains `wanted`.
    fn wait_until(&mut self, command: &str, wanted: &str) -> String {
        loop {
            let answer = self.execute(command);
            assert!(!answer.contains("\"failed\""), "{answer}");
            if answer.contains(wanted) {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn qemu(image: &Path, qmp: &Path, incoming: Option<&Path>) -> Child {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args([
            "-enable-kvm",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ])
        .args(["-machine", "pc", "-m", &format!("{MEMORY_MIB}M")])
        .arg("-bios")
        .arg(image)
        .args(["-serial", "stdio"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(file) = incoming {
        command
            .arg("-incoming")
            .arg(format!("exec:cat {}", file.display()));
    }
    command.spawn().expect("qemu-system-x86_64")
}

fn run_qemu(image: &Path, dir: &Path) -> Sample {
    let file = dir.join("qemu.state");
    let socket = dir.join("qmp-send.sock");
    let _ = std::fs::remove_file(&socket);
    let mut source = qemu(image, &socket, None);
    let mut qmp = Qmp::connect(&socket);
    wait_for_byte(source.stdout.take().unwrap(), b'T');
    qmp.execute(
        r#"{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":107374182400}}"#,
    );
    let started = Instant::now();
    qmp.execute(r#"{"execute":"stop"}"#);
    qmp.execute(&format!(
        r#"{{"execute":"migrate","arguments":{{"uri":"exec:cat > {}"}}}}"#,
        file.display()
    ));
    qmp.wait_until(r#"{"execute":"query-migrate"}"#, "\"completed\"");
    let send = started.elapsed();
    let _ = source.kill();
    let _ = source.wait();
    let bytes = std::fs::metadata(&file).unwrap().len();

    let socket = dir.join("qmp-receive.sock");
    let _ = std::fs::remove_file(&socket);
    let started = Instant::now();
    let mut target = qemu(image, &socket, Some(&file));
    let mut qmp = Qmp::connect(&socket);
    qmp.wait_until(r#"{"execute":"query-migrate"}"#, "\"completed\"");
    qmp.execute(r#"{"execute":"cont"}"#);
    qmp.wait_until(r#"{"execute":"query-status"}"#, "\"running\"");
    let receive = started.elapsed();
    let _ = target.kill();
    let _ = target.wait();
    let _ = std::fs::remove_file(&file);
    Sample {
        send,
        bytes,
        receive,
    }
}

struct Summary {
    send_s: f64,
    bytes: f64,
    receive_s: f64,
}

fn summarize(samples: &[Sample]) -> Summary {
    let mut send: Vec<f64> = samples.iter().map(|s| s.send.as_secs_f64()).collect();
    let mut bytes: Vec<f64> = samples.iter().map(|s| s.bytes as f64).collect();
    let mut receive: Vec<f64> = samples.iter().map(|s| s.receive.as_secs_f64()).collect();
    Summary {
        send_s: median(&mut send),
        bytes: median(&mut bytes),
        receive_s: median(&mut receive),
    }
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let bin: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = std::env::temp_dir().join(format!("vmd-migrate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("toucher.bin");
    std::fs::write(&image, guest()).unwrap();

    let vmd = Vmd::start(&bin, &dir);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for run in 0..runs {
        // Alternate so that both see the same machine conditions.
        ours.push(vmd.run(&image, &dir, run));
        theirs.push(run_qemu(&image, &dir));
        let (o, q) = (&ours[run], &theirs[run]);
        eprintln!(
            "  run {run}: send vmd {:.3} s, qemu {:.3} s; receive vmd {:.3} s, qemu {:.3} s",
            o.send.as_secs_f64(),
            q.send.as_secs_f64(),
            o.receive.as_secs_f64(),
            q.receive.as_secs_f64()
        );
    }
    drop(vmd);
    let _ = std::fs::remove_dir_all(&dir);

    let (o, q) = (summarize(&ours), summarize(&theirs));
    let mib = |b: f64| b / (1 << 20) as f64;
    println!(
        "send/receive benchmark: {MEMORY_MIB} MiB guest, {TOUCHED_MIB} MiB touched, {runs} runs each (medians)"
    );
    println!(
        "  send (pause to complete stream on disk): vmd {:.3} s, qemu {:.3} s, ratio {:.2}",
        o.send_s,
        q.send_s,
        o.send_s / q.send_s
    );
    println!(
        "  stream size: vmd {:.1} MiB, qemu {:.1} MiB, ratio {:.3}",
        mib(o.bytes),
        mib(q.bytes),
        o.bytes / q.bytes
    );
    println!(
        "  stream throughput: vmd {:.0} MiB/s, qemu {:.0} MiB/s, ratio {:.2}",
        mib(o.bytes) / o.send_s,
        mib(q.bytes) / q.send_s,
        (o.bytes / o.send_s) / (q.bytes / q.send_s)
    );
    println!(
        "  guest RAM moved per second ({MEMORY_MIB} MiB / send time): vmd {:.0} MiB/s, qemu {:.0} MiB/s, ratio {:.2}",
        MEMORY_MIB as f64 / o.send_s,
        MEMORY_MIB as f64 / q.send_s,
        q.send_s / o.send_s
    );
    println!(
        "  receive to running: vmd {:.3} s, qemu {:.3} s, ratio {:.2}",
        o.receive_s,
        q.receive_s,
        o.receive_s / q.receive_s
    );
}
