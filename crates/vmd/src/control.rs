//! The control socket (vmd(8), "Control socket"): accepts vmctl clients, learns who they
//! are from `SO_PEERCRED`, and turns their packets into events for the
//! daemon's single-threaded core (the clients themselves, with their reply
//! queues, are client.rs's). Connections per user are bounded.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, connect, getsockopt,
    listen, setsockopt, socket, sockopt,
};
use proto::ErrorCode;
use proto::control::{Request, Response};
use proto::frame;

use crate::client::{Client, InFlight};
use crate::events::Event;
use crate::strerror::strerror;

/// How long one reply may take to go out before the client is dropped.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections one user may hold at once; root, who runs the service's
/// own scripts, gets more room but not unlimited.
const CONNECTIONS_PER_USER: usize = 32;
const CONNECTIONS_FOR_ROOT: usize = 256;

/// The connections each user holds, for the per-user cap.
#[derive(Debug, Default)]
struct Connections(Mutex<HashMap<u32, usize>>);

/// One connection counted against its user until the reader ends.
struct ConnectionSlot {
    connections: Arc<Connections>,
    uid: u32,
}

impl Connections {
    fn take(self: &Arc<Self>, uid: u32) -> Option<ConnectionSlot> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(uid).or_default();
        let cap = if uid == 0 {
            CONNECTIONS_FOR_ROOT
        } else {
            CONNECTIONS_PER_USER
        };
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            connections: self.clone(),
            uid,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut held = self.connections.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

/// Why vmd may not take the control socket's path.
#[derive(Debug)]
pub enum Occupied {
    /// A vmd answers there: the process that listens, if the kernel says.
    Running(Option<i32>),
    /// Something there cannot be connected to for another reason (not a
    /// vmd socket, no permission): vmd will not remove what it does not
    /// know to be dead.
    Unusable(Errno),
}

impl Occupied {
    /// The message for the terminal, naming the path.
    pub fn message(&self, path: &Path) -> String {
        match self {
            Occupied::Running(pid) => format!(
                "{}: another vmd is running{}: stop it first, or give this one a \
                 socket of its own with VMD_SOCKET",
                path.display(),
                pid.map_or(String::new(), |pid| format!(" (pid {pid})"))
            ),
            Occupied::Unusable(e) => format!(
                "{}: {}: not a socket vmd left behind; remove it if nothing uses it",
                path.display(),
                strerror(*e as i32)
            ),
        }
    }
}

/// Checks that no daemon answers at `path`, so that this one may take
/// the path over. Nothing there, or a socket that refuses connections
/// (its daemon died without removing it), is free; a socket that accepts
/// the connection belongs to a live daemon. Called before vmd changes
/// anything, and again just before the new socket replaces the path.
pub fn ensure_vacant(path: &Path) -> Result<(), Occupied> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(Occupied::Unusable)?;
    let addr = UnixAddr::new(path).map_err(Occupied::Unusable)?;
    // A live daemon whose backlog is full makes connect() wait; give up
    // after a while and count it as running.
    let _ = setsockopt(
        &sock,
        sockopt::SendTimeout,
        &nix::sys::time::TimeVal::new(2, 0),
    );
    match connect(sock.as_raw_fd(), &addr) {
        // The listening side's credentials are those of the process that
        // last called listen() on it: the daemon itself (see relisten).
        Ok(()) => Err(Occupied::Running(
            getsockopt(&sock, sockopt::PeerCredentials)
                .ok()
                .map(|c| c.pid())
                .filter(|&pid| pid > 0),
        )),
        Err(Errno::ENOENT | Errno::ECONNREFUSED) => Ok(()),
        // A full backlog: a daemon is there, too busy to accept yet.
        Err(Errno::EAGAIN) => Err(Occupied::Running(None)),
        Err(e) => Err(Occupied::Unusable(e)),
    }
}

/// Listens again on the socket `listen_at` made, from the process that
/// serves it. The kernel gives a connecting client the credentials of
/// the process that last called listen(); after vmd detaches that would
/// be the parent, which has exited, and a second vmd could not name the
/// one that runs.
pub fn relisten(listener: &OwnedFd) -> io::Result<()> {
    listen(listener, Backlog::new(5).unwrap_or(Backlog::MAXCONN))?;
    Ok(())
}

