//! The VM's console tty as the client holds it: opened exclusively, raw 8N1
//! with CLOCAL at 115200 bps (docs/lifecycle.md, "The console"), non-blocking so the
//! relay never stalls on a guest that does not read.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::sys::stat::Mode;
use nix::sys::termios::{
    BaudRate, ControlFlags, SetArg, cfmakeraw, cfsetspeed, tcgetattr, tcsetattr,
};

nix::ioctl_none_bad!(set_exclusive, libc::TIOCEXCL);
nix::ioctl_none_bad!(clear_exclusive, libc::TIOCNXCL);
nix::ioctl_write_ptr_bad!(modem_bits_clear, libc::TIOCMBIC, libc::c_int);
nix::ioctl_write_ptr_bad!(modem_bits_set, libc::TIOCMBIS, libc::c_int);

/// The console line speed cu is asked for.
pub const CONSOLE_SPEED: u32 = 115_200;

/// An open console tty; exclusive mode is dropped again on close, so the
/// next client (the VM keeps the pty) can open it.
pub struct Line {
    fd: OwnedFd,
}

impl Line {
    /// Opens and configures the tty; the error is the errno to report as
    /// `failed to open the console: <strerror>`.
    pub fn open(path: &str) -> Result<Line, nix::Error> {
        let fd = open(
            path,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: TIOCEXCL takes no argument and only sets a flag on the
        // tty behind our own descriptor.
        unsafe { set_exclusive(fd.as_raw_fd()) }?;
        let line = Line { fd };
        let mut termios = tcgetattr(&line.fd)?;
        cfmakeraw(&mut termios);
        termios.control_flags &= !(ControlFlags::PARENB | ControlFlags::CSTOPB);
        termios.control_flags |= ControlFlags::CS8 | ControlFlags::CLOCAL | ControlFlags::CREAD;
        cfsetspeed(&mut termios, BaudRate::B115200)?;
        tcsetattr(&line.fd, SetArg::TCSANOW, &termios)?;
        Ok(line)
    }

    /// Changes the line speed (`~S`); meaningless on a pty but harmless.
    pub fn set_speed(&self, bits_per_second: u32) -> Result<(), nix::Error> {
        let rate = baud_rate(bits_per_second).ok_or(nix::Error::EINVAL)?;
        let mut termios = tcgetattr(&self.fd)?;
        cfsetspeed(&mut termios, rate)?;
        tcsetattr(&self.fd, SetArg::TCSANOW, &termios)
    }

    /// Drops DTR for a second (`~D`). A pty has no modem lines, so there
    /// the request fails at once and nothing happens.
    pub fn pulse_dtr(&self) {
        let dtr: libc::c_int = libc::TIOCM_DTR;
        // SAFETY: TIOCMBIC/TIOCMBIS read one int from the pointer we pass.
        if unsafe { modem_bits_clear(self.fd.as_raw_fd(), &dtr) }.is_ok() {
            std::thread::sleep(Duration::from_secs(1));
            // SAFETY: as above.
            let _ = unsafe { modem_bits_set(self.fd.as_raw_fd(), &dtr) };
        }
    }

    /// Switches between non-blocking (relaying) and blocking (while a
    /// local program owns the line, `~C`).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        let flags = OFlag::from_bits_truncate(fcntl(&self.fd, FcntlArg::F_GETFL)?);
        let flags = if nonblocking {
            flags | OFlag::O_NONBLOCK
        } else {
            flags & !OFlag::O_NONBLOCK
        };
        fcntl(&self.fd, FcntlArg::F_SETFL(flags))?;
        Ok(())
    }

    /// A second descriptor for the line, for a local program's stdio.
    pub fn try_clone(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

impl AsFd for Line {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        // SAFETY: TIOCNXCL takes no argument.
        let _ = unsafe { clear_exclusive(self.fd.as_raw_fd()) };
    }
}

/// The termios rate for a speed in bits per second.
pub fn baud_rate(bits_per_second: u32) -> Option<BaudRate> {
    use BaudRate::*;
    Some(match bits_per_second {
        50 => B50,
        75 => B75,
        110 => B110,
        134 => B134,
        150 => B150,
        200 => B200,
        300 => B300,
        600 => B600,
        1200 => B1200,
        1800 => B1800,
        2400 => B2400,
        4800 => B4800,
        9600 => B9600,
        19200 => B19200,
        38400 => B38400,
        57600 => B57600,
        115200 => B115200,
        230400 => B230400,
        460800 => B460800,
        500000 => B500000,
        576000 => B576000,
        921600 => B921600,
        1000000 => B1000000,
        1152000 => B1152000,
        1500000 => B1500000,
        2000000 => B2000000,
        2500000 => B2500000,
        3000000 => B3000000,
        3500000 => B3500000,
        4000000 => B4000000,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::pty::openpty;
    use nix::sys::termios::{InputFlags, LocalFlags, OutputFlags, cfgetospeed};

    #[test]
    fn opens_raw_exclusive_and_releases_exclusivity() {
        let pty = openpty(None, None).unwrap();
        let path = nix::unistd::ttyname(&pty.slave).unwrap();
        let path = path.to_str().unwrap();
        {
            let line = Line::open(path).unwrap();
            assert_eq!(exclusive(&pty.slave), 1);
            let t = tcgetattr(&line).unwrap();
            assert!(!t.local_flags.contains(LocalFlags::ECHO));
            assert!(!t.local_flags.contains(LocalFlags::ICANON));
            assert!(!t.local_flags.contains(LocalFlags::ISIG));
            assert!(!t.output_flags.contains(OutputFlags::OPOST));
            assert!(!t.input_flags.contains(InputFlags::ICRNL));
            assert!(
                t.control_flags
                    .contains(ControlFlags::CLOCAL | ControlFlags::CS8)
            );
            assert_eq!(cfgetospeed(&t), BaudRate::B115200);
            line.set_speed(9600).unwrap();
            assert_eq!(cfgetospeed(&tcgetattr(&line).unwrap()), BaudRate::B9600);
            assert_eq!(line.set_speed(12345), Err(nix::Error::EINVAL));
            line.pulse_dtr();
        }
        // Exclusivity ended with the line, so the next (unprivileged)
        // client is not refused.
        assert_eq!(exclusive(&pty.slave), 0);
        let again = Line::open(path).unwrap();
        assert_eq!(exclusive(&pty.slave), 1);
        drop(again);
        assert_eq!(exclusive(&pty.slave), 0);
    }

    nix::ioctl_read_bad!(get_exclusive, libc::TIOCGEXCL, libc::c_int);

    fn exclusive(fd: &OwnedFd) -> libc::c_int {
        let mut value = -1;
        // SAFETY: TIOCGEXCL writes one int.
        unsafe { get_exclusive(fd.as_raw_fd(), &mut value) }.unwrap();
        value
    }

    #[test]
    fn missing_tty() {
        assert_eq!(
            Line::open("/nonexistent/pts/9").err(),
            Some(nix::Error::ENOENT)
        );
    }

    #[test]
    fn speeds() {
        assert_eq!(baud_rate(115200), Some(BaudRate::B115200));
        assert_eq!(baud_rate(9600), Some(BaudRate::B9600));
        assert_eq!(baud_rate(0), None);
        assert_eq!(baud_rate(100), None);
    }
}
