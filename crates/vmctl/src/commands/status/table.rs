//! The text of the status table: header, rows and the OWNER/TTY columns,
//! separate from fetching the list so it can be checked column by column.

use proto::control::{VmInfo, state};
use scaled::fmt_scaled;

/// The OWNER column holds at most this many characters.
const OWNER_MAX: usize = 15;

/// User and group names for the OWNER column.
pub trait Accounts {
    fn user_name(&self, uid: u32) -> Option<String>;
    fn group_name(&self, gid: u32) -> Option<String>;
}

/// The host's passwd and group databases.
pub struct SystemAccounts;

impl Accounts for SystemAccounts {
    fn user_name(&self, uid: u32) -> Option<String> {
        nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|user| user.name)
    }

    fn group_name(&self, gid: u32) -> Option<String> {
        nix::unistd::Group::from_gid(gid.into())
            .ok()
            .flatten()
            .map(|group| group.name)
    }
}

pub fn header() -> String {
    format!(
        "{:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>12} {:>8} {}",
        "ID", "PID", "VCPUS", "MAXMEM", "CURMEM", "TTY", "OWNER", "STATE", "NAME"
    )
}

/// `user` or `user:group`, numeric where the name is unknown, cut to 15
/// characters.
pub fn owner_label(uid: u32, gid: Option<u32>, accounts: &dyn Accounts) -> String {
    let mut label = accounts.user_name(uid).unwrap_or_else(|| uid.to_string());
    if let Some(gid) = gid {
        label.push(':');
        label.push_str(&accounts.group_name(gid).unwrap_or_else(|| gid.to_string()));
    }
    match label.char_indices().nth(OWNER_MAX) {
        Some((cut, _)) => label[..cut].to_string(),
        None => label,
    }
}

/// The console tty relative to `/dev` (`pts/3`), `-` when there is none.
pub fn tty_label(tty: Option<&str>) -> String {
    match tty {
        Some(path) if !path.is_empty() => path.strip_prefix("/dev/").unwrap_or(path).to_string(),
        _ => "-".to_string(),
    }
}

fn scaled(bytes: u64) -> String {
    fmt_scaled(i64::try_from(bytes).unwrap_or(i64::MAX))
}

/// What only a running VM has: its process id, the memory in use and its
/// console tty (if any).
pub struct Live<'a> {
    pub pid: u32,
    pub cur_mem: u64,
    pub tty: Option<&'a str>,
}

/// The running VM's [`Live`] facts; `None` for a VM that does not run.
pub fn live(vm: &VmInfo) -> Option<Live<'_>> {
    match vm.pid {
        Some(pid) if vm.running() => Some(Live {
            pid,
            cur_mem: vm.cur_mem,
            tty: vm.tty.as_deref().filter(|tty| !tty.is_empty()),
        }),
        _ => None,
    }
}

/// One VM's line. PID, CURMEM and TTY are `-` unless the VM runs.
pub fn row(vm: &VmInfo, owner: &str) -> String {
    let (pid, cur_mem, tty) = match live(vm) {
        Some(live) => (
            live.pid.to_string(),
            scaled(live.cur_mem),
            tty_label(live.tty),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    format!(
        "{:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>12} {:>8} {}",
        vm.id,
        pid,
        vm.vcpus,
        scaled(vm.max_mem),
        cur_mem,
        tty,
        owner,
        state::name(vm.state),
        vm.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names;
    impl Accounts for Names {
        fn user_name(&self, uid: u32) -> Option<String> {
            match uid {
                0 => Some("root".into()),
                1000 => Some("averyveryverylongusername".into()),
                _ => None,
            }
        }
        fn group_name(&self, gid: u32) -> Option<String> {
            (gid == 0).then(|| "wheel".into())
        }
    }

    fn running_vm() -> VmInfo {
        VmInfo {
            id: 1,
            name: "example".into(),
            max_mem: 1 << 30,
            cur_mem: 92_379_955,
            vcpus: 1,
            pid: Some(72118),
            tty: Some("/dev/pts/8".into()),
            owner_uid: 0,
            owner_gid: None,
            state: state::RUNNING,
        }
    }

    #[test]
    fn header_line() {
        assert_eq!(
            header(),
            "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME"
        );
    }

    #[test]
    fn rows_like_the_spec_example() {
        assert_eq!(
            row(&running_vm(), "root"),
            "    1 72118     1    1.0G   88.1M   pts/8         root  running example"
        );
        let stopped = VmInfo {
            id: 2,
            name: "web1".into(),
            max_mem: 512 << 20,
            cur_mem: 0,
            vcpus: 1,
            pid: None,
            tty: None,
            owner_uid: 0,
            owner_gid: Some(0),
            state: 0,
        };
        assert_eq!(
            row(&stopped, &owner_label(0, Some(0), &Names)),
            "    2     -     1    512M       -       -   root:wheel  stopped web1"
        );
    }

    #[test]
    fn states_and_dashes() {
        let mut vm = running_vm();
        vm.state = state::RUNNING | state::PAUSED;
        assert!(row(&vm, "root").contains("   paused example"));
        vm.state = state::RUNNING | state::SHUTDOWN;
        assert!(row(&vm, "root").contains(" stopping example"));
        vm.state = state::WAITING;
        vm.pid = None;
        assert_eq!(
            row(&vm, "root"),
            "    1     -     1    1.0G       -       -         root  waiting example"
        );
        vm.state = state::DISABLED;
        assert!(row(&vm, "root").ends_with(" stopped example"));
        // Running without a tty shows `-`; a tty outside /dev is shown whole.
        let mut vm = running_vm();
        vm.tty = None;
        assert!(row(&vm, "root").contains("   88.1M       -"));
        assert_eq!(tty_label(Some("/tmp/pty")), "/tmp/pty");
        assert_eq!(tty_label(Some("")), "-");
        // Many vCPUs and a large id keep their columns.
        let mut vm = running_vm();
        vm.vcpus = 64;
        vm.id = 123456;
        assert!(row(&vm, "root").starts_with("123456 72118    64    1.0G"));
    }

    #[test]
    fn owners() {
        assert_eq!(owner_label(0, None, &Names), "root");
        assert_eq!(owner_label(0, Some(0), &Names), "root:wheel");
        assert_eq!(owner_label(4242, None, &Names), "4242");
        assert_eq!(owner_label(4242, Some(77), &Names), "4242:77");
        assert_eq!(owner_label(0, Some(77), &Names), "root:77");
        assert_eq!(owner_label(1000, None, &Names), "averyveryverylo");
        assert_eq!(owner_label(4242, Some(0), &Names), "4242:wheel");
        assert_eq!(
            owner_label(123_456_789, Some(987_654_321), &Names),
            "123456789:98765"
        );
    }

    #[test]
    fn long_owner_widens_the_column() {
        let vm = running_vm();
        let line = row(&vm, &owner_label(1000, None, &Names));
        assert!(line.contains("   pts/8 averyveryverylo  running example"));
    }
}
