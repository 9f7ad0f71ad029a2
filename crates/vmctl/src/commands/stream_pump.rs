//! Moving a VM's state stream between vmd's socket and stdout (`send`,
//! [`Pump`]) or stdin (`receive`, [`Feeder`]) at the speed of the
//! descriptors: through a pipe with splice(2), so the bytes never pass
//! through vmctl's memory; with read(2) and write(2) when one side cannot
//! splice (a terminal, say). And the socket buffers both ask for.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Bytes moved per call.
const CHUNK: usize = 1 << 20;

/// Space the kernel may buffer in the writing end of a stream's socket
/// pair, so the writer is not woken for every few pages.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// splice(2) of up to `len` bytes, one side a pipe.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> nix::Result<usize> {
    splice_with(from, to, len, libc::SPLICE_F_MOVE)
}

fn splice_with(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    len: usize,
    flags: libc::c_uint,
) -> nix::Result<usize> {
    // SAFETY: splice between two descriptors we hold, no offsets.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    usize::try_from(n).map_err(|_| nix::Error::last())
}

/// A pipe that holds a chunk, or nothing when the system has no pipe to
/// spare.
fn chunk_pipe() -> Option<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe().ok()?;
    // A pipe as large as a chunk moves a chunk per call; the default is
    // 64 KiB. Failing that, it still works.
    // SAFETY: F_SETPIPE_SZ on a pipe we own.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    Some((read, write))
}

enum Mode {
    Splice { read: OwnedFd, write: OwnedFd },
    Copy(Vec<u8>),
}

pub struct Pump {
    mode: Mode,
}

/// Which side failed.
#[derive(Debug)]
pub enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

impl Pump {
    pub fn new() -> Pump {
        let mode = match chunk_pipe() {
            Some((read, write)) => Mode::Splice { read, write },
            None => Mode::Copy(vec![0; CHUNK]),
        };
        Pump { mode }
    }

    /// Moves what `from` has now (at most a chunk) to `to`, all of it
    /// before returning. Returns the bytes moved: 0 at the end of
    /// `from`'s data. A `from` that would block gives `WouldBlock`.
    pub fn transfer(
        &mut self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
    ) -> Result<usize, PumpError> {
        loop {
            match &mut self.mode {
                Mode::Splice { read, write } => {
                    match splice(from, write.as_fd(), CHUNK) {
                        Ok(0) => return Ok(0),
                        Ok(n) => {
                            drain(read.as_fd(), to, n).map_err(PumpError::Write)?;
                            return Ok(n);
                        }
                        Err(nix::Error::EINTR) => {}
                        // This descriptor cannot splice; the pipe is empty
                        // (every splice into it is drained at once).
                        Err(nix::Error::EINVAL) => self.mode = Mode::Copy(vec![0; CHUNK]),
                        Err(e) => return Err(PumpError::Read(e.into())),
                    }
                }
                Mode::Copy(buf) => {
                    return match nix::unistd::read(from, buf) {
                        Ok(n) => {
                            write_all(to, &buf[..n]).map_err(PumpError::Write)?;
                            Ok(n)
                        }
                        Err(nix::Error::EINTR) => continue,
                        Err(e) => Err(PumpError::Read(e.into())),
                    };
                }
            }
        }
    }
}

