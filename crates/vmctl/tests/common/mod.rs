//! What the integration tests share: running the built vmctl, and a fake
//! vmd that listens on a private control socket and answers with canned
//! `proto` responses.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept, bind, listen, socket,
};
use proto::control::{Request, Response, VmInfo, state};
use proto::frame;

/// A fresh directory for one test, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("vmctl-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir {
            path: std::fs::canonicalize(path).unwrap(),
        }
    }

    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The vmctl under test, talking to the socket at `socket`.
pub fn vmctl_command(socket: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vmctl"));
    command
        .args(args)
        .env("VMD_SOCKET", socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs vmctl to completion.
pub fn run_vmctl(socket: &Path, args: &[&str]) -> Output {
    vmctl_command(socket, args).output().unwrap()
}

/// Exit status, stdout and stderr of a finished vmctl.
pub fn outcome(output: &Output) -> (i32, String, String) {
    (
        output.status.code().expect("vmctl exited normally"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A socket path where no daemon listens.
pub fn no_daemon() -> PathBuf {
    PathBuf::from("/nonexistent/vmd-test.sock")
}

/// One accepted client connection of the fake vmd.
pub struct Peer {
    fd: OwnedFd,
}

impl Peer {
    pub fn send(&self, response: &Response) {
        frame::send(self.fd.as_fd(), response, &[]).unwrap();
    }

    /// Sends and ignores failure (the client may be gone already).
    pub fn try_send(&self, response: &Response) -> bool {
        frame::send(self.fd.as_fd(), response, &[]).is_ok()
    }

    /// A second handle on the same connection (to read BREAKs while the
    /// handler waits to end the session).
    pub fn try_clone(&self) -> Peer {
        Peer {
            fd: self.fd.try_clone().unwrap(),
        }
    }

    /// Sends a packet that is not a valid response.
    pub fn send_garbage(&self) {
        let _ = frame::send_bytes(self.fd.as_fd(), &[0xff; 8], &[]);
    }

    /// The client's next request (console sessions send BREAKs).
    pub fn recv(&self) -> Option<Request> {
        frame::recv::<Request>(self.fd.as_fd())
            .ok()
            .flatten()
            .map(|r| r.message)
    }
}

type Handler = dyn Fn(Request, Vec<OwnedFd>, &Peer) + Send + Sync;

/// A fake vmd: each connection's first request is recorded and handed to
/// the handler, which answers through the [`Peer`]; the connection closes
/// when the handler returns.
pub struct FakeVmd {
    pub socket: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
    _dir: TempDir,
}

impl FakeVmd {
    pub fn start(
        handler: impl Fn(Request, Vec<OwnedFd>, &Peer) + Send + Sync + 'static,
    ) -> FakeVmd {
        let dir = TempDir::new();
        let socket_path = dir.path.join("vmd.sock");
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(listener.as_raw_fd(), &UnixAddr::new(&socket_path).unwrap()).unwrap();
        listen(&listener, Backlog::new(16).unwrap()).unwrap();

        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = Arc::clone(&requests);
        // The accept loop lives as long as the test process.
        std::thread::spawn(move || {
            loop {
                let Ok(raw): Result<RawFd, _> = accept(listener.as_raw_fd()) else {
                    return;
                };
                // SAFETY: accept just returned this descriptor to us.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                let peer = Peer { fd };
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                std::thread::spawn(move || {
                    let Ok(Some(received)) = frame::recv::<Request>(peer.fd.as_fd()) else {
                        return;
                    };
                    recorded.lock().unwrap().push(received.message.clone());
                    handler(received.message, received.fds, &peer);
                });
            }
        });
        FakeVmd {
            socket: socket_path,
            requests,
            _dir: dir,
        }
    }

    /// Answers every request with the same responses.
    pub fn replying(responses: Vec<Response>) -> FakeVmd {
        FakeVmd::start(move |_, _, peer| responses.iter().for_each(|r| peer.send(r)))
    }

    /// The first request of every connection so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        outcome(&run_vmctl(&self.socket, args))
    }
}

/// A VM row as vmd would list it.
pub fn vm_info(id: u32, name: &str, tty: Option<&str>) -> VmInfo {
    let running = tty.is_some();
    VmInfo {
        id,
        name: name.to_string(),
        max_mem: 512 << 20,
        cur_mem: if running { 10 << 20 } else { 0 },
        vcpus: 1,
        pid: running.then_some(4000 + id),
        tty: tty.map(str::to_string),
        owner_uid: 0,
        owner_gid: None,
        state: if running { state::RUNNING } else { 0 },
    }
}

/// The responses of a VM listing.
pub fn listing(vms: &[VmInfo]) -> Vec<Response> {
    let mut responses: Vec<Response> = vms.iter().cloned().map(Response::InfoData).collect();
    responses.push(Response::InfoEnd);
    responses
}

/// Collects what a child writes to a pipe, readable while it runs.
#[derive(Clone)]
pub struct Collected(Arc<Mutex<Vec<u8>>>, Arc<std::sync::atomic::AtomicBool>);

impl Collected {
    pub fn from(mut pipe: impl Read + Send + 'static) -> Collected {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sink = Arc::clone(&buffer);
        let finished = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
            finished.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Collected(buffer, done)
    }

    /// Everything the pipe carried, once its writer is gone (call after
    /// the process exited: the reader may still be draining the pipe).
    pub fn final_text(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.1.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.text()
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits until the collected bytes contain `needle`.
    pub fn wait_for(&self, needle: &[u8]) {
        self.wait_for_count(needle, 1);
    }

    /// Waits until the collected bytes contain `needle` `count` times.
    pub fn wait_for_count(&self, needle: &[u8], count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self
            .bytes()
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
            < count
        {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {:?}; have {:?}",
                String::from_utf8_lossy(needle),
                self.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Waits for a child to exit, failing the test after 20 s.
pub fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited normally");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vmctl did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
