//! The `cloud` group: a Debian cloud image (scripts/cloud-image-fixture.sh)
//! boots under vmd as a user would start it, on a 4 GiB overlay of the
//! image with an SSH key and user data, and cloud-init provisions it from
//! the NoCloud volume vmd attaches (docs/cloud-init.md). Every verdict
//! rests on what the guest printed on its console or answered over SSH.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Recorder, log_failure};
use crate::guest::{Env, Guest};

/// The group's scenarios, in the order they are decided.
pub const NAMES: &[&str] = &[
    "cloud-runcmd",
    "cloud-ssh",
    "cloud-hostname",
    "cloud-growroot",
    "cloud-reboot",
];

const VM: &str = "cloudvm";
/// The overlay's size, as `vmctl create -s` takes it, and in bytes.
const OVERLAY_SIZE: &str = "4G";
const OVERLAY_BYTES: u64 = 4 << 30;
/// The image's default user (Debian's cloud.cfg), who gets the key.
const USER: &str = "debian";

/// A first boot of systemd and cloud-init nested under an emulator takes
/// minutes: SeaBIOS and GRUB read the kernel, systemd starts, cloud-init
/// runs its three stages (new SSH host keys among them).
const FIRST_BOOT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// A boot with nothing to provision.
const REBOOT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// One command over SSH, the connection included.
const SSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long sshd may take to answer once runcmd ran: several tries of a
/// command, any of which may meet a guest still busy with its first boot
/// (one try that hangs must not use up the wait).
const SSH_WAIT: Duration = Duration::from_secs(6 * 60);
/// How often a long wait says how far it has come: the host takes an
/// outer guest that prints nothing for minutes as hung.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// The user data: `bootcmd` runs on every boot, `runcmd` once per
/// instance; each prints a marker with the boot's id straight to the
/// serial port, so the console shows which boot ran what.
const USER_DATA: &str = "#cloud-config\n\
bootcmd:\n  \
  - echo \"@@cloud bootcmd boot_id=$(cat /proc/sys/kernel/random/boot_id)\" > /dev/ttyS0\n\
runcmd:\n  \
  - echo \"@@cloud runcmd host=$(hostname) iid=$(cat /var/lib/cloud/data/instance-id) boot_id=$(cat /proc/sys/kernel/random/boot_id)\" > /dev/ttyS0\n";

/// A line that shows how far the group has come.
fn progress(what: &str, since: Instant) {
    crate::report::emit(&format!(
        "progress cloud: {what} ({} s)",
        since.elapsed().as_secs()
    ));
}

/// The value of `key=` in a marker line.
fn field<'l>(line: &'l str, key: &str) -> &'l str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("")
}

/// Waits for a console line holding `needle` whose `boot_id=` is not
/// `not_boot` (the console replays earlier boots when attached again),
/// saying every minute how long it has waited.
fn wait_marker(
    g: &mut Guest,
    needle: &str,
    not_boot: Option<&str>,
    timeout: Duration,
    since: Instant,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut shown = g.console.text().len();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no line with {needle:?} within {timeout:?}; the console's last line: {:?}",
                last_line(&g.console.text())
            ));
        }
        if !g.console.attached() {
            g.reattach()?;
        }
        match g.console.wait_line(needle, left.min(PROGRESS_EVERY)) {
            Ok(line) if not_boot.is_some_and(|b| field(&line, "boot_id") == b) => continue,
            Ok(line) => return Ok(line),
            Err(e) if e.contains("console client ended") => continue,
            Err(_) => {
                let text = g.console.text();
                progress(
                    &format!(
                        "waiting for {needle:?}; vm {:?}; the console's last line: {:?}",
                        g.env.vm_state(&g.name),
                        last_line(&text)
                    ),
                    since,
                );
                // A console that showed nothing for a minute is attached
                // again: a new one that shows more (vmd's replay) means
                // the relay stalled, which is a failure of vmd's.
                if text.len() == shown {
                    progress("the console showed nothing new: attaching it again", since);
                    let tail: String = last_line(&text);
                    g.reattach()?;
                    // The replay follows vmctl's "Connected" line at once;
                    // a guest silent for a minute is unlikely to speak in
                    // the same moment.
                    let attached = Instant::now();
                    while !g.console.text().contains("Connected to")
                        && attached.elapsed() < Duration::from_secs(30)
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    std::thread::sleep(Duration::from_millis(300));
                    let replay = g.console.text();
                    if last_line(&replay) != tail {
                        return Err(format!(
                            "the attached console stalled at {tail:?} while the guest went on to {:?}",
                            last_line(&replay)
                        ));
                    }
                }
                shown = g.console.text().len();
            }
        }
    }
}

/// The console's last line without terminal escapes, at most 100
/// characters: what the guest was doing.
fn last_line(text: &str) -> String {
    crate::console::last_line(&testkit::daemon::strip_escapes(text), 100)
}

