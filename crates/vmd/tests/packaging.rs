//! The install step and the Debian package: `make install` stages every
//! file where it belongs, `make deb` packages the same files (stripped
//! binaries, compressed man pages), the package unpacks with `dpkg -x`
//! and installs with `dpkg --root` into a scratch root, where its
//! postinst creates the user _vmd; `systemd-analyze verify` accepts the
//! installed unit. Needs root (dpkg --root, a mount namespace) and make,
//! dpkg-deb, systemd-analyze and man from scripts/install-deps.sh.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::daemon::{bin_dir, binary};
use testkit::mdoc::repo_root;
use testkit::tmp::TempDir;

/// Where a staged file comes from.
enum Source {
    /// A file of the repository, as it is.
    Repo(&'static str),
    /// A manual page of the repository (compressed in the package).
    Page(&'static str),
    /// A built binary.
    Binary(&'static str),
}

use Source::{Binary, Page, Repo};

/// Every file the installation has, with its mode and origin.
const FILES: &[(&str, u32, Source)] = &[
    ("etc/vm.conf", 0o644, Repo("dist/vm.conf")),
    (
        "lib/systemd/system/vmd.service",
        0o644,
        Repo("dist/vmd.service"),
    ),
    ("usr/sbin/vmctl", 0o755, Binary("vmctl")),
    ("usr/sbin/vmd", 0o755, Binary("vmd")),
    (
        "usr/share/bash-completion/completions/vmctl",
        0o644,
        Repo("completions/vmctl.bash"),
    ),
    ("usr/share/doc/vmd/copyright", 0o644, Repo("dist/copyright")),
    (
        "usr/share/doc/vmd/examples/vm.conf",
        0o644,
        Repo("dist/vm.conf"),
    ),
    (
        "usr/share/doc/vmd/status-json-schema.json",
        0o644,
        Repo("docs/status-json-schema.json"),
    ),
    (
        "usr/share/fish/vendor_completions.d/vmctl.fish",
        0o644,
        Repo("completions/vmctl.fish"),
    ),
    ("usr/share/man/man5/vm.conf.5", 0o644, Page("vm.conf.5")),
    ("usr/share/man/man8/vmctl.8", 0o644, Page("vmctl.8")),
    ("usr/share/man/man8/vmd.8", 0o644, Page("vmd.8")),
    (
        "usr/share/zsh/vendor-completions/_vmctl",
        0o644,
        Repo("completions/_vmctl"),
    ),
];

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (scripts/install-deps.sh installs it)"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn make(target: &str, vars: &[(&str, &Path)]) {
    // The binaries are the ones the tests run.
    binary("vmd");
    binary("vmctl");
    let mut command = Command::new("make");
    command
        .arg("-C")
        .arg(repo_root())
        .arg(target)
        .arg(format!("BINDIR={}", bin_dir().display()));
    for (name, value) in vars {
        command.arg(format!("{name}={}", value.display()));
    }
    run(&mut command);
}

/// Every regular file under `root`, by relative path, with its mode.
fn files(root: &Path) -> BTreeMap<String, u32> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, u32>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(&path, root, out);
            } else {
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(relative, meta.permissions().mode() & 0o7777);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn gunzip(path: &Path) -> Vec<u8> {
    let output = run(Command::new("gzip").arg("-dc").arg(path));
    output.stdout
}

/// `vmd -n` of the installed binary on the installed configuration: the
/// binary runs and the example configuration is valid.
fn check_installed_configuration(root: &Path) {
    let output = run(Command::new(root.join("usr/sbin/vmd"))
        .arg("-n")
        .arg("-f")
        .arg(root.join("etc/vm.conf")));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "configuration OK\n"
    );
}

#[test]
fn make_install_stages_every_file() {
    testkit::needs!("make");
    let dir = TempDir::new("install");
    let root = dir.join("root");
    make("install", &[("DESTDIR", &root)]);
    let staged = files(&root);
    let expected: BTreeMap<String, u32> = FILES
        .iter()
        .map(|(path, mode, _)| (path.to_string(), *mode))
        .collect();
    assert_eq!(staged, expected, "files and modes of make install");
    for (path, _, source) in FILES {
        let content = read(&root.join(path));
        let original = match source {
            Repo(file) => read(&repo_root().join(file)),
            Page(page) => read(&repo_root().join("man").join(page)),
            Binary(name) => read(&bin_dir().join(name)),
        };
        assert!(content == original, "{path} differs from its source");
    }
    check_installed_configuration(&root);
    // A staged install leaves the system alone: the user is made by the
    // package's postinst (see deb_installs_into_a_scratch_root).
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    assert!(passwd.is_empty());
}

/// Builds the package in `dir`; returns its path.
fn build_deb(dir: &TempDir) -> PathBuf {
    let debdir = dir.join("debian");
    make("deb", &[("DEBDIR", &debdir)]);
    let debs: Vec<PathBuf> = std::fs::read_dir(&debdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}", debdir.display());
    let deb = debs[0].clone();
    let version = env!("CARGO_PKG_VERSION");
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("vmd_{version}_")), "{name}");
    deb
}

