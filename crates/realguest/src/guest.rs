//! One inner VM as the scenarios see it: started with `vmctl start`, its
//! console attached, its boot report read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::daemon::TestDaemon;

use crate::console::Console;

/// A Linux boot to user space takes 10–35 s nested under an emulator; a
/// boot through SeaBIOS and GRUB reads the kernel through the BIOS first.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(150);
/// A guest command: generous, since clocks in a nested guest run slow.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// What the guest's /init reported on its `@@guest boot` line.
#[derive(Debug, Clone, Default)]
pub struct BootReport {
    pub fields: HashMap<String, String>,
    pub boot_id: String,
}

impl BootReport {
    /// `key=value` pairs; `cmdline=` takes the rest of the line.
    pub fn parse(line: &str, ready: &str) -> BootReport {
        let mut fields = HashMap::new();
        let body = line.split_once("@@guest boot ").map_or("", |(_, b)| b);
        let (head, cmdline) = body.split_once("cmdline=").unwrap_or((body, ""));
        for word in head.split_whitespace() {
            if let Some((k, v)) = word.split_once('=') {
                fields.insert(k.to_string(), v.to_string());
            }
        }
        fields.insert("cmdline".into(), cmdline.trim().to_string());
        let boot_id = ready
            .split_once("boot_id=")
            .map_or("", |(_, id)| id.trim())
            .to_string();
        BootReport { fields, boot_id }
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }
}

/// Where the scenarios run: a vmd of their own and the fixtures.
pub struct Env {
    pub daemon: TestDaemon,
    pub vmctl: PathBuf,
    pub fixtures: PathBuf,
    /// Where images and streams are made; the host checks them afterwards.
    pub work: PathBuf,
}

impl Env {
    pub fn fixture(&self, name: &str) -> String {
        self.fixtures.join(name).display().to_string()
    }

    pub fn work_path(&self, name: &str) -> String {
        self.work.join(name).display().to_string()
    }

    /// Runs vmctl; `Err` carries its message when it fails.
    pub fn vmctl(&self, args: &[&str]) -> Result<String, String> {
        let out = self.daemon.vmctl(args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "vmctl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The VM's id in `vmctl status`, if it is listed.
    pub fn vm_id(&self, name: &str) -> Option<u32> {
        self.daemon.status_row(name)?.first()?.parse().ok()
    }

    /// The VM's state column in `vmctl status`.
    pub fn vm_state(&self, name: &str) -> Option<String> {
        let row = self.daemon.status_row(name)?;
        row.get(row.len().checked_sub(2)?).cloned()
    }

    /// Waits until `check` holds.
    pub fn wait(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("timed out after {timeout:?} waiting for {what}"))
    }

    /// The direct-boot options for the fixture kernel with `tag` in its
    /// command line (`rg.boot=TAG`).
    pub fn direct_boot(&self, tag: &str) -> Vec<String> {
        vec![
            "-b".into(),
            self.fixture("bzImage"),
            "--initrd".into(),
            self.fixture("inner.img"),
            "--cmdline".into(),
            format!("console=ttyS0 panic=-1 rg.boot={tag}"),
        ]
    }
}

/// A started VM with its console attached.
pub struct Guest<'a> {
    pub env: &'a Env,
    pub name: String,
    pub console: Console,
    pub boot: BootReport,
}

impl<'a> Guest<'a> {
    /// `vmctl start ARGS NAME`, then attaches the console.
    pub fn start(env: &'a Env, name: &str, args: &[String]) -> Result<Guest<'a>, String> {
        let mut full: Vec<&str> = vec!["start"];
        full.extend(args.iter().map(String::as_str));
        full.push(name);
        env.vmctl(&full)?;
        Guest::attach(env, name)
    }

    /// Attaches the console of the running VM `name`.
    pub fn attach(env: &'a Env, name: &str) -> Result<Guest<'a>, String> {
        let console = Console::attach(&env.vmctl, &env.daemon.socket, name)
            .map_err(|e| format!("vmctl console {name}: {e}"))?;
        Ok(Guest {
            env,
            name: name.to_string(),
            console,
            boot: BootReport::default(),
        })
    }

    /// Waits for the guest's boot report and its shell, from a boot other
    /// than `previous` (a boot id); the console replays what it missed.
    pub fn wait_boot(&mut self, previous: Option<&str>) -> Result<&BootReport, String> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let boot = self.console.wait_line("@@guest boot ", left)?;
            let left = deadline.saturating_duration_since(Instant::now());
            let ready = self.console.wait_line("@@guest ready", left)?;
            let report = BootReport::parse(&boot, &ready);
            if previous != Some(report.boot_id.as_str()) {
                self.boot = report;
                // Let the shell print its prompt before anything is typed.
                std::thread::sleep(Duration::from_secs(1));
                return Ok(&self.boot);
            }
        }
    }

    /// Re-attaches the console (after a detach, or when the client ended).
    pub fn reattach(&mut self) -> Result<(), String> {
        self.console = Console::attach(&self.env.vmctl, &self.env.daemon.socket, &self.name)
            .map_err(|e| format!("vmctl console {}: {e}", self.name))?;
        Ok(())
    }

    pub fn run_ok(&mut self, command: &str) -> Result<String, String> {
        self.console.run_ok(command, COMMAND_TIMEOUT)
    }

    pub fn query(&mut self, expr: &str) -> Result<String, String> {
        self.console.query(expr, COMMAND_TIMEOUT)
    }

    /// The last `lines` lines of the console, for a failure's log.
    pub fn transcript(&self, lines: usize) -> String {
        let text = testkit::daemon::strip_escapes(&self.console.text());
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// `md5sum`'s sum of a host file.
pub fn md5_of(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::host_checks::md5_of_stream(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_report_fields() {
        let r = BootReport::parse(
            "@@guest boot kernel=6.1 cpus=2 disks=vda:10,vdb:20 cmdline=console=ttyS0 rg.boot=x",
            "@@guest ready boot_id=abc",
        );
        assert_eq!(r.get("cpus"), "2");
        assert_eq!(r.get("disks"), "vda:10,vdb:20");
        assert_eq!(r.get("cmdline"), "console=ttyS0 rg.boot=x");
        assert_eq!(r.boot_id, "abc");
        assert_eq!(r.get("missing"), "");
    }
}
