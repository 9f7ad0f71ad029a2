//! The VM's console: COM1 output kept in a replay ring and relayed to the
//! pty master; keystrokes from the pty fed into the UART.
//!
//! Output is never lost between the ring and an attached client: the ring
//! records every byte the guest wrote, and `pty_pos` says how many of them
//! have gone to the pty. When a client attaches, what the pty still holds is
//! flushed and the ring is replayed instead, so the client sees each byte
//! exactly once. A full pty never blocks a vCPU: the relay thread catches up
//! when the client reads, and bytes older than the ring are dropped. A
//! guest reboot starts a new VM process on the same pty: the run's history
//! goes to the next one with the count of bytes the pty has not taken yet
//! ([`ConsoleHistory`]), which the next relay writes first.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use proto::vmchannel::ConsoleHistory;
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
    relay: RelayState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RelayState {
    NotStarted,
    Running,
    /// Its last write to the pty is done.
    Stopped,
}

/// How long the end of a run waits for the relay's last write.
const LAST_FLUSH: Duration = Duration::from_millis(500);

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

    /// The oldest run of bytes not yet written to the pty, contiguous in
    /// the ring (those that fell out of the ring are skipped); empty only
    /// when nothing is pending. Once the ring has wrapped, its bytes lie in
    /// two slices: when the pty has taken all of the first, the run is the
    /// rest of the second, not the empty end of the first.
    fn pending(&mut self) -> &[u8] {
        let oldest = self.total - self.bytes.len() as u64;
        if self.pty_pos < oldest {
            self.pty_pos = oldest;
        }
        let skip = (self.pty_pos - oldest) as usize;
        let (a, b) = self.bytes.as_slices();
        if skip < a.len() {
            &a[skip..]
        } else {
            &b[skip - a.len()..]
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.bytes.iter().copied().collect()
    }

    /// Bytes in the ring the pty has not taken.
    fn unshown(&self) -> u64 {
        (self.total - self.pty_pos).min(self.bytes.len() as u64)
    }
}

/// Shared between the UART (producer of output, consumer of input), the
/// relay thread and the control loop.
pub struct Console {
    ring: Mutex<Ring>,
    /// Wakes the relay thread: output pending, input space, shutdown.
    wake: EventFd,
    /// Signalled when the relay thread has stopped.
    relay_stopped: Condvar,
}