/// Runs `command` in the guest as the default user over SSH with `key`.
fn ssh(key: &Path, ip: &str, command: &str) -> Result<String, String> {
    let out = Command::new("timeout")
        .arg(SSH_TIMEOUT.as_secs().to_string())
        .arg("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=30",
        ])
        .arg(format!("{USER}@{ip}"))
        .arg(command)
        .output()
        .map_err(|e| format!("ssh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "ssh {USER}@{ip} {command:?} ended with {}: {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Tries `command` over SSH until it succeeds (sshd starts late in a
/// boot), at most `timeout`.
fn ssh_retry(
    key: &Path,
    ip: &str,
    command: &str,
    timeout: Duration,
    since: Instant,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match ssh(key, ip, command) {
            Ok(out) => return Ok(out),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => {
                let e: String = e.chars().take(160).collect();
                progress(&format!("waiting for sshd: {e}"), since);
                std::thread::sleep(Duration::from_secs(10));
            }
        }
    }
}

/// The lines of `out` as `key=value` pairs.
fn value<'o>(out: &'o str, key: &str) -> Result<&'o str, String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .ok_or_else(|| format!("the guest did not report {key}: {out:?}"))
}

/// The group: a 4 GiB overlay of the cloud image, started with user data
/// and an SSH key, provisioned, reached over SSH, rebooted.
pub fn cloud_vm(env: &Env, rec: &mut Recorder) -> Result<(), String> {
    let base = env.fixtures.join("cloud.qcow2");
    if !base.exists() {
        return Err(format!(
            "{} is missing: scripts/cloud-image-fixture.sh builds it",
            base.display()
        ));
    }
    let overlay = env.work_path("cloud-overlay.qcow2");
    let key = env.work.join("cloud-key");
    let user_data = env.work.join("cloud-user-data.yaml");
    for f in ["cloud-overlay.qcow2", "cloud-key", "cloud-key.pub"] {
        let _ = std::fs::remove_file(env.work.join(f));
    }
    crate::command_output(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "realguest-cloud",
                "-f",
            ])
            .arg(&key),
    )?;
    std::fs::write(&user_data, USER_DATA).map_err(|e| e.to_string())?;
    env.vmctl(&[
        "create",
        "-b",
        &base.display().to_string(),
        "-s",
        OVERLAY_SIZE,
        &overlay,
    ])?;
    let args: Vec<String> = [
        "-L",
        "-m",
        "1G",
        "-d",
        &overlay,
        "--user-data",
        &user_data.display().to_string(),
        "--ssh-key",
        &key.with_extension("pub").display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let started = Instant::now();
    let mut g = Guest::start(env, VM, &args)?;
    let result = provision(env, &mut g, &key, rec, started);
    if result.is_err() || rec.any_failed(NAMES) {
        log_failure("cloud", Some(&g), env);
    }
    result
}

