//! Load (issue 11): 200 concurrent vmctl clients issue status, start, stop,
//! pause and unpause against 20 VMs for a fixed time. Afterwards each VM is
//! in a state that one of its last successful commands left it in, and the
//! daemon holds exactly the descriptors and child processes it held before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::daemon::TestDaemon;
use testkit::guest::firmware;

const VMS: usize = 20;
const CLIENTS: usize = 200;
const LOAD: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Stopped,
    Running,
    Paused,
}

#[derive(Clone, Copy, Debug)]
enum Command {
    Status,
    Start,
    Stop,
    Pause,
    Unpause,
}

impl Command {
    fn args(self, vm: &str) -> Vec<String> {
        let words: &[&str] = match self {
            Command::Status => &["status"],
            Command::Start => &["start"],
            // -w: the command succeeds once the VM is gone, so its effect
            // lies inside the time the client waited.
            Command::Stop => &["stop", "-w"],
            Command::Pause => &["pause"],
            Command::Unpause => &["unpause"],
        };
        words
            .iter()
            .map(|w| w.to_string())
            .chain([vm.to_string()])
            .collect()
    }

    /// The state a successful command leaves the VM in.
    fn effect(self) -> Option<State> {
        match self {
            Command::Status => None,
            Command::Start | Command::Unpause => Some(State::Running),
            Command::Stop => Some(State::Stopped),
            Command::Pause => Some(State::Paused),
        }
    }
}

/// A successful state-changing command and when its client waited for it.
#[derive(Clone, Copy, Debug)]
struct Done {
    command: Command,
    began: Instant,
    ended: Instant,
}

/// A small deterministic generator; each client has its own stream.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn descriptors(pid: u32) -> usize {
    testkit::daemon::open_descriptors(pid).len()
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let after = &s[s.rfind(')')? + 2..];
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// The STATE column of `vmctl status` for every VM.
fn states(daemon: &TestDaemon) -> BTreeMap<String, State> {
    let text = daemon.vmctl_ok(&["status"]);
    text.lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let state = match cols[cols.len() - 2] {
                "running" => State::Running,
                "paused" => State::Paused,
                "stopped" => State::Stopped,
                other => panic!("unexpected state {other} in {line}"),
            };
            (cols[cols.len() - 1].to_string(), state)
        })
        .collect()
}

/// The states the VM may be in: the effect of any successful command that
/// could have taken effect last, i.e. that had not ended before every other
/// one began. Effects happen somewhere inside the client's wait.
fn possible(done: &[Done]) -> Vec<State> {
    if done.is_empty() {
        return vec![State::Stopped];
    }
    done.iter()
        .enumerate()
        .filter(|(i, x)| {
            done.iter()
                .enumerate()
                .all(|(j, y)| *i == j || x.ended >= y.began)
        })
        .filter_map(|(_, x)| x.command.effect())
        .collect()
}

#[test]
fn two_hundred_clients_against_twenty_vms() {
    testkit::needs!(root, kvm);
    let dir = testkit::tmp::TempDir::new("load");
    let image = dir.join("idle.bin");
    std::fs::write(&image, firmware("main:\n    hlt\n    jmp main\n")).unwrap();
    let conf = dir.join("vm.conf");
    let mut text = String::new();
    for i in 0..VMS {
        text.push_str(&format!(
            "vm \"load{i}\" {{\n\tdisable\n\tmemory 32M\n\tboot \"{}\"\n}}\n",
            image.display()
        ));
    }
    std::fs::write(&conf, text).unwrap();
    let daemon = TestDaemon::start_with(&["-f", conf.to_str().unwrap()]);
    let vmd = daemon.pid();
    // Settle one start/stop so lazily opened things (e.g. /dev/kvm, the
    // pty master directory) are counted in the baseline.
    daemon.vmctl_ok(&["start", "load0"]);
    daemon.vmctl_ok(&["stop", "-w", "load0"]);
    let fds_before = descriptors(vmd);
    assert!(children(vmd).is_empty());

    let log: Arc<Mutex<Vec<Vec<Done>>>> = Arc::new(Mutex::new(vec![Vec::new(); VMS]));
    let started = Instant::now();
    let counts = Arc::new(Mutex::new((0usize, 0usize)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let socket = daemon.socket.clone();
            let log = log.clone();
            let counts = counts.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((client as u64 + 1) * 0x1000_0001));
                while started.elapsed() < LOAD {
                    let vm = rng.below(VMS);
                    let command = [
                        Command::Status,
                        Command::Start,
                        Command::Start,
                        Command::Stop,
                        Command::Pause,
                        Command::Unpause,
                    ][rng.below(6)];
                    let name = format!("load{vm}");
                    let args = command.args(&name);
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let began = Instant::now();
                    let out = testkit::daemon::vmctl_at(&socket, &args);
                    let ended = Instant::now();
                    let ok = out.status.success();
                    {
                        let mut c = counts.lock().unwrap();
                        c.0 += 1;
                        c.1 += usize::from(ok);
                    }
                    // A failure must be one of the spec's answers, never a
                    // broken connection.
                    let err = String::from_utf8_lossy(&out.stderr);
                    assert!(
                        !err.contains("Connection") && !err.contains("Broken pipe"),
                        "{args:?}: {err}"
                    );
                    if ok && command.effect().is_some() {
                        log.lock().unwrap()[vm].push(Done {
                            command,
                            began,
                            ended,
                        });
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client thread failed");
    }
    let (issued, succeeded) = *counts.lock().unwrap();
    eprintln!(
        "{issued} commands, {succeeded} succeeded, in {:?}",
        started.elapsed()
    );
    assert!(succeeded > 200, "the daemon served the load");

    let now = states(&daemon);
    let log = log.lock().unwrap();
    for (i, done) in log.iter().enumerate() {
        let name = format!("load{i}");
        let state = now[&name];
        let allowed = possible(done);
        assert!(
            allowed.contains(&state),
            "{name} is {state:?}, its last successful commands allow {allowed:?}: {:?}",
            &done[done.len().saturating_sub(4)..]
        );
    }

    // Nothing leaked: with every VM stopped the daemon is back to its
    // baseline of descriptors and has no child processes.
    daemon.vmctl_ok(&["stop", "-f", "-w", "-a"]);
    daemon.wait_for(
        || children(vmd).is_empty(),
        Duration::from_secs(10),
        "no VM processes",
    );
    assert!(states(&daemon).values().all(|s| *s == State::Stopped));
    // At most: the baseline may count the connection of the `stop` before
    // it, which the daemon closes once it sees that vmctl went away.
    let deadline = Instant::now() + Duration::from_secs(5);
    while descriptors(vmd) > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        descriptors(vmd) <= fds_before,
        "the daemon's descriptors are not back to the baseline of {fds_before}: {}\n--- vmd log ---\n{}",
        testkit::daemon::open_descriptors(vmd).join(", "),
        daemon.log()
    );
}
