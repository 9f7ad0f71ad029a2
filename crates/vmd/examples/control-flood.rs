//! Control-socket flood benchmark: how long root's `vmctl status` takes
//! on a quiet daemon and while hostile clients flood the socket with
//! requests and never read a reply. Measured, never asserted.
//!
//! Usage: `control-flood [clients] [samples]` with `VMD_BIN_DIR` naming the
//! directory of the vmd and vmctl to measure (bench/control-flood.sh).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use proto::control::Request;
use proto::frame;
use testkit::daemon::TestDaemon;
use testkit::users::connect_as;

/// A uid with no rights on the daemon (`nobody`).
const HOSTILE_UID: u32 = 65534;

fn status_latencies(daemon: &TestDaemon, samples: usize) -> Vec<Duration> {
    let mut took: Vec<Duration> = (0..samples)
        .map(|_| {
            let started = Instant::now();
            let out = daemon.vmctl(&["status"]);
            let elapsed = started.elapsed();
            assert!(
                String::from_utf8_lossy(&out.stdout).starts_with("   ID"),
                "status did not answer"
            );
            elapsed
        })
        .collect();
    took.sort();
    took
}

fn summary(took: &[Duration]) -> (f64, f64, f64) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(took[took.len() / 2]),
        ms(took[took.len() * 9 / 10]),
        ms(took[took.len() - 1]),
    )
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let clients = args.first().copied().unwrap_or(20);
    let samples = args.get(1).copied().unwrap_or(30);
    let daemon = TestDaemon::start();
    let quiet = status_latencies(&daemon, samples);

    let hostile = connect_as(&daemon.socket, HOSTILE_UID, clients);
    for sock in &hostile {
        nix::fcntl::fcntl(
            sock,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .expect("non-blocking");
        for _ in 0..5000 {
            if frame::send(sock.as_fd(), &Request::Info, &[]).is_err() {
                break;
            }
        }
    }
    let flooded = status_latencies(&daemon, samples);
    drop(hostile);

    let (q50, q90, qmax) = summary(&quiet);
    let (f50, f90, fmax) = summary(&flooded);
    println!("root's vmctl status, {samples} samples each, ms (median / p90 / max):");
    println!("  quiet daemon                 {q50:8.2} {q90:8.2} {qmax:8.2}");
    println!("  {clients:3} clients flooding       {f50:8.2} {f90:8.2} {fmax:8.2}");
    println!("  flooded / quiet (median)     {:8.2}", f50 / q50);
}