fn field(deb: &Path, name: &str) -> String {
    let output = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn deb_unpacks_with_the_expected_files() {
    testkit::needs!("make", "dpkg-deb");
    let dir = TempDir::new("deb");
    let deb = build_deb(&dir);
    assert_eq!(field(&deb, "Package"), "vmd");
    assert_eq!(field(&deb, "Version"), env!("CARGO_PKG_VERSION"));
    assert!(field(&deb, "Depends").contains("passwd"));
    assert!(field(&deb, "Recommends").contains("seabios"));
    // iPXE, for `-B net` (vmctl(8)).
    assert!(field(&deb, "Recommends").contains("ipxe-qemu"));

    // Everything belongs to root.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        assert!(line.contains(" root/root "), "not owned by root: {line}");
    }
    let control = dir.join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/vm.conf\n"
    );
    assert_eq!(
        read(&control.join("postinst")),
        read(&repo_root().join("dist/postinst"))
    );

    let root = dir.join("root");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
    let unpacked = files(&root);
    let expected: BTreeMap<String, u32> = FILES
        .iter()
        .map(|(path, mode, source)| match source {
            Page(_) => (format!("{path}.gz"), *mode),
            _ => (path.to_string(), *mode),
        })
        .collect();
    assert_eq!(unpacked, expected, "files and modes in the package");
    for (path, _, source) in FILES {
        match source {
            Repo(file) => assert!(
                read(&root.join(path)) == read(&repo_root().join(file)),
                "{path} differs from {file}"
            ),
            Page(page) => assert!(
                gunzip(&root.join(format!("{path}.gz")))
                    == read(&repo_root().join("man").join(page)),
                "{path} differs from man/{page}"
            ),
            // Stripped: smaller, and still an ELF executable.
            Binary(name) => {
                let packaged = read(&root.join(path));
                assert!(packaged.starts_with(b"\x7fELF"), "{path}");
                assert!(packaged.len() <= read(&bin_dir().join(name)).len());
            }
        }
    }
    check_installed_configuration(&root);
}

/// A directory dpkg can install into: an empty package database and the
/// account files useradd edits.
fn scratch_system(root: &Path) {
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "etc",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for (file, text) in [
        ("var/lib/dpkg/status", ""),
        ("var/lib/dpkg/available", ""),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n"),
        ("etc/gshadow", "root:*::\n"),
    ] {
        std::fs::write(root.join(file), text).unwrap();
    }
}

fn dpkg(root: &Path, args: &[&str]) -> Output {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-depends"])
        .args(args))
}

