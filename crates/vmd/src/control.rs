//! The control socket (vmd.md §3): accepts vmctl clients, learns who they
//! are from `SO_PEERCRED`, and turns their packets into events for the
//! daemon's single-threaded core. Replies are written straight back on the
//! client's socket by the core.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, connect, getsockopt,
    listen, setsockopt, socket, sockopt,
};
use proto::control::{Request, Response};
use proto::frame;

use crate::events::Event;

/// A connected client and its credentials.
#[derive(Debug)]
pub struct Client {
    pub id: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    sock: OwnedFd,
}

impl Client {
    /// Sends a reply. A client that does not read its replies within the
    /// send timeout is dropped rather than allowed to stall the daemon.
    pub fn send(&self, response: &Response) -> bool {
        match frame::send(self.sock.as_fd(), response, &[]) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("control: client {}: {e}", self.id);
                self.close();
                false
            }
        }
    }

    /// Ends the connection; the reader thread then reports the client gone.
    pub fn close(&self) {
        let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
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
                crate::strerror(*e as i32)
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

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// Accepts clients forever, one reader thread each.
pub fn spawn_acceptor(listener: OwnedFd, events: Sender<Event>) -> io::Result<()> {
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
                let creds = match getsockopt(&sock, sockopt::PeerCredentials) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("control: cannot read peer credentials: {e}");
                        continue;
                    }
                };
                let _ = setsockopt(
                    &sock,
                    sockopt::SendTimeout,
                    &nix::sys::time::TimeVal::new(2, 0),
                );
                let client = Arc::new(Client {
                    id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
                    uid: creds.uid(),
                    gid: creds.gid(),
                    pid: creds.pid(),
                    sock,
                });
                tracing::debug!(
                    "control: client {} connected (uid {} gid {} pid {})",
                    client.id,
                    client.uid,
                    client.gid,
                    client.pid
                );
                let events = events.clone();
                let spawned = std::thread::Builder::new()
                    .name("client".into())
                    .spawn(move || read_requests(client, events));
                if let Err(e) = spawned {
                    tracing::warn!("control: cannot serve client: {e}");
                }
            }
        })?;
    Ok(())
}

fn read_requests(client: Arc<Client>, events: Sender<Event>) {
    loop {
        match frame::recv::<Request>(client.sock.as_fd()) {
            Ok(Some(received)) => {
                let event = Event::Request {
                    client: client.clone(),
                    request: received.message,
                    fds: received.fds,
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
                client.close();
                break;
            }
        }
    }
    let _ = events.send(Event::ClientGone(client.id));
}
