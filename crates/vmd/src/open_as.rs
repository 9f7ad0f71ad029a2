//! Opening the files of a VM with the rights of the user who chose them.
//!
//! vmd runs as root, but a user who creates an instance names its disks,
//! its CD and its initrd. Checking such a name against the user's rights
//! and then opening it as root leaves two gaps: the check and the open
//! can meet different files (the name can be swapped in between), and a
//! check of the file's own mode bits misses what the kernel would check
//! (the directories on the way, ACLs, the images a qcow2 chain names as
//! its backing files). So the open itself is done with the user's
//! credentials: uid, primary gid and supplementary groups. The kernel
//! then refuses what the user could not open, and what was opened is what
//! is used.
//!
//! Linux keeps credentials per thread, and the raw system calls (unlike
//! the C library's wrappers, which change every thread of the process)
//! change only the calling thread's. Each open runs on a short-lived
//! thread that first takes the user's credentials for good; the core
//! thread waits for it at most [`OPEN_TIMEOUT`], so that a name on a hung
//! file system cannot stall the daemon either. Opens are non-blocking and
//! the result is checked through its descriptor ([`disk::open_checked`]).
//! Files of vm.conf's VMs and of root's requests are opened as root, on
//! such a thread too.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use disk::Expect;

/// How long one open may take before the request fails.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Whose rights an open is done with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAs {
    Root,
    /// A user's (uid): their passwd entry gives the groups.
    User(u32),
}

impl OpenAs {
    /// The rights for files chosen by `uid` (root's choices need none).
    pub fn chooser(uid: u32) -> OpenAs {
        if uid == 0 {
            OpenAs::Root
        } else {
            OpenAs::User(uid)
        }
    }

    /// Opens `path` read-only or read-write with these rights, never
    /// blocking on what the name leads to, and checks the opened file
    /// against `expect`.
    pub fn open(self, path: &Path, write: bool, expect: Expect) -> io::Result<File> {
        let credentials = match self {
            OpenAs::Root => None,
            OpenAs::User(uid) => Some(Credentials::of(uid)?),
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let owned: PathBuf = path.to_path_buf();
        std::thread::Builder::new()
            .name("open-as".into())
            .spawn(move || {
                let result = match &credentials {
                    Some(credentials) => credentials.assume(),
                    None => Ok(()),
                }
                .and_then(|()| disk::open_checked(&owned, write, expect));
                // The waiter may have given up: the file is then closed.
                let _ = tx.send(result);
            })?;
        match rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "did not open within {} s (a hung file system?)",
                    OPEN_TIMEOUT.as_secs()
                ),
            )),
        }
    }
}

/// A user's credentials, from the passwd and group databases: the one
/// place vmd looks up a user's groups (see also permissions.rs).
#[derive(Debug)]
pub struct Credentials {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl Credentials {
    /// `uid`'s primary group and supplementary groups (the primary one
    /// among them, as getgrouplist(3) gives it).
    pub fn of(uid: u32) -> io::Result<Credentials> {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .map_err(io::Error::from)?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("uid {uid} has no passwd entry to open files with"),
                )
            })?;
        let name = std::ffi::CString::new(user.name.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let groups = nix::unistd::getgrouplist(&name, user.gid)
            .map_err(io::Error::from)?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        Ok(Credentials {
            uid,
            gid: user.gid.as_raw(),
            groups,
        })
    }

    /// Whether the user is in group `gid`, primary or supplementary.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Makes the calling thread this user for good: groups first (which
    /// needs root), then the gid, then the uid.
    fn assume(&self) -> io::Result<()> {
        // SAFETY: the raw system call reads `groups.len()` gids from the
        // vector's buffer, which holds that many, and changes the
        // credentials of the calling thread only.
        let set =
            unsafe { libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr()) };
        if set != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: takes integers only; calling thread only.
        if unsafe { libc::syscall(libc::SYS_setresgid, self.gid, self.gid, self.gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: takes integers only; calling thread only.
        if unsafe { libc::syscall(libc::SYS_setresuid, self.uid, self.uid, self.uid) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// `nobody` exists in every Debian passwd database.
    const NOBODY: u32 = 65534;

    #[test]
    fn a_user_opens_only_what_the_kernel_lets_them_open() {
        testkit::needs!(root);
        let dir = std::env::temp_dir().join(format!("vmd-open-as-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let inner = dir.join("closed");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let open_file = dir.join("readable.img");
        std::fs::write(&open_file, b"data").unwrap();
        std::fs::set_permissions(&open_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        // World-readable, inside a directory only root may enter.
        let hidden = inner.join("hidden.img");
        std::fs::write(&hidden, b"data").unwrap();
        std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700)).unwrap();

        let user = OpenAs::User(NOBODY);
        assert!(user.open(&open_file, false, Expect::Image).is_ok());
        assert_eq!(
            user.open(&open_file, true, Expect::Image)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EACCES),
            "read-only for the user"
        );
        assert_eq!(
            user.open(&hidden, false, Expect::Image)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EACCES),
            "the file's own mode bits allow it; the directory does not"
        );
        assert!(OpenAs::Root.open(&hidden, true, Expect::Image).is_ok());
        // The daemon's own thread is still root.
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_uid_without_a_passwd_entry_opens_nothing() {
        let err = OpenAs::User(u32::MAX - 7)
            .open(Path::new("/etc/hostname"), false, Expect::RegularFile)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }
}
