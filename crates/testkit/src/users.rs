//! Other users for the tests that play one: a throwaway system user that
//! is removed when the test ends, and control-socket connections that
//! carry a user's credentials, as a client that skips vmctl's own checks
//! would make them.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};

/// A system user (with a group of its own) made for one test and
/// deleted, with its group, when dropped.
pub struct ThrowawayUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl ThrowawayUser {
    /// Creates `<prefix><pid>` (at most 32 characters).
    pub fn create(prefix: &str) -> ThrowawayUser {
        let name = format!("{prefix}{}", std::process::id());
        let _ = Command::new("userdel").arg(&name).output();
        let status = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ])
            .status()
            .expect("useradd");
        assert!(status.success(), "useradd {name}: {status}");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        ThrowawayUser {
            uid: id("-u"),
            gid: id("-g"),
            name,
        }
    }

    /// Gives `path` to this user.
    pub fn chown(&self, path: &Path) {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(self.uid)),
            Some(nix::unistd::Gid::from_raw(self.gid)),
        )
        .unwrap();
    }

    /// A connection to the control socket at `socket` as this user.
    pub fn connect(&self, socket: &Path) -> OwnedFd {
        connect_as(socket, self.uid, 1).pop().unwrap()
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// `count` connections to `socket` whose peer credentials carry `uid`
/// (who need not exist). They are made on a thread that takes `uid` as
/// its effective uid for the connects only, with its file-system uid back
/// at root so that the test's private socket directory stays reachable.
pub fn connect_as(socket: &Path, uid: u32, count: usize) -> Vec<OwnedFd> {
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: the raw system calls (not the C library's wrappers, which
        // would change every thread) change this thread's credentials
        // only, and the thread ends once its connections are made. Keeping
        // the real and saved uid at 0 lets the file-system uid return to 0.
        let changed = unsafe { libc::syscall(libc::SYS_setresuid, 0, uid, 0) };
        assert_eq!(changed, 0, "setresuid: {}", std::io::Error::last_os_error());
        // SAFETY: as above; setfsuid has no other effect.
        unsafe { libc::syscall(libc::SYS_setfsuid, 0) };
        (0..count)
            .map(|_| {
                let sock = socket_for_test();
                connect(sock.as_raw_fd(), &UnixAddr::new(&socket).unwrap()).unwrap();
                sock
            })
            .collect()
    })
    .join()
    .unwrap()
}

fn socket_for_test() -> OwnedFd {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap()
}
