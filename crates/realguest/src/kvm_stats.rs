//! KVM's own counters of what its guests made it do (the `kvm` directory
//! of debugfs, summed over every VM of the kernel), read before and after
//! a measured step, so the benchmark can say how many exits each side's
//! guest took per block it wrote or read. Where the two sides differ in
//! speed, the difference in exits says where to look: an exit costs a
//! microsecond on hardware and far more nested.
//!
//! The sums cover every VM of the kernel that reads them: in an outer
//! guest only the benchmark's (and the runner's idle one, which takes no
//! exits); directly on a host, whatever else runs there too.

use std::path::Path;

/// Where KVM's counters are.
const DIR: &str = "/sys/kernel/debug/kvm";

/// The counters read, by the names KVM gives them, with the short names
/// they are printed under.
const COUNTERS: [(&str, &str); 6] = [
    ("exits", "exits"),
    ("io_exits", "io"),
    ("mmio_exits", "mmio"),
    ("halt_exits", "halt"),
    ("irq_injections", "inj"),
    ("insn_emulation", "emul"),
];

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvmStats([u64; COUNTERS.len()]);

impl KvmStats {
    /// Reads the counters, mounting debugfs first if it is not; `None`
    /// where KVM has none to read.
    pub fn read() -> Option<KvmStats> {
        let dir = Path::new(DIR);
        if !dir.exists() {
            let _ = crate::command_output(std::process::Command::new("mount").args([
                "-t",
                "debugfs",
                "debugfs",
                "/sys/kernel/debug",
            ]));
        }
        Self::read_from(dir)
    }

    fn read_from(dir: &Path) -> Option<KvmStats> {
        let mut values = [0; COUNTERS.len()];
        for (value, (file, _)) in values.iter_mut().zip(COUNTERS) {
            *value = std::fs::read_to_string(dir.join(file))
                .ok()?
                .trim()
                .parse()
                .ok()?;
        }
        Some(KvmStats(values))
    }

    /// Every exit the guests took between `self` and `later`.
    pub fn exits_until(&self, later: &KvmStats) -> u64 {
        later.0[0].saturating_sub(self.0[0])
    }

    /// The counts between `self` and `later`, each divided by `per`, as
    /// `exits:N,io:N,...` (one word, for a sample's notes).
    pub fn per(&self, later: &KvmStats, per: u64) -> String {
        COUNTERS
            .iter()
            .zip(self.0.iter().zip(later.0))
            .map(|((_, short), (before, after))| {
                format!(
                    "{short}:{:.1}",
                    after.saturating_sub(*before) as f64 / per.max(1) as f64
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_and_their_growth_shared_out() {
        let scratch = testkit::tmp::TempDir::new("kvm-stats");
        let dir = scratch.path();
        let write = |values: [u64; 6]| {
            for ((file, _), value) in COUNTERS.iter().zip(values) {
                std::fs::write(dir.join(file), format!("{value}\n")).unwrap();
            }
        };
        write([100, 10, 0, 5, 20, 1]);
        let before = KvmStats::read_from(dir).unwrap();
        write([900, 410, 0, 5, 820, 3]);
        let after = KvmStats::read_from(dir).unwrap();
        assert_eq!(before.exits_until(&after), 800);
        assert_eq!(
            before.per(&after, 400),
            "exits:2.0,io:1.0,mmio:0.0,halt:0.0,inj:2.0,emul:0.0"
        );
        std::fs::remove_file(dir.join("halt_exits")).unwrap();
        assert_eq!(KvmStats::read_from(dir), None, "a counter missing");
    }
}
