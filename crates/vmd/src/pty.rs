//! Console ptys (docs/lifecycle.md, "The console"): allocated by vmd,
//! owned by the VM's user while it runs, kept across guest reboots.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::termios::{self, SetArg};
use nix::unistd::{Gid, Uid, chown};

/// A pty whose master vmd holds for as long as the VM exists.
pub struct Pty {
    pub master: OwnedFd,
    /// `/dev/pts/N`.
    pub path: String,
}

impl Pty {
    /// Allocates a pty and puts its line in raw mode: without that, the
    /// line discipline would echo guest output back as keyboard input.
    pub fn open() -> io::Result<Pty> {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let path = ptsname_r(&master)?;
        let pty = Pty {
            master: master.into(),
            path,
        };
        let slave = pty.open_slave()?;
        let mut attrs = termios::tcgetattr(slave.as_fd())?;
        termios::cfmakeraw(&mut attrs);
        attrs.control_flags |= termios::ControlFlags::CLOCAL;
        let _ = termios::cfsetspeed(&mut attrs, termios::BaudRate::B115200);
        termios::tcsetattr(slave.as_fd(), SetArg::TCSANOW, &attrs)?;
        Ok(pty)
    }

    /// Opens the slave side (for the VM process to hold).
    pub fn open_slave(&self) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&self.path)
    }

    /// Gives the console to the VM's user: group = the owner group (0660),
    /// else the `tty` group (0620), else root's group (0600).
    pub fn give_to(&self, uid: u32, owner_group: Option<u32>) -> io::Result<()> {
        let (gid, mode) = match owner_group {
            Some(gid) => (gid, 0o660),
            None => match nix::unistd::Group::from_name("tty").ok().flatten() {
                Some(group) => (group.gid.as_raw(), 0o620),
                None => (0, 0o600),
            },
        };
        chown(
            self.path.as_str(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode))
    }

    /// Returns the console to root when the VM ends. The mode is narrowed
    /// before the owner changes back, so that at no moment may anyone but
    /// root and the VM's user open the line.
    pub fn release(&self) {
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600));
        let _ = chown(
            self.path.as_str(),
            Some(Uid::from_raw(0)),
            Some(Gid::from_raw(0)),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_released_console_belongs_to_root_alone() {
        testkit::needs!(root);
        let pty = Pty::open().expect("a pty");
        pty.give_to(1000, Some(1000)).unwrap();
        let meta = std::fs::metadata(&pty.path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (1000, 1000, 0o660)
        );
        pty.release();
        let meta = std::fs::metadata(&pty.path).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (0, 0, 0o600));
    }
}
