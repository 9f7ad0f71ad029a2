//! busybox's DHCP client as a test's real client: it asks on one
//! interface of a network namespace, and what it was leased is read back
//! from the variables it hands its script.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use crate::netns::NetNs;
use crate::tmp::TempDir;

pub const BUSYBOX: &str = "/bin/busybox";

/// One client run's script and what it recorded.
pub struct Udhcpc {
    _dir: TempDir,
    script: PathBuf,
    bound: PathBuf,
}

impl Udhcpc {
    pub fn new(tag: &str) -> Udhcpc {
        assert!(
            std::path::Path::new(BUSYBOX).exists(),
            "busybox-static is not installed"
        );
        let dir = TempDir::new(tag);
        let bound = dir.join("bound.env");
        let script = dir.join("script.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n",
                bound.display()
            ),
        )
        .expect("write the udhcpc script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("make the script executable");
        Udhcpc {
            _dir: dir,
            script,
            bound,
        }
    }

    /// udhcpc on `ifname` in `ns`: in the foreground, quitting once it
    /// has a lease or after five unanswered tries a second apart.
    pub fn command(&self, ns: &NetNs, ifname: &str) -> Command {
        let mut command = ns.command(BUSYBOX);
        command
            .args([
                "udhcpc", "-i", ifname, "-f", "-q", "-n", "-t", "5", "-T", "1", "-s",
            ])
            .arg(&self.script);
        command
    }

    /// The variables of the lease it bound (`ip`, `router`, `dns`,
    /// `lease`, `boot_file`, …), if it bound one.
    pub fn lease(&self) -> Option<BTreeMap<String, String>> {
        let env = std::fs::read_to_string(&self.bound).ok()?;
        Some(
            env.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}