fn provision(
    env: &Env,
    g: &mut Guest,
    key: &Path,
    rec: &mut Recorder,
    started: Instant,
) -> Result<(), String> {
    let id = env.vm_id(VM).ok_or("cloudvm is not listed")?;
    let ip = format!("100.64.{id}.3");
    let bootcmd = wait_marker(g, "@@cloud bootcmd", None, FIRST_BOOT_TIMEOUT, started)?;
    let first_boot = field(&bootcmd, "boot_id").to_string();
    let bootcmd_at = started.elapsed().as_secs();
    progress("bootcmd ran", started);
    let runcmd = wait_marker(g, "@@cloud runcmd", None, FIRST_BOOT_TIMEOUT, started);
    let provisioned_at = started.elapsed().as_secs();
    let runcmd_line = runcmd.clone().unwrap_or_default();
    let runcmd = rec.record(
        "cloud-runcmd",
        runcmd.map(|line| {
            format!(
                "the console showed {:?} {provisioned_at} s after vmctl start \
                 (bootcmd's line after {bootcmd_at} s)",
                line.trim()
            )
        }),
    );
    if !runcmd {
        return Err("cloud-init never ran the user data's runcmd".into());
    }

    let report = ssh_retry(
        key,
        &ip,
        "echo user=$(id -un); echo host=$(hostname); echo kernel=$(uname -r); \
         echo iid=$(cat /var/lib/cloud/data/instance-id); \
         echo disk=$(lsblk -bdno SIZE /dev/vda); echo part=$(lsblk -bdno SIZE /dev/vda1); \
         echo fs=$(sudo -n dumpe2fs -h /dev/vda1 2>/dev/null | \
           awk -F: '/^Block count/ {c=$2} /^Block size/ {s=$2} END {printf \"%.0f\", c*s}'); \
         echo df=$(df -B1 --output=size / | tail -1)",
        SSH_WAIT,
        started,
    )
    .map_err(|e| {
        format!(
            "{e}; vm {:?}, the console's last line: {:?}",
            env.vm_state(VM),
            last_line(&g.console.text())
        )
    });
    let ssh_ok = rec.record(
        "cloud-ssh",
        report.as_ref().map_err(String::clone).and_then(|out| {
            let user = value(out, "user")?;
            if user != USER {
                return Err(format!("ssh logged in as {user:?}"));
            }
            Ok(format!(
                "ssh -i key {USER}@{ip} ran `id -un; uname -r`: {user}, {}",
                value(out, "kernel")?
            ))
        }),
    );
    if !ssh_ok {
        return Err("no SSH login with the key".into());
    }
    let report = report.unwrap_or_default();
    rec.record(
        "cloud-hostname",
        value(&report, "host").and_then(|host| {
            super::expect("hostname over ssh", host, VM)?;
            Ok(format!(
                "`hostname` answers {host} (runcmd printed host={})",
                field(&runcmd_line, "host")
            ))
        }),
    );
    rec.record("cloud-growroot", grown(&report));

    // A reboot: bootcmd runs again, runcmd does not, the instance id
    // stays what it was.
    let iid = value(&report, "iid")?.to_string();
    let _ = ssh(key, &ip, "sudo -n systemctl reboot");
    let rebooted = Instant::now();
    let again = (|| {
        let line = wait_marker(
            g,
            "@@cloud bootcmd",
            Some(&first_boot),
            REBOOT_TIMEOUT,
            started,
        )?;
        let second_boot = field(&line, "boot_id").to_string();
        let out = ssh_retry(
            key,
            &ip,
            "echo status=$(cloud-init status --wait | tail -1 | tr -d ' '); \
             echo iid=$(cat /var/lib/cloud/data/instance-id); \
             echo instances=$(ls /var/lib/cloud/instances | wc -l)",
            REBOOT_TIMEOUT,
            started,
        )?;
        let took = rebooted.elapsed().as_secs();
        super::expect(
            "cloud-init status after the reboot",
            value(&out, "status")?,
            "status:done",
        )?;
        super::expect("instance-id after the reboot", value(&out, "iid")?, &iid)?;
        super::expect("instances cloud-init knows", value(&out, "instances")?, "1")?;
        // runcmd's line would come before cloud-init reports done.
        std::thread::sleep(Duration::from_secs(2));
        let text = g.console.text();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("@@cloud runcmd") && field(l, "boot_id") == second_boot)
        {
            return Err(format!(
                "runcmd ran again after the reboot: {}",
                line.trim()
            ));
        }
        Ok(format!(
            "back in {took} s: bootcmd ran again (boot_id {second_boot}), runcmd did not; \
             cloud-init status: done, instance-id still {iid}"
        ))
    })();
    rec.record("cloud-reboot", again);
    Ok(())
}

/// The root file system grew with the disk: its partition ends at the
/// 4 GiB disk's end and the ext4 file system fills the partition.
fn grown(report: &str) -> Result<String, String> {
    let number = |key: &str| -> Result<u64, String> {
        let v = value(report, key)?;
        v.parse()
            .map_err(|_| format!("the guest reported {key}={v:?}"))
    };
    let (disk, part, fs, df) = (
        number("disk")?,
        number("part")?,
        number("fs")?,
        number("df")?,
    );
    if disk != OVERLAY_BYTES {
        return Err(format!(
            "the guest's vda holds {disk} bytes, not {OVERLAY_BYTES}"
        ));
    }
    // The partition starts 1 MiB in and may end on an alignment boundary.
    if part + (4 << 20) < disk {
        return Err(format!(
            "vda1 holds {part} bytes of the {disk}: growpart did not grow it"
        ));
    }
    if fs + (4 << 20) < part {
        return Err(format!(
            "the file system spans {fs} bytes of vda1's {part}: resize2fs did not grow it"
        ));
    }
    Ok(format!(
        "vda {disk} bytes, vda1 {part}, ext4 {fs} (df: {df}); the image's was 1.5 GiB"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_fields() {
        let line = "@@cloud runcmd host=cloudvm iid=iid-vmd-0123 boot_id=ab-cd\r";
        assert_eq!(field(line, "host"), "cloudvm");
        assert_eq!(field(line, "boot_id"), "ab-cd");
        assert_eq!(field(line, "missing"), "");
        assert_eq!(value("user=debian\nhost=x\n", "host"), Ok("x"));
        assert!(value("user=debian", "host").is_err());
    }

    #[test]
    fn the_root_must_fill_the_disk() {
        let whole = "disk=4294967296\npart=4293918720\nfs=4293918720\ndf=4200000000";
        assert!(grown(whole).is_ok());
        let not_grown = "disk=4294967296\npart=1610612736\nfs=1610612736\ndf=1500000000";
        assert!(grown(not_grown).unwrap_err().contains("growpart"));
        let fs_small = "disk=4294967296\npart=4293918720\nfs=1610612736\ndf=1500000000";
        assert!(grown(fs_small).unwrap_err().contains("resize2fs"));
    }
}