/// Moves `n` bytes from the pipe to `to`: by splice, or through memory
/// for a `to` that cannot take a splice.
fn drain(pipe: BorrowedFd<'_>, to: BorrowedFd<'_>, mut n: usize) -> io::Result<()> {
    while n > 0 {
        match splice(pipe, to, n) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(moved) => n -= moved,
            Err(nix::Error::EINTR) => {}
            Err(nix::Error::EINVAL) => {
                let mut buf = vec![0u8; n];
                let mut got = 0;
                while got < n {
                    match nix::unistd::read(pipe, &mut buf[got..]) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(r) => got += r,
                        Err(nix::Error::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                return write_all(to, &buf);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Feeds stdin to the receiving VM's non-blocking socket in two steps a
/// poll loop drives, so that vmctl keeps listening to vmd while the
/// socket is full: [`Feeder::fill`] takes a chunk of the input when
/// nothing is held, [`Feeder::flush`] passes on as much of it as the
/// socket takes now. The chunk waits in a pipe (spliced in and out: a file
/// on stdin goes to the socket without a copy in vmctl), or in memory
/// when stdin cannot splice.
pub struct Feeder {
    mode: Mode,
    /// Bytes taken from the input and not yet passed on.
    held: usize,
    /// Where in the buffer they start ([`Mode::Copy`]).
    at: usize,
}

impl Feeder {
    pub fn new() -> Feeder {
        let mode = match chunk_pipe() {
            Some((read, write)) => Mode::Splice { read, write },
            None => Mode::Copy(vec![0; CHUNK]),
        };
        Feeder {
            mode,
            held: 0,
            at: 0,
        }
    }

    /// Whether everything taken went out.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Takes what `from` has now, at most a chunk, when nothing is held.
    /// Returns the bytes taken: 0 at the end of the input.
    pub fn fill(&mut self, from: BorrowedFd<'_>) -> io::Result<usize> {
        assert!(self.is_empty(), "fill while holding data");
        loop {
            let n = match &mut self.mode {
                Mode::Splice { write, .. } => match splice(from, write.as_fd(), CHUNK) {
                    Ok(n) => n,
                    // The input cannot splice; the pipe is empty.
                    Err(nix::Error::EINVAL) => {
                        self.mode = Mode::Copy(vec![0; CHUNK]);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                },
                Mode::Copy(buf) => nix::unistd::read(from, buf)?,
            };
            (self.held, self.at) = (n, 0);
            return Ok(n);
        }
    }

    /// Passes held bytes to the non-blocking `to`, as many as it takes
    /// now (none when it is full).
    pub fn flush(&mut self, to: BorrowedFd<'_>) -> io::Result<()> {
        let n = match &self.mode {
            Mode::Splice { read, .. } => splice_with(
                read.as_fd(),
                to,
                self.held,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            ),
            Mode::Copy(buf) => nix::unistd::write(to, &buf[self.at..self.at + self.held]),
        };
        match n {
            Ok(n) => {
                self.held -= n;
                self.at += n;
                Ok(())
            }
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn write_all(to: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(to, data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Lets the writing end of a socket pair (vmd's for a send, vmctl's for a
/// receive) buffer [`SOCKET_BUFFER`] bytes (as root, beyond the system's
/// default limit; otherwise up to it).
pub fn widen_send_buffer(writer: &impl AsFd) {
    let size = SOCKET_BUFFER as libc::c_int;
    for option in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: setsockopt with an int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                writer.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn pump_all(mut pump: Pump, from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> usize {
        let mut total = 0;
        loop {
            match pump.transfer(from, to).unwrap() {
                0 => return total,
                n => total += n,
            }
        }
    }

    #[test]
    fn a_socket_into_a_file_and_a_file_into_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = {
            let data = data.clone();
            std::thread::spawn(move || a.write_all(&data).unwrap())
        };
        let path = dir.path().join("out");
        let file = std::fs::File::create(&path).unwrap();
        assert_eq!(pump_all(Pump::new(), b.as_fd(), file.as_fd()), data.len());
        writer.join().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);

        let (c, mut d) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            d.read_to_end(&mut got).unwrap();
            got
        });
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(pump_all(Pump::new(), file.as_fd(), c.as_fd()), data.len());
        drop(c);
        assert_eq!(reader.join().unwrap(), data);
    }

    /// Feeds `from` into a non-blocking socket the way `receive` does;
    /// returns what came out of the socket.
    fn feed_all(from: BorrowedFd<'_>) -> Vec<u8> {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let mut feeder = Feeder::new();
        loop {
            if feeder.is_empty() {
                if feeder.fill(from).unwrap() == 0 {
                    break;
                }
            } else {
                let mut fds = [nix::poll::PollFd::new(
                    a.as_fd(),
                    nix::poll::PollFlags::POLLOUT,
                )];
                nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).unwrap();
                feeder.flush(a.as_fd()).unwrap();
            }
        }
        drop(a);
        reader.join().unwrap()
    }

    #[test]
    fn a_file_is_fed_to_a_socket_that_is_often_full() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        let path = dir.path().join("in");
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(feed_all(file.as_fd()), data);
    }

    #[test]
    fn input_that_cannot_splice_is_fed_through_memory() {
        let pty = nix::pty::openpty(None, None).unwrap();
        // Raw mode: the bytes as written, and no line to wait for.
        let mut t = nix::sys::termios::tcgetattr(pty.slave.as_fd()).unwrap();
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(pty.slave.as_fd(), nix::sys::termios::SetArg::TCSANOW, &t)
            .unwrap();
        nix::unistd::write(pty.master.as_fd(), b"hello").unwrap();
        let mut feeder = Feeder::new();
        assert_eq!(feeder.fill(pty.slave.as_fd()).unwrap(), 5);
        let (a, mut b) = UnixStream::pair().unwrap();
        feeder.flush(a.as_fd()).unwrap();
        assert!(feeder.is_empty());
        let mut got = [0u8; 5];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
    }

    #[test]
    fn a_side_that_cannot_splice_is_copied() {
        // A pseudo-terminal takes no splice.
        let pty = nix::pty::openpty(None, None).unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"hello").unwrap();
        drop(a);
        assert_eq!(pump_all(Pump::new(), b.as_fd(), pty.slave.as_fd()), 5);
        let mut got = [0u8; 5];
        nix::unistd::read(pty.master.as_fd(), &mut got).unwrap();
        assert_eq!(&got, b"hello");
    }
}