fn lines_starting(path: &Path, prefix: &str) -> Vec<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn deb_installs_into_a_scratch_root() {
    testkit::needs!(root, "make", "dpkg-deb", "dpkg");
    let dir = TempDir::new("dpkg-root");
    let deb = build_deb(&dir);
    let root = dir.join("root");
    scratch_system(&root);
    let host_passwd = read(Path::new("/etc/passwd"));

    let deb = deb.to_str().unwrap();
    dpkg(&root, &["-i", deb]);
    let status = dpkg(&root, &["-s", "vmd"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("Status: install ok installed"));
    for (path, _, source) in FILES {
        let path = match source {
            Page(_) => format!("{path}.gz"),
            _ => path.to_string(),
        };
        assert!(root.join(&path).is_file(), "{path} not installed");
    }

    // The postinst made the user, in the scratch root only.
    let users = lines_starting(&root.join("etc/passwd"), "_vmd:");
    assert_eq!(users.len(), 1, "{users:?}");
    let fields: Vec<&str> = users[0].split(':').collect();
    assert_eq!(fields[5], "/var/empty");
    assert_eq!(fields[6], "/usr/sbin/nologin");
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "a system uid");
    assert_eq!(lines_starting(&root.join("etc/group"), "_vmd:").len(), 1);
    let empty = std::fs::metadata(root.join("var/empty")).unwrap();
    assert!(empty.is_dir());
    assert_eq!(empty.permissions().mode() & 0o7777, 0o755);
    assert!(read(Path::new("/etc/passwd")) == host_passwd);

    // Installing again keeps the one user and the edited configuration.
    std::fs::write(root.join("etc/vm.conf"), "# mine\n").unwrap();
    dpkg(&root, &["-i", deb]);
    assert_eq!(lines_starting(&root.join("etc/passwd"), "_vmd:").len(), 1);
    assert_eq!(read(&root.join("etc/vm.conf")), b"# mine\n");

    // Removal keeps the configuration; purge removes it.
    dpkg(&root, &["-r", "vmd"]);
    assert!(!root.join("usr/sbin/vmd").exists());
    assert!(!root.join("lib/systemd/system/vmd.service").exists());
    assert!(root.join("etc/vm.conf").exists());
    dpkg(&root, &["--purge", "vmd"]);
    assert!(!root.join("etc/vm.conf").exists());
}

/// `systemd-analyze verify` on a unit, with the installed binaries in
/// /usr/sbin (an overlay in a private mount namespace, so the host's
/// /usr/sbin is untouched) and the installed man pages on MANPATH (the
/// unit's Documentation= is checked with man). Returns its output and
/// whether it accepted the unit.
fn verify(root: &Path, unit: &Path) -> (bool, String) {
    let script = r#"set -e
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$1/usr/sbin:/usr/sbin" /usr/sbin
MANPATH="$1/usr/share/man" exec systemd-analyze verify "$2"
"#;
    let output = Command::new("unshare")
        .args(["--mount", "sh", "-c", script, "verify"])
        .arg(root)
        .arg(unit)
        .output()
        .expect("run unshare (util-linux)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success() && text.trim().is_empty(), text)
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    testkit::needs!(root, "make", "systemd-analyze");
    let dir = TempDir::new("systemd");
    let root = dir.join("root");
    make("install", &[("DESTDIR", &root)]);
    let unit = root.join("lib/systemd/system/vmd.service");
    let (ok, text) = verify(&root, &unit);
    assert!(ok, "systemd-analyze verify: {text}");

    // The check has teeth: a unit whose programs are missing, or whose
    // settings are wrong, is refused in the same setting.
    let text = std::fs::read_to_string(&unit).unwrap();
    for (what, broken) in [
        (
            "a missing program",
            text.replace("ExecStart=/usr/sbin/vmd", "ExecStart=/usr/sbin/vmd-gone"),
        ),
        ("an unknown setting", text.replace("KillMode=", "KilMode=")),
        (
            "a bad value",
            text.replace("KillMode=mixed", "KillMode=some"),
        ),
        (
            "a missing manual page",
            text.replace("man:vm.conf(5)", "man:vm.conf.missing(5)"),
        ),
    ] {
        let copy = dir.join("vmd.service");
        std::fs::write(&copy, broken).unwrap();
        let (ok, _) = verify(&root, &copy);
        assert!(!ok, "systemd-analyze verify accepts {what}");
    }

    // What the unit must do (vmd(8), "Service").
    let settings = unit_settings(&text);
    for expected in [
        ("ExecStart", "/usr/sbin/vmd -d"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillMode", "mixed"),
        ("Type", "notify"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert!(settings.contains(&expected), "{expected:?} in the unit");
    }
    // The stop timeout covers the longest a guest may take once asked
    // (vmctl(8), stop: 3 s to acknowledge, then 2 minutes), with margin
    // for the VM processes to end and vmctl to hear of it.
    let timeout: u64 = setting(&settings, "TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(timeout >= 3 + 120 + 20, "TimeoutStopSec={timeout}");
}

fn unit_settings(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect()
}

fn setting<'a>(settings: &[(&str, &'a str)], name: &str) -> &'a str {
    let values: Vec<&str> = settings
        .iter()
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| *value)
        .collect();
    assert_eq!(values.len(), 1, "one {name}= in the unit: {values:?}");
    values[0]
}

