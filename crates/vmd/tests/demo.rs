//! README's first command, `./scripts/demo.sh`, on a host as fresh as
//! this one can be made without a new machine: no user `_vmd` and no
//! `/var/empty`. The script must make both itself and show SeaBIOS's
//! banner on the VM's console.
//!
//! The script runs in a private mount namespace whose /etc and /var are
//! fresh tmpfs copies of this host's: every entry is the host's own (bind
//! mounted), except that passwd, group, shadow and gshadow (and their `-`
//! backups) are copies without `_vmd`, and /var has no `empty`. So the
//! script's `useradd` and `mkdir` change only the namespace's copies, and
//! vmd, started by the script in that namespace, looks the user up in
//! them: the VM boots only if the script did the set-up. The binaries are
//! the ones this test suite built (VMD_BIN_DIR), not a release build.
//! SeaBIOS is this host's (the script installs it only when dpkg says it
//! is missing). Needs root.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::daemon::{bin_dir, binary, processes_on};
use testkit::tmp::TempDir;

const BANNER: &str = "SeaBIOS (version";

/// Run in the new mount namespace: makes /etc and /var fresh (see the
/// module's comment), checks that `_vmd` and /var/empty are gone, then
/// runs the demo ("$2"). "$1" is a scratch directory for mount points.
const LAUNCH: &str = r#"set -e
scratch=$1
demo=$2
mount --make-rprivate /
# fresh DIR ENTRY...: DIR becomes a tmpfs holding DIR's entries, bound,
# except the ENTRYs, which the caller fills in before the move.
fresh() {
    dir=$1
    shift
    new="$scratch/fresh$dir"
    mkdir -p "$new"
    mount -t tmpfs -o mode=0755 vmd-demo-fresh "$new"
    for entry in "$dir"/* "$dir"/.[!.]*; do
        name=${entry##*/}
        if [ ! -e "$entry" ] && [ ! -L "$entry" ]; then
            continue
        fi
        for left in "$@"; do
            [ "$name" = "$left" ] && continue 2
        done
        if [ -L "$entry" ]; then
            cp -P "$entry" "$new/$name"
        elif [ -d "$entry" ]; then
            mkdir "$new/$name"
            mount --rbind "$entry" "$new/$name"
        else
            touch "$new/$name"
            mount --bind "$entry" "$new/$name"
        fi
    done
}
users="passwd group shadow gshadow passwd- group- shadow- gshadow-"
fresh /etc $users .pwd.lock
for f in $users; do
    if [ -e "/etc/$f" ]; then
        cp -p "/etc/$f" "$scratch/fresh/etc/$f"
        sed -i '/^_vmd:/d' "$scratch/fresh/etc/$f"
    fi
done
mount --move "$scratch/fresh/etc" /etc
fresh /var empty
mount --move "$scratch/fresh/var" /var

if getent passwd _vmd >/dev/null || getent group _vmd >/dev/null; then
    echo "launch: _vmd is still there" >&2
    exit 1
fi
if [ -e /var/empty ]; then
    echo "launch: /var/empty is still there" >&2
    exit 1
fi
echo "launch: no _vmd, no /var/empty"
exec "$demo"
"#;

fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let sink = Arc::new(Mutex::new(Vec::new()));
    let to = sink.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            to.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    sink
}

fn text(sink: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&sink.lock().unwrap()).into_owned()
}

#[test]
fn the_demo_sets_up_a_fresh_host_and_boots_seabios() {
    testkit::needs!(root, kvm);
    // Built by the suite; the script is told to use these.
    binary("vmd");
    binary("vmctl");
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/demo.sh");
    let host_passwd = std::fs::read("/etc/passwd").unwrap();
    let dir = TempDir::new("demo");
    let socket = dir.join("vmd-demo.sock");

    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            LAUNCH,
            "launch",
        ])
        .arg(dir.path())
        .arg(&demo)
        .env("VMD_BIN_DIR", bin_dir())
        .env("VMD_SOCKET", &socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own: the script, vmd and vmctl are stopped
        // together, as a terminal's Ctrl-C would.
        .process_group(0)
        .spawn()
        .expect("run unshare (util-linux)");
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let report = |what: &str| {
        format!(
            "{what}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- vmd log ---\n{}",
            text(&stdout),
            text(&stderr),
            std::fs::read_to_string(dir.join("vmd-demo.log")).unwrap_or_default()
        )
    };

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut exited = None;
    while !text(&stdout).contains(BANNER) && Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let booted = text(&stdout).contains(BANNER);
    // What the script made, seen from inside its namespace while it runs.
    let root = PathBuf::from(format!("/proc/{}/root", child.id()));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let empty = std::fs::metadata(root.join("var/empty")).ok();

    if exited.is_none() {
        // SAFETY: signalling the process group this test made, whose
        // leader has not been reaped yet.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
    }
    let end = Instant::now() + Duration::from_secs(30);
    while exited.is_none() && Instant::now() < end {
        exited = child.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    if exited.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let left = processes_on(&socket);
    for &pid in &left {
        // SAFETY: a process this test started (it has the test's socket).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }

    assert!(
        text(&stdout).starts_with("launch: no _vmd, no /var/empty\n"),
        "{}",
        report("the namespace was not fresh")
    );
    assert!(booted, "{}", report("no SeaBIOS banner"));
    assert!(
        passwd.lines().any(|l| l.starts_with("_vmd:")),
        "{}",
        report("no _vmd in the namespace's /etc/passwd")
    );
    let empty = empty.expect("/var/empty in the namespace");
    assert!(empty.is_dir());
    assert_eq!(
        (empty.uid(), empty.permissions().mode() & 0o7777),
        (0, 0o755)
    );
    assert!(exited.is_some(), "{}", report("the demo did not stop"));
    assert!(left.is_empty(), "left running: {left:?}");
    assert_eq!(
        std::fs::read("/etc/passwd").unwrap(),
        host_passwd,
        "the host's /etc/passwd changed"
    );
}
