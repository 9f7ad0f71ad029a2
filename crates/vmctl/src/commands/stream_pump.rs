//! Moving a VM's state stream between vmd's socket and stdin or stdout
//! (`send`, `receive`) at the speed of the descriptors: through a pipe
//! with splice(2), so the bytes never pass through vmctl's memory; with
//! read(2) and write(2) when one side cannot splice (a terminal, say).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Bytes moved per call.
const CHUNK: usize = 1 << 20;

/// Space the kernel may buffer in vmd's end of the socket pair, so the
/// side writing the stream is not woken for every few pages.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// splice(2) of up to `len` bytes, one side a pipe.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> nix::Result<usize> {
    // SAFETY: splice between two descriptors we hold, no offsets.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE,
        )
    };
    usize::try_from(n).map_err(|_| nix::Error::last())
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
        let mode = match nix::unistd::pipe() {
            Ok((read, write)) => {
                // A pipe as large as a chunk moves a chunk per call; the
                // default is 64 KiB. Failing that, it still works.
                // SAFETY: F_SETPIPE_SZ on a pipe we own.
                unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
                Mode::Splice { read, write }
            }
            Err(_) => Mode::Copy(vec![0; CHUNK]),
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

/// Lets vmd's end of the socket pair buffer [`SOCKET_BUFFER`] bytes (as
/// root, beyond the system's default limit; otherwise up to it).
pub fn widen_send_buffer(vmd_end: &impl AsFd) {
    let size = SOCKET_BUFFER as libc::c_int;
    for option in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: setsockopt with an int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                vmd_end.as_fd().as_raw_fd(),
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
