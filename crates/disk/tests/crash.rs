//! Crash consistency: a writer process is killed with SIGKILL in the
//! middle of random writes, twenty times. Afterwards `qemu-img check` finds
//! no corruption (leaked clusters are allowed: allocations whose mapping
//! never reached the disk), and every write that had been flushed reads
//! back, unless a write issued after that flush covered the same sector.
//!
//! The writer is this test binary run again with only the ignored
//! `crash_writer` test selected; it learns what to do from the environment.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use disk::{Access, BlockBackend, DiskFormat};

const SIZE: u64 = 32 << 20;
const SECTOR: usize = 512;
/// The writer flushes after every this many operations.
const BATCH: u64 = 8;

#[derive(Debug)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    Zero { offset: u64, len: u64 },
    Discard { offset: u64, len: u64 },
}

/// Operation `index` of the run with `seed`; the writer and the checker
/// derive the same sequence.
fn op(seed: u64, index: u64) -> Op {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(1_000_003).wrapping_add(index));
    let len = rng.u64(1..=256) * SECTOR as u64;
    let offset = rng.u64(0..(SIZE - len) / SECTOR as u64) * SECTOR as u64;
    match rng.u8(0..20) {
        0 => Op::Zero { offset, len },
        1 => Op::Discard { offset, len },
        _ => Op::Write {
            offset,
            data: pattern(seed ^ (index << 20), len as usize),
        },
    }
}

fn apply(op: &Op, model: &mut [u8]) {
    match op {
        Op::Write { offset, data } => {
            model[*offset as usize..*offset as usize + data.len()].copy_from_slice(data)
        }
        Op::Zero { offset, len } | Op::Discard { offset, len } => {
            model[*offset as usize..(*offset + *len) as usize].fill(0)
        }
    }
}

/// The child: writes until killed, reporting each completed flush.
#[test]
#[ignore = "run by crash_consistency_under_sigkill as its writer process"]
fn crash_writer() {
    let image = std::env::var("CRASH_IMAGE").expect("CRASH_IMAGE");
    let seed: u64 = std::env::var("CRASH_SEED").unwrap().parse().unwrap();
    let backend = open(image.as_ref(), DiskFormat::Qcow2, Access::ReadWrite);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for index in 0..1_000_000u64 {
        match op(seed, index) {
            Op::Write { offset, data } => backend.write_at(&data, offset).unwrap(),
            Op::Zero { offset, len } => backend.write_zeroes(offset, len).unwrap(),
            Op::Discard { offset, len } => backend.discard(offset, len).unwrap(),
        }
        if (index + 1) % BATCH == 0 {
            backend.flush().unwrap();
            writeln!(out, "flushed {index}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn crash_consistency_under_sigkill() {
    testkit::needs!("qemu-img");
    let dir = tempdir();
    let image = path_in(&dir, "crash.qcow2");
    let mut rng = fastrand::Rng::with_seed(2024);
    let mut flushed_ops = 0;
    for round in 0..20u64 {
        let cluster = ["512", "4096", "65536", "2097152"][round as usize % 4];
        let compat = if round % 5 == 4 { "0.10" } else { "1.1" };
        let _ = std::fs::remove_file(&image);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("cluster_size={cluster},compat={compat}"),
            image.to_str().unwrap(),
            &SIZE.to_string(),
        ]);
        let seed = 1000 + round;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "crash_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CRASH_IMAGE", &image)
            .env("CRASH_SEED", seed.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                if let Some(n) = line.strip_prefix("flushed ") {
                    last = Some(n.parse::<u64>().unwrap());
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(rng.u64(50..400)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "round {round}: writer ended on its own: {status}"
        );
        let flushed = reader.join().unwrap();
        flushed_ops += flushed.map_or(0, |n| n + 1);

        assert_check_clean(&image, true);
        verify(
            &image,
            seed,
            flushed,
            &format!("round {round} ({cluster}, compat {compat})"),
        );
    }
    // The rounds must have flushed something for the check to mean much.
    assert!(
        flushed_ops >= 20 * BATCH,
        "only {flushed_ops} operations were flushed in 20 rounds"
    );
}

/// Each sector holds what the flushed writes left there, or what one of the
/// at most BATCH operations after the last completed flush put there.
fn verify(image: &std::path::Path, seed: u64, flushed: Option<u64>, what: &str) {
    let mut model = vec![0u8; SIZE as usize];
    let first_unflushed = flushed.map_or(0, |n| n + 1);
    for index in 0..first_unflushed {
        apply(&op(seed, index), &mut model);
    }
    let pending: Vec<Op> = (first_unflushed..first_unflushed + BATCH)
        .map(|i| op(seed, i))
        .collect();

    let backend = open(image, DiskFormat::Qcow2, Access::ReadOnly);
    let got = read_all(backend.as_ref() as &dyn BlockBackend);
    let mut candidate = vec![0u8; SECTOR];
    for (sector, (have, want)) in got.chunks(SECTOR).zip(model.chunks(SECTOR)).enumerate() {
        if have == want {
            continue;
        }
        let start = (sector * SECTOR) as u64;
        let matches_pending = pending.iter().any(|op| {
            let (offset, len) = match op {
                Op::Write { offset, data } => (*offset, data.len() as u64),
                Op::Zero { offset, len } | Op::Discard { offset, len } => (*offset, *len),
            };
            if start < offset || start >= offset + len {
                return false;
            }
            match op {
                Op::Write { data, .. } => {
                    let at = (start - offset) as usize;
                    candidate.copy_from_slice(&data[at..at + SECTOR]);
                }
                _ => candidate.fill(0),
            }
            have == candidate.as_slice()
        });
        assert!(
            matches_pending,
            "{what}: sector {sector} lost a flushed write (last flushed operation {flushed:?})"
        );
    }
}
