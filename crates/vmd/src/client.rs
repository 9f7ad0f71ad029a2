//! A connected vmctl client: who it is, and the queue of replies its own
//! writer thread sends, so that the daemon's core never waits on a client
//! (vmd(8), "Control socket"). Requests in flight and queued reply bytes
//! are bounded per client.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use proto::control::Response;
use proto::frame;

/// How many requests of one client may wait for the core at a time; its
/// reader reads no more until the core has handled one. With the cap on
/// connections this bounds what any user can queue.
const REQUESTS_IN_FLIGHT: usize = 4;
/// How many encoded bytes of replies may wait for one client. A client
/// that lets more pile up does not read them and is dropped.
const REPLY_BYTES_QUEUED: usize = 1024 * 1024;

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// A connected client and its credentials.
///
/// Replies do not go out on the core's thread: [`Client::send`] only
/// queues them, and a writer thread of the client's own writes them, so a
/// client that does not read can never stall the daemon; see
/// vmd(8), "Control socket".
#[derive(Debug)]
pub struct Client {
    pub id: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    sock: Arc<OwnedFd>,
    outbox: Arc<Outbox>,
}

/// Replies waiting for a client's writer thread.
#[derive(Debug, Default)]
struct Outbox {
    state: Mutex<OutboxState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct OutboxState {
    packets: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Close once everything queued has gone out.
    closing: bool,
    /// The connection is over: nothing more is queued or written.
    gone: bool,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Client {
    pub fn new(sock: OwnedFd, uid: u32, gid: u32, pid: i32) -> io::Result<Arc<Client>> {
        let client = Arc::new(Client {
            id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            uid,
            gid,
            pid,
            sock: Arc::new(sock),
            outbox: Arc::default(),
        });
        let sock = client.sock.clone();
        let outbox = client.outbox.clone();
        let id = client.id;
        std::thread::Builder::new()
            .name("client-writer".into())
            .spawn(move || write_replies(id, &sock, &outbox))?;
        Ok(client)
    }

    /// Queues a reply; false when the client is gone. A client whose
    /// queued replies exceed the bound is dropped rather than waited for.
    pub fn send(&self, response: &Response) -> bool {
        let bytes = match postcard::to_stdvec(response) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!("control: client {}: cannot encode a reply: {e}", self.id);
                return false;
            }
        };
        let mut state = self.outbox.lock();
        if state.gone || state.closing {
            return false;
        }
        if state.bytes + bytes.len() > REPLY_BYTES_QUEUED {
            tracing::info!(
                "control: dropping client {} (uid {}): it does not read its replies",
                self.id,
                self.uid
            );
            state.gone = true;
            state.packets.clear();
            drop(state);
            self.outbox.changed.notify_all();
            self.shut_down();
            return false;
        }
        state.bytes += bytes.len();
        state.packets.push_back(bytes);
        drop(state);
        self.outbox.changed.notify_all();
        true
    }

    /// Ends the connection once the replies already queued have gone out;
    /// the reader thread then reports the client gone.
    pub fn close(&self) {
        self.outbox.lock().closing = true;
        self.outbox.changed.notify_all();
    }

    /// The connection, for its reader.
    pub fn sock(&self) -> &OwnedFd {
        &self.sock
    }

    /// Ends the connection now, whatever is queued.
    pub fn shut_down(&self) {
        shut_down(&self.sock);
    }
}

fn shut_down(sock: &OwnedFd) {
    let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

/// The writer thread of one client: sends what the core queued, in order,
/// and ends the connection when the core closes it or a reply cannot go
/// out within the socket's send timeout (control.rs sets it).
fn write_replies(id: u64, sock: &OwnedFd, outbox: &Outbox) {
    loop {
        let mut state = outbox.lock();
        while state.packets.is_empty() && !state.closing && !state.gone {
            state = outbox
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        if state.gone {
            return;
        }
        let Some(packet) = state.packets.pop_front() else {
            // Closing with nothing left to send.
            state.gone = true;
            drop(state);
            shut_down(sock);
            return;
        };
        state.bytes -= packet.len();
        drop(state);
        if let Err(e) = frame::send_bytes(sock.as_fd(), &packet, &[]) {
            tracing::debug!("control: client {id}: {e}");
            let mut state = outbox.lock();
            state.gone = true;
            state.packets.clear();
            drop(state);
            shut_down(sock);
            return;
        }
    }
}

/// One request of a client waiting for the core; the client's reader
/// reads its next request only while fewer than [`REQUESTS_IN_FLIGHT`]
/// are held. Dropped when the core has handled the request.
#[derive(Debug)]
pub struct RequestPermit(Arc<InFlight>);

/// The requests of one client the core has not handled yet.
#[derive(Debug, Default)]
pub struct InFlight {
    count: Mutex<usize>,
    freed: Condvar,
}

impl InFlight {
    pub fn acquire(self: &Arc<Self>) -> RequestPermit {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *count >= REQUESTS_IN_FLIGHT {
            count = self.freed.wait(count).unwrap_or_else(|e| e.into_inner());
        }
        *count += 1;
        RequestPermit(self.clone())
    }
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(|e| e.into_inner());
        *count -= 1;
        self.0.freed.notify_all();
    }
}