impl Console {
    /// A console that carries on from the VM's last run: its output is
    /// the start of the history, and what of it the pty had not taken is
    /// written first.
    pub fn new(history: &ConsoleHistory) -> io::Result<Arc<Console>> {
        let mut ring = Ring {
            bytes: VecDeque::with_capacity(HISTORY),
            total: 0,
            pty_pos: 0,
            closing: false,
            relay: RelayState::NotStarted,
        };
        ring.push(&history.output);
        ring.pty_pos = ring.total - history.unshown.min(ring.total);
        Ok(Arc::new(Console {
            ring: Mutex::new(ring),
            wake: EventFd::new(EFD_NONBLOCK)?,
            relay_stopped: Condvar::new(),
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

    /// The recent output.
    pub fn history(&self) -> Vec<u8> {
        self.lock().snapshot()
    }

    /// The recent output and what of it the pty has not taken, for the
    /// VM's next run; after [`Console::close`], once the relay is done.
    pub fn tail(&self) -> ConsoleHistory {
        let ring = self.lock();
        ConsoleHistory {
            output: ring.snapshot(),
            unshown: ring.unshown(),
        }
    }

    /// A client attached through `slave`'s pty: drop what the pty holds and
    /// return everything recent instead.
    pub fn attach(&self, slave: &impl AsFd) -> Vec<u8> {
        let mut ring = self.lock();
        let _ = nix::sys::termios::tcflush(slave, nix::sys::termios::FlushArg::TCIFLUSH);
        ring.pty_pos = ring.total;
        ring.snapshot()
    }

    /// Stops the relay thread and waits (briefly) for its last write to
    /// the pty, so that [`Console::tail`] says what the pty took.
    pub fn close(&self) {
        let mut ring = self.lock();
        ring.closing = true;
        self.notify();
        let deadline = std::time::Instant::now() + LAST_FLUSH;
        while ring.relay == RelayState::Running {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            ring = self
                .relay_stopped
                .wait_timeout(ring, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Writes pending output to the pty without blocking. Returns true if
    /// output remains (the pty is full).
    fn flush_to(&self, master: &mut File) -> bool {
        let mut ring = self.lock();
        loop {
            let run = ring.pending();
            if run.is_empty() {
                return false;
            }
            match master.write(run) {
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
    {
        let mut ring = console.lock();
        if ring.closing {
            return;
        }
        ring.relay = RelayState::Running;
    }
    relay_until_closed(&console, &mut master, input);
    let _ = console.flush_to(&mut master);
    console.lock().relay = RelayState::Stopped;
    console.relay_stopped.notify_all();
}

fn relay_until_closed(console: &Console, master: &mut File, input: Arc<Mutex<dyn ConsoleInput>>) {
    set_nonblocking(master);
    let mut buf = [0u8; 256];
    loop {
        if console.lock().closing {
            return;
        }
        let output_pending = console.flush_to(master);
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
        let console = Console::new(&ConsoleHistory {
            output: b"old".to_vec(),
            unshown: 0,
        })
        .unwrap();
        let big = vec![b'x'; HISTORY + 10];
        console.output(&big);
        console.output(b"end");
        let h = console.history();
        assert_eq!(h.len(), HISTORY);
        assert!(h.ends_with(b"xxend"));
    }

    /// Everything pending, run after run, as the relay writes it.
    fn drain_pending(ring: &mut Ring) -> Vec<u8> {
        let mut sent = Vec::new();
        loop {
            let run = ring.pending().to_vec();
            if run.is_empty() {
                return sent;
            }
            ring.pty_pos += run.len() as u64;
            sent.extend(run);
        }
    }

    #[test]
    fn pending_skips_what_fell_out() {
        let console = Console::new(&Default::default()).unwrap();
        console.output(b"abc");
        {
            let mut ring = console.lock();
            assert_eq!(ring.pending(), b"abc");
            ring.pty_pos = 2;
            assert_eq!(ring.pending(), b"c");
        }
        console.output(&vec![b'y'; HISTORY]);
        let mut ring = console.lock();
        assert_eq!(drain_pending(&mut ring), vec![b'y'; HISTORY]);
    }

    /// Once the ring wraps, output goes on reaching the pty: it stalled
    /// for good when the pty had taken exactly the first of the ring's two
    /// slices (seen after guest reboots, whose run starts with the last
    /// run's history).
    #[test]
    fn output_keeps_flowing_after_the_ring_wraps() {
        let console = Console::new(&ConsoleHistory {
            output: vec![b'h'; HISTORY - 100],
            unshown: 0,
        })
        .unwrap();
        let mut expected = Vec::new();
        let mut sent = Vec::new();
        for round in 0..5000u32 {
            let line = format!("line {round}\r\n");
            console.output(line.as_bytes());
            expected.extend_from_slice(line.as_bytes());
            sent.extend(drain_pending(&mut console.lock()));
        }
        assert_eq!(sent, expected);
    }

    struct NoInput;
    impl ConsoleInput for NoInput {
        fn space(&mut self) -> usize {
            0
        }
        fn push(&mut self, _: &[u8]) {}
    }

    /// Runs the relay into a pipe, as onto a pty no client reads.
    fn relay_into_pipe(console: &Arc<Console>) -> (File, std::thread::JoinHandle<()>) {
        let (read, write) = nix::unistd::pipe().unwrap();
        let console = console.clone();
        let input: Arc<Mutex<dyn ConsoleInput>> = Arc::new(Mutex::new(NoInput));
        let running = console.clone();
        let relay = std::thread::spawn(move || relay(console, File::from(write), input));
        // As in a VM, the relay runs before the end of the run comes.
        while running.lock().relay == RelayState::NotStarted {
            std::thread::sleep(Duration::from_millis(1));
        }
        (File::from(read), relay)
    }

    fn read_available(pipe: &mut File) -> Vec<u8> {
        set_nonblocking(pipe);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// A reboot's next run writes first what the last run's pty did not
    /// take, and nothing the pty already had.
    #[test]
    fn the_next_run_writes_what_the_pty_had_not_taken() {
        let console = Console::new(&ConsoleHistory {
            output: b"shown, then unshown".to_vec(),
            unshown: 7,
        })
        .unwrap();
        let (mut pipe, relay) = relay_into_pipe(&console);
        console.output(b" and new");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < 15 && std::time::Instant::now() < deadline {
            got.extend(read_available(&mut pipe));
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(got, b"unshown and new");
        console.close();
        relay.join().unwrap();
        assert_eq!(console.tail().unshown, 0);
    }

    /// The end of a run waits for the relay's last write, and its tail
    /// counts what a full pty left over.
    #[test]
    fn the_tail_counts_what_a_full_pty_left() {
        let console = Console::new(&Default::default()).unwrap();
        let (mut pipe, relay) = relay_into_pipe(&console);
        // A pipe of one page stands for a pty no client reads.
        // SAFETY: F_SETPIPE_SZ on a pipe this test owns.
        let page = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
        assert_eq!(page, 4096);
        let mut written = Vec::new();
        for round in 0..2000u32 {
            let line = format!("line {round}\n");
            console.output(line.as_bytes());
            written.extend_from_slice(line.as_bytes());
        }
        console.close();
        relay.join().unwrap();
        let tail = console.tail();
        let shown = read_available(&mut pipe);
        assert!(!shown.is_empty() && shown.len() <= 4096, "{}", shown.len());
        assert!(written.starts_with(&shown));
        assert_eq!(tail.unshown as usize, written.len() - shown.len());
        assert_eq!(tail.output, written);
    }
}
