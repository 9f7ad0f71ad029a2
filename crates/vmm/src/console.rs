//! The VM's console: COM1 output kept in a replay ring and relayed to the
//! pty master; keystrokes from the pty fed into the UART.
//!
//! Output is never lost between the ring and an attached client: the ring
//! records every byte the guest wrote, and `pty_pos` says how many of them
//! have gone to the pty. When a client attaches, what the pty still holds is
//! flushed and the ring is replayed instead, so the client sees each byte
//! exactly once. A full pty never blocks a vCPU: the relay thread catches up
//! when the client reads, and bytes older than the ring are dropped.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Console history kept for replay (vmctl(8), console: at least 64 KiB).
pub const HISTORY: usize = 64 * 1024;

struct Ring {
    bytes: VecDeque<u8>,
    /// Bytes the guest ever wrote.
    total: u64,
    /// Bytes of `total` already written to the pty.
    pty_pos: u64,
    /// The relay thread should stop.
    closing: bool,
}

impl Ring {
    fn push(&mut self, data: &[u8]) {
        if data.len() >= HISTORY {
            self.bytes.clear();
            self.bytes.extend(&data[data.len() - HISTORY..]);
        } else {
            let excess = (self.bytes.len() + data.len()).saturating_sub(HISTORY);
            self.bytes.drain(..excess);
            self.bytes.extend(data);
        }
        self.total += data.len() as u64;
    }

    /// Bytes not yet written to the pty, oldest first (those that fell out
    /// of the ring are skipped).
    fn pending(&mut self) -> (&[u8], &[u8]) {
        let oldest = self.total - self.bytes.len() as u64;
        if self.pty_pos < oldest {
            self.pty_pos = oldest;
        }
        let skip = (self.pty_pos - oldest) as usize;
        let (a, b) = self.bytes.as_slices();
        if skip <= a.len() {
            (&a[skip..], b)
        } else {
            (&b[skip - a.len()..], &[])
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.bytes.iter().copied().collect()
    }
}

/// Shared between the UART (producer of output, consumer of input), the
/// relay thread and the control loop.
pub struct Console {
    ring: Mutex<Ring>,
    /// Wakes the relay thread: output pending, input space, shutdown.
    wake: EventFd,
}

impl Console {
    pub fn new(history: &[u8]) -> io::Result<Arc<Console>> {
        let mut ring = Ring {
            bytes: VecDeque::with_capacity(HISTORY),
            total: 0,
            pty_pos: 0,
            closing: false,
        };
        ring.push(history);
        // History from a previous run was already shown on the pty.
        ring.pty_pos = ring.total;
        Ok(Arc::new(Console {
            ring: Mutex::new(ring),
            wake: EventFd::new(EFD_NONBLOCK)?,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Guest output from the UART.
    pub fn output(&self, data: &[u8]) {
        let mut ring = self.lock();
        let was_idle = ring.pty_pos == ring.total;
        ring.push(data);
        drop(ring);
        if was_idle {
            self.notify();
        }
    }

    /// Asks the relay thread to look again (e.g. the UART has room).
    pub fn notify(&self) {
        let _ = self.wake.write(1);
    }

    /// The recent output, for the end of this run.
    pub fn history(&self) -> Vec<u8> {
        self.lock().snapshot()
    }

    /// A client attached through `slave`'s pty: drop what the pty holds and
    /// return everything recent instead.
    pub fn attach(&self, slave: &impl AsFd) -> Vec<u8> {
        let mut ring = self.lock();
        let _ = nix::sys::termios::tcflush(slave, nix::sys::termios::FlushArg::TCIFLUSH);
        ring.pty_pos = ring.total;
        ring.snapshot()
    }

    /// Stops the relay thread.
    pub fn close(&self) {
        self.lock().closing = true;
        self.notify();
    }

    /// Writes pending output to the pty without blocking. Returns true if
    /// output remains (the pty is full).
    fn flush_to(&self, master: &mut File) -> bool {
        let mut ring = self.lock();
        loop {
            let (first, _) = ring.pending();
            if first.is_empty() {
                return false;
            }
            match master.write(first) {
                Ok(0) => return true,
                Ok(n) => ring.pty_pos += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Full (EAGAIN) or no reader: keep it for later.
                Err(_) => return true,
            }
        }
    }
}

/// Where the relay thread delivers keystrokes: the UART's receive FIFO.
pub trait ConsoleInput: Send {
    /// Room left in the receive FIFO.
    fn space(&mut self) -> usize;
    /// Queue bytes for the guest (at most `space()` of them).
    fn push(&mut self, bytes: &[u8]);
}

/// Relays between the pty master and the UART until [`Console::close`].
pub fn relay(console: Arc<Console>, mut master: File, input: Arc<Mutex<dyn ConsoleInput>>) {
    set_nonblocking(&master);
    let mut buf = [0u8; 256];
    loop {
        if console.lock().closing {
            let _ = console.flush_to(&mut master);
            return;
        }
        let output_pending = console.flush_to(&mut master);
        let space = input.lock().unwrap_or_else(|e| e.into_inner()).space();

        let mut master_events = PollFlags::empty();
        if space > 0 {
            master_events |= PollFlags::POLLIN;
        }
        if output_pending {
            master_events |= PollFlags::POLLOUT;
        }
        // SAFETY: the eventfd lives in `console`, which outlives the poll.
        let wake_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(console.wake.as_raw_fd()) };
        let mut fds = [
            PollFd::new(wake_fd, PollFlags::POLLIN),
            PollFd::new(master.as_fd(), master_events),
        ];
        // A timeout guards against a missed wake-up; it costs nothing idle.
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let wake = fds[0].revents().unwrap_or(PollFlags::empty());
        let pty = fds[1].revents().unwrap_or(PollFlags::empty());
        if wake.contains(PollFlags::POLLIN) {
            let _ = console.wake.read();
        }
        if pty.contains(PollFlags::POLLIN) && space > 0 {
            let want = space.min(buf.len());
            match master.read(&mut buf[..want]) {
                Ok(n) if n > 0 => input
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(&buf[..n]),
                _ => {}
            }
        } else if pty.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) && !output_pending {
            // No reader at all: avoid spinning on a hung-up master.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

fn set_nonblocking(file: &File) {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags >= 0 {
        // SAFETY: F_SETFL on a descriptor we own, changing only O_NONBLOCK.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_most_recent_bytes() {
        let console = Console::new(b"old").unwrap();
        let big = vec![b'x'; HISTORY + 10];
        console.output(&big);
        console.output(b"end");
        let h = console.history();
        assert_eq!(h.len(), HISTORY);
        assert!(h.ends_with(b"xxend"));
    }

    #[test]
    fn pending_skips_what_fell_out() {
        let console = Console::new(b"").unwrap();
        console.output(b"abc");
        {
            let mut ring = console.lock();
            let (a, b) = ring.pending();
            assert_eq!([a, b].concat(), b"abc");
            ring.pty_pos = 2;
            let (a, b) = ring.pending();
            assert_eq!([a, b].concat(), b"c");
        }
        console.output(&vec![b'y'; HISTORY]);
        let mut ring = console.lock();
        let (a, b) = ring.pending();
        assert_eq!(a.len() + b.len(), HISTORY);
    }
}
