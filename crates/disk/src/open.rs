//! Opening a file by a name someone else chose, without blocking on it and
//! without taking something that is not an image for one.
//!
//! A name can lead to a FIFO (an open for reading waits for a writer, a
//! read waits for data), a socket, a terminal or another device. vmd opens
//! such names on its single core thread, so every open is non-blocking,
//! and what was opened is checked through the descriptor (`fstat`), not
//! by looking the name up again: the file that was checked is the file
//! that is used. Only then is `O_NONBLOCK` taken off, for the I/O that
//! follows.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What kind of file a name may lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A regular file only (a kernel, an initrd, an ISO image).
    RegularFile,
    /// A regular file or a block device (a disk image).
    Image,
}

/// Opens `path` read-only or read-write as [`Expect`] says, never
/// blocking, with close-on-exec and without becoming the controlling
/// terminal, and checks what it opened.
pub fn open_checked(path: &Path, write: bool, expect: Expect) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    check_opened(&file, expect)?;
    Ok(file)
}

/// Checks an open file against `expect` and makes its I/O blocking again.
/// For files opened elsewhere (by a helper with a user's credentials) as
/// well as by [`open_checked`].
pub fn check_opened(file: &File, expect: Expect) -> io::Result<()> {
    let kind = file.metadata()?.file_type();
    let acceptable = kind.is_file() || (expect == Expect::Image && kind.is_block_device());
    if !acceptable {
        return Err(not_acceptable(kind, expect));
    }
    // SAFETY: F_GETFL and F_SETFL on a descriptor `file` owns take no
    // pointers.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let set = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The error for a file of the wrong kind: what it is, in words.
fn not_acceptable(kind: std::fs::FileType, expect: Expect) -> io::Error {
    let what = if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    };
    let wanted = match expect {
        Expect::RegularFile => "a regular file",
        Expect::Image => "a regular file or a block device",
    };
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what}, not {wanted}"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn fifos_sockets_devices_and_directories_are_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("disk-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let socket = dir.join("socket");
        let _ = std::fs::remove_file(&socket);
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let started = Instant::now();
        for (path, expected) in [
            (
                fifo.as_path(),
                "a FIFO, not a regular file or a block device",
            ),
            (
                Path::new("/dev/null"),
                "a character device, not a regular file or a block device",
            ),
        ] {
            let err = open_checked(path, false, Expect::Image).unwrap_err();
            assert_eq!(err.to_string(), expected, "{}", path.display());
        }
        // Nobody writes to the FIFO: without O_NONBLOCK the open above
        // would still be waiting.
        assert!(started.elapsed() < Duration::from_secs(5));
        // A socket cannot be opened at all.
        assert_eq!(
            open_checked(&socket, false, Expect::Image)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENXIO)
        );
        assert_eq!(
            open_checked(&dir, false, Expect::RegularFile)
                .unwrap_err()
                .to_string(),
            "a directory, not a regular file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_regular_file_opens_blocking() {
        let path = std::env::temp_dir().join(format!("disk-open-file-{}", std::process::id()));
        std::fs::write(&path, b"data").unwrap();
        let file = open_checked(&path, true, Expect::RegularFile).unwrap();
        // SAFETY: F_GETFL on a descriptor the test owns.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDWR);
        let _ = std::fs::remove_file(&path);
    }
}