/// Creates the listening socket, mode 0660, owner root:0 until `socket
/// owner` says otherwise. A socket a dead daemon left behind is replaced;
/// a live daemon's is not (see [`ensure_vacant`]).
pub fn listen_at(path: &Path) -> io::Result<OwnedFd> {
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // Bind under a temporary name and rename once listening, so that a
    // client never finds a socket file that refuses connections.
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}", std::process::id()));
    let staging = std::path::PathBuf::from(staging);
    let _ = std::fs::remove_file(&staging);
    let addr = UnixAddr::new(&staging)?;
    // Create the socket file with no access, then open it up to 0660.
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = bind(sock.as_raw_fd(), &addr);
    // SAFETY: restoring the previous mask.
    unsafe { libc::umask(old) };
    bound?;
    let ready = (|| {
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o660))?;
        let _ = nix::unistd::chown(&staging, Some(0.into()), Some(0.into()));
        listen(&sock, Backlog::new(5).unwrap_or(Backlog::MAXCONN))?;
        // A daemon may have started since vmd first looked.
        ensure_vacant(path)
            .map_err(|o| io::Error::new(io::ErrorKind::AddrInUse, o.message(path)))?;
        // A dead daemon's socket is replaced.
        std::fs::rename(&staging, path)
    })();
    if let Err(e) = ready {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    Ok(sock)
}

/// Accepts clients forever, a reader and a writer thread each.
pub fn spawn_acceptor(listener: OwnedFd, events: Sender<Event>) -> io::Result<()> {
    let connections = Arc::new(Connections::default());
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            loop {
                let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                    Ok(fd) => fd,
                    Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::ECONNABORTED) => {
                        continue;
                    }
                    Err(e @ (nix::errno::Errno::EMFILE | nix::errno::Errno::ENFILE)) => {
                        tracing::warn!("control: accept: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                    Err(e) => {
                        tracing::error!("control: accept: {e}");
                        return;
                    }
                };
                // SAFETY: accept4 returned a new descriptor we now own.
                let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
                accept_client(sock, &connections, &events);
            }
        })?;
    Ok(())
}

fn accept_client(sock: OwnedFd, connections: &Arc<Connections>, events: &Sender<Event>) {
    let creds = match getsockopt(&sock, sockopt::PeerCredentials) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("control: cannot read peer credentials: {e}");
            return;
        }
    };
    let Some(slot) = connections.take(creds.uid()) else {
        tracing::info!(
            "control: refusing a connection from uid {}: too many connections",
            creds.uid()
        );
        // Said, not just done: vmctl prints it if it reads before it
        // notices the end.
        let _ = frame::send(
            sock.as_fd(),
            &Response::Ctl(Err(proto::error::Failed::because(
                ErrorCode(libc::EAGAIN),
                format!("too many connections from this user ({CONNECTIONS_PER_USER} at most)"),
            ))),
            &[],
        );
        return;
    };
    let _ = setsockopt(
        &sock,
        sockopt::SendTimeout,
        &nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0),
    );
    let client = match Client::new(sock, creds.uid(), creds.gid(), creds.pid()) {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!("control: cannot serve client: {e}");
            return;
        }
    };
    tracing::debug!(
        "control: client {} connected (uid {} gid {} pid {})",
        client.id,
        client.uid,
        client.gid,
        client.pid
    );
    let events = events.clone();
    let spawned = std::thread::Builder::new().name("client".into()).spawn({
        let client = client.clone();
        move || read_requests(client, events, slot)
    });
    if let Err(e) = spawned {
        tracing::warn!("control: cannot serve client: {e}");
        client.shut_down();
        client.close();
    }
}

fn read_requests(client: Arc<Client>, events: Sender<Event>, _slot: ConnectionSlot) {
    let in_flight = Arc::new(InFlight::default());
    loop {
        let permit = in_flight.acquire();
        match frame::recv::<Request>(client.sock().as_fd()) {
            Ok(Some(received)) => {
                // Refused here, before it is queued: a user's root-only
                // requests cost the core nothing.
                if !received.message.allowed_for_anyone() && client.uid != 0 {
                    tracing::info!(
                        "denied request {} from uid {}",
                        received.message.kind(),
                        client.uid
                    );
                    client.send(&Response::Ctl(Err(ErrorCode::EPERM.into())));
                    break;
                }
                let event = Event::Request {
                    client: client.clone(),
                    request: received.message,
                    fds: received.fds,
                    permit,
                };
                if events.send(event).is_err() {
                    return;
                }
            }
            Ok(None) => break,
            Err(e) => {
                // A malformed, truncated or oversized message ends this
                // connection and nothing else.
                if e.kind() == io::ErrorKind::InvalidData {
                    tracing::info!(
                        "control: dropping client {} (uid {}): {e}",
                        client.id,
                        client.uid
                    );
                }
                client.shut_down();
                break;
            }
        }
    }
    client.close();
    let _ = events.send(Event::ClientGone(client.id));
}
