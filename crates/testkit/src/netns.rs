//! Network namespaces for tests: each test builds its taps, bridges and
//! DHCP clients in a namespace of its own, so tests run side by side
//! without seeing each other's devices, and deleting the namespace takes
//! whatever a failed test left behind.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A fresh namespace whose name says which test made it.
    pub fn new(tag: &str) -> NetNs {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("vmdt-{tag}-{}-{n}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `program args` inside the namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program} in {}: {e}", self.name))
    }

    /// Runs `ip args` inside the namespace, insists on success and returns
    /// its output.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = self.run("ip", args);
        assert!(
            out.status.success(),
            "ip {args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -d link show dev`, or `None` if there is no such link.
    pub fn link_details(&self, dev: &str) -> Option<String> {
        let out = self.run("ip", &["-d", "link", "show", "dev", dev]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a thread that has entered the namespace: sockets and
    /// devices it opens belong there.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                    // SAFETY: setns on a namespace descriptor affects only
                    // this thread, which ends with the closure.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Whether the kernel can make the device `type_args` describe, e.g.
    /// `["vrf", "table", "5"]`.
    pub fn can_add_link(&self, type_args: &[&str]) -> bool {
        let probe = "probe-link";
        let mut args = vec!["link", "add", probe, "type"];
        args.extend_from_slice(type_args);
        let made = self.run("ip", &args).status.success();
        if made {
            self.ip(&["link", "del", probe]);
        }
        made
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