/// A stand-in for vmctl: `status` prints a table of four VMs (1 and 3
/// running, 2 stopped, 4 paused); `stop -w ID` and `wait ID` log their
/// start and end and take one second, as a guest shutting down would;
/// `stop -w 4` fails at once (VM 4 is already shutting down).
const FAKE_VMCTL: &str = r#"#!/bin/sh
log="$(dirname "$0")/calls"
case "$1" in
status)
    echo '   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE   NAME'
    echo '    1  4001     1    512M   10.0M   pts/1         root  running   web'
    echo '    2     -     1    512M       -       -         root  stopped   db'
    echo '    3  4003     1    512M   10.0M   pts/3         root  running   mail'
    echo '    4  4004     1    512M   10.0M   pts/4         root   paused   dns'
    ;;
stop|wait)
    if [ "$1 $2 $3" = "stop -w 4" ]; then
        echo "refused $*" >> "$log"
        exit 1
    fi
    echo "begin $*" >> "$log"
    sleep 1
    echo "end $*" >> "$log"
    ;;
*)
    echo "unexpected $*" >> "$log"
    exit 1
    ;;
esac
"#;

/// The unit's ExecStop, run by sh as systemd would run it (`$$` is a
/// literal `$` for systemd), with the stand-in vmctl in place of
/// /usr/sbin/vmctl: every running VM is asked to stop at the same time,
/// not one after the other, the stopped one is left alone, the one
/// already shutting down is waited for, and the command ends only when
/// all of them have.
#[test]
fn stopping_the_service_asks_every_vm_at_once_and_waits_for_all() {
    let dir = TempDir::new("execstop");
    let fake = dir.join("vmctl");
    std::fs::write(&fake, FAKE_VMCTL).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let text = std::fs::read_to_string(repo_root().join("dist/vmd.service")).unwrap();
    let settings = unit_settings(&text);
    let command = setting(&settings, "ExecStop");
    let script = command
        .strip_prefix("/bin/sh -c '")
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("ExecStop is not a /bin/sh -c script: {command}"))
        .replace("$$", "$")
        .replace("/usr/sbin/vmctl", fake.to_str().unwrap());
    let started = std::time::Instant::now();
    run(Command::new("/bin/sh").arg("-c").arg(&script));
    let took = started.elapsed();

    let calls = std::fs::read_to_string(dir.join("calls")).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    let mut asked: Vec<&str> = calls
        .iter()
        .filter_map(|c| c.strip_prefix("begin "))
        .collect();
    asked.sort_unstable();
    assert_eq!(asked, ["stop -w 1", "stop -w 3", "wait 4"], "{calls:?}");
    assert!(calls.contains(&"refused stop -w 4"), "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.starts_with("unexpected")),
        "{calls:?}"
    );
    // All asked before any has finished, and all finished before the
    // command ended.
    let first_end = calls.iter().position(|c| c.starts_with("end ")).unwrap();
    let last_begin = calls.iter().rposition(|c| c.starts_with("begin ")).unwrap();
    assert!(last_begin < first_end, "one after another: {calls:?}");
    assert_eq!(calls.iter().filter(|c| c.starts_with("end ")).count(), 3);
    assert!(
        took < std::time::Duration::from_millis(2500),
        "took {took:?}: the VMs were not stopped at the same time"
    );
}
