//! The real-guest harness: a stock Linux kernel (Debian's cloud kernel)
//! runs under vmd and its own drivers use every device — virtio-blk on
//! raw and qcow2, virtio-scsi CD, virtio-rng, virtio-net with DHCP, a
//! switch, SMP, kvm-clock, ACPI power button, reboot, send and receive.
//! docs/real-guests.md says how it runs and how to read its report.
//!
//! * [`scenarios`] runs the scenarios against a vmd of its own and prints
//!   each verdict as a [`report`] line; [`guest`] and [`console`] are how
//!   it starts VMs and types into their serial consoles.
//! * On a host with hardware KVM that runs right there; elsewhere
//!   [`outer`] boots it inside QEMU's emulator, whose emulated SVM gives
//!   the outer guest a KVM that runs whole kernels.
//! * [`host_checks`] then reads back, on the host, what the guests wrote.
//! * [`stall`] describes, from inside the outer guest, a runner that
//!   stopped reporting; [`kvm_hold`] keeps one idle KVM VM there, so the
//!   outer kernel does not switch SVM on and off for every guest boot.
//! * [`bench`] measures a guest under vmd and under QEMU side by side;
//!   [`kvm_stats`] counts the exits each side's guest takes.

pub mod bench;
pub mod console;
pub mod guest;
pub mod host_checks;
pub mod kvm_hold;
pub mod kvm_stats;
pub mod outer;
pub mod report;
pub mod scenarios;
pub mod stall;

/// The word after `flag` in a command line (`--fixtures DIR`).
pub fn arg_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Runs `scripts/<script> <fixtures>`, which builds (or finds cached)
/// `what`; its standard error when it succeeds, a message carrying all it
/// printed when it fails.
pub fn build_fixture(
    script: &str,
    fixtures: &std::path::Path,
    what: &str,
) -> Result<String, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(script);
    let out = std::process::Command::new(&path)
        .arg(fixtures)
        .output()
        .map_err(|e| format!("scripts/{script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building {what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs `command`; its standard output and error when it succeeds, a
/// message naming it and carrying them when it fails.
pub fn command_output(command: &mut std::process::Command) -> Result<String, String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{command:?} failed: {}", text.trim()))
    }
}
