//! The console client against a fake vmd and a pty standing in for the
//! VM's serial port: replay, relaying both ways, how sessions end, and the
//! escapes when stdin is a terminal.

mod common;

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Collected, FakeVmd, listing, vm_info, wait_exit};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::openpty;
use nix::sys::signal::{Signal, kill};
use nix::sys::termios::{LocalFlags, tcgetattr};
use nix::unistd::Pid;
use proto::control::{Request, Response, Started, VmRef};
use proto::error::ErrorCode;

const VM_ID: u32 = 4;

/// A pty pair whose descriptors do not leak into the vmctl processes
/// other tests spawn meanwhile (a leaked master would keep a "stopped"
/// VM's console alive).
fn pty_pair() -> nix::pty::OpenptyResult {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let pty = openpty(None, None).unwrap();
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    }
    pty
}

/// How the fake vmd ends an attached session when told to.
enum Finish {
    /// Sends ConsoleClosed (the VM stopped).
    Closed,
}

/// A running VM "web" whose serial port is the master of a pty, and a
/// vmd that lists it and accepts console attachment.
struct Vm {
    vmd: FakeVmd,
    /// The guest's side of the console.
    guest: Option<OwnedFd>,
    tty: String,
    attached: Receiver<()>,
    finish: Sender<Finish>,
    breaks: Arc<AtomicUsize>,
}

impl Vm {
    fn new(replay: &'static [u8], refusal: Option<ErrorCode>) -> Vm {
        Vm::with_tty(replay, refusal, None)
    }

    fn with_tty(replay: &'static [u8], refusal: Option<ErrorCode>, tty: Option<&str>) -> Vm {
        let pty = pty_pair();
        let tty = match tty {
            Some(path) => path.to_string(),
            None => nix::unistd::ttyname(&pty.slave)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        };
        drop(pty.slave);
        let (attached_tx, attached) = channel();
        let (finish, finish_rx) = channel::<Finish>();
        let attached_tx = Mutex::new(attached_tx);
        let finish_rx = Mutex::new(finish_rx);
        let breaks = Arc::new(AtomicUsize::new(0));
        let break_count = Arc::clone(&breaks);
        let listed_tty = tty.clone();
        let vmd = FakeVmd::start(move |request, _, peer| match request {
            Request::Info => listing(&[
                vm_info(1, "idle", None),
                vm_info(VM_ID, "web", Some(&listed_tty)),
            ])
            .iter()
            .for_each(|r| peer.send(r)),
            Request::Start(_) => peer.send(&Response::Start(Ok(Started {
                id: VM_ID,
                pid: 1234,
                tty: listed_tty.clone(),
            }))),
            Request::ConsoleAttach { target } if target != VmRef::Id(VM_ID) => {
                // vmd's answer for a stopped VM that has not run.
                assert_eq!(target, VmRef::Id(1));
                peer.send(&Response::ConsoleRefused(proto::ErrorCode::ENOENT));
            }
            Request::ConsoleAttach { target } => {
                assert_eq!(target, VmRef::Id(VM_ID));
                if let Some(code) = refusal {
                    peer.send(&Response::ConsoleRefused(code));
                    return;
                }
                peer.send(&Response::ConsoleAttached {
                    tty: listed_tty.clone(),
                    replay: replay.to_vec(),
                });
                let reader = peer.try_clone();
                let count = Arc::clone(&break_count);
                std::thread::spawn(move || {
                    while let Some(request) = reader.recv() {
                        if request == Request::ConsoleBreak {
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
                let _ = attached_tx.lock().unwrap().send(());
                if let Ok(Finish::Closed) = finish_rx.lock().unwrap().recv() {
                    let _ = peer.try_send(&Response::ConsoleClosed);
                }
            }
            _ => {}
        });
        Vm {
            vmd,
            guest: Some(pty.master),
            tty,
            attached,
            finish,
            breaks,
        }
    }

    fn guest(&self) -> &OwnedFd {
        self.guest.as_ref().expect("guest side still open")
    }

    /// The guest prints.
    fn guest_writes(&self, bytes: &[u8]) {
        nix::unistd::write(self.guest(), bytes).unwrap();
    }

    /// Reads from the guest side until `expected` has arrived; returns it all.
    fn guest_reads(&self, expected: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while !got.ends_with(expected) {
            assert!(
                Instant::now() < deadline,
                "guest got {:?}, waiting for {:?}",
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected)
            );
            let mut fds = [PollFd::new(self.guest().as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(100u16)).unwrap() == 0 {
                continue;
            }
            let mut buf = [0u8; 1024];
            let n = nix::unistd::read(self.guest(), &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    fn wait_attached(&self) {
        self.attached
            .recv_timeout(Duration::from_secs(20))
            .expect("vmctl attached");
    }

    fn connected_line(&self) -> String {
        format!("Connected to {} (speed 115200)\r\n", self.tty)
    }

    fn spawn(&self, args: &[&str], stdin: Stdio) -> (Child, Collected, Collected) {
        let mut child = common::vmctl_command(&self.vmd.socket, args)
            .stdin(stdin)
            .process_group(0)
            .spawn()
            .unwrap();
        let stdout = Collected::from(child.stdout.take().unwrap());
        let stderr = Collected::from(child.stderr.take().unwrap());
        (child, stdout, stderr)
    }
}

fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
}

#[test]
fn piped_session_replays_relays_and_ends_when_the_vm_stops() {
    let vm = Vm::new(b"REPLAY\r\n", None);
    let (mut child, stdout, stderr) = vm.spawn(&["console", "web"], Stdio::piped());
    vm.wait_attached();
    stdout.wait_for(b"REPLAY\r\n");

    vm.guest_writes(b"guest says hi\r\n");
    stdout.wait_for(b"guest says hi\r\n");

    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"typed line\n").unwrap();
    assert_eq!(vm.guest_reads(b"typed line\n"), b"typed line\n");
    // Guest output keeps flowing after the input ends.
    drop(stdin);
    vm.guest_writes(b"after eof\n");
    stdout.wait_for(b"after eof\n");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "stdin EOF ended the session"
    );

    vm.finish.send(Finish::Closed).unwrap();
    assert_eq!(wait_exit(&mut child), 0);
    assert_eq!(stdout.bytes(), b"REPLAY\r\nguest says hi\r\nafter eof\n");
    assert_eq!(
        stderr.final_text(),
        format!("{}\r\n[EOT]\n", vm.connected_line())
    );
    assert_eq!(
        vm.vmd.requests(),
        [
            Request::Info,
            Request::ConsoleAttach {
                target: VmRef::Id(VM_ID)
            }
        ]
    );
}

#[test]
fn console_by_id_ends_on_tty_hangup() {
    let mut vm = Vm::new(b"", None);
    let (mut child, stdout, stderr) = vm.spawn(&["cons", "4"], Stdio::null());
    vm.wait_attached();
    vm.guest_writes(b"last words\r\n");
    stdout.wait_for(b"last words\r\n");
    // The VM process goes away: the pty master closes.
    vm.guest = None;
    assert_eq!(wait_exit(&mut child), 0);
    assert_eq!(stdout.bytes(), b"last words\r\n");
    assert_eq!(
        stderr.final_text(),
        format!("{}\r\n[EOT]\n", vm.connected_line())
    );
}

#[test]
fn piped_session_ends_on_sigterm_and_sigint() {
    for (sig, label) in [(Signal::SIGTERM, "SIGTERM"), (Signal::SIGINT, "SIGINT")] {
        let vm = Vm::new(b"", None);
        let (mut child, _stdout, stderr) = vm.spawn(&["console", "web"], Stdio::piped());
        vm.wait_attached();
        stderr.wait_for(b"Connected to");
        signal(&child, sig);
        assert_eq!(wait_exit(&mut child), 0);
        assert_eq!(
            stderr.final_text(),
            format!("{}\r\n[{label}]\n", vm.connected_line())
        );
    }
}

#[test]
fn second_client_is_refused() {
    let vm = Vm::new(b"", Some(ErrorCode::EBUSY));
    assert_eq!(
        vm.vmd.run(&["console", "web"]),
        (
            1,
            String::new(),
            "vmctl: failed to open the console: Device or resource busy\n".into()
        )
    );
}

#[test]
fn console_not_found() {
    let vm = Vm::new(b"", None);
    for target in ["idle", "1", "ghost", "0", "44"] {
        assert_eq!(
            vm.vmd.run(&["console", target]),
            (1, String::new(), "vmctl: console not found\n".into()),
            "{target}"
        );
    }
}

#[test]
fn tty_that_cannot_be_opened() {
    let vm = Vm::with_tty(b"", None, Some("/nonexistent/pts/77"));
    assert_eq!(
        vm.vmd.run(&["console", "web"]),
        (
            1,
            String::new(),
            "vmctl: failed to open the console: No such file or directory\n".into()
        )
    );
    // vmctl gave up before asking vmd to attach.
    assert_eq!(vm.vmd.requests(), [Request::Info]);
}

#[test]
fn start_with_console() {
    let vm = Vm::new(b"booting\r\n", None);
    let (mut child, stdout, stderr) = vm.spawn(&["start", "-c", "web"], Stdio::null());
    vm.wait_attached();
    stdout.wait_for(b"booting\r\n");
    vm.finish.send(Finish::Closed).unwrap();
    assert_eq!(wait_exit(&mut child), 0);
    // The console replaces the success message.
    assert_eq!(
        stderr.final_text(),
        format!("{}\r\n[EOT]\n", vm.connected_line())
    );
    assert!(matches!(vm.vmd.requests()[0], Request::Start(_)));
}

/// A terminal for vmctl's stdin: the test types on `keyboard`.
struct Terminal {
    keyboard: OwnedFd,
    screen: Option<OwnedFd>,
}

impl Terminal {
    fn new() -> Terminal {
        let pty = pty_pair();
        Terminal {
            keyboard: pty.master,
            screen: Some(pty.slave),
        }
    }

    /// The terminal side handed to vmctl as stdin.
    fn stdin(&mut self) -> Stdio {
        Stdio::from(self.screen.take().unwrap())
    }

    fn types(&self, bytes: &[u8]) {
        nix::unistd::write(&self.keyboard, bytes).unwrap();
    }

    fn echoes(&self) -> bool {
        let termios = tcgetattr(&self.keyboard).unwrap();
        termios.local_flags.contains(LocalFlags::ECHO)
            && termios.local_flags.contains(LocalFlags::ICANON)
    }
}

const HELP: &str = "~#      send break\r\n\
                    ~$      pipe local command to remote host\r\n\
                    ~>      send file to remote host\r\n\
                    ~C      connect program to remote host\r\n\
                    ~D      de-assert DTR line briefly\r\n\
                    ~R      start recording to file\r\n\
                    ~S      set speed\r\n\
                    ~X      send file with XMODEM\r\n\
                    ~?      get this summary\r\n";

#[test]
fn interactive_escapes() {
    let vm = Vm::new(b"", None);
    let mut terminal = Terminal::new();
    assert!(terminal.echoes());
    let (mut child, _stdout, stderr) = vm.spawn(&["console", "web"], terminal.stdin());
    vm.wait_attached();
    stderr.wait_for(b"Connected to");
    assert!(!terminal.echoes(), "terminal not raw during the session");

    // `~~` sends one tilde; a `~` inside a line is plain text; LF is not
    // a line start for escapes.
    terminal.types(b"abc\r~~x a~b\n~.\r");
    assert_eq!(vm.guest_reads(b"\n~.\r"), b"abc\r~x a~b\n~.\r");

    // `~#` asks vmd for a BREAK; unknown escapes are dropped whole.
    terminal.types(b"~#\r~qz\r");
    assert_eq!(vm.guest_reads(b"z\r"), b"\rz\r");
    let deadline = Instant::now() + Duration::from_secs(20);
    while vm.breaks.load(Ordering::SeqCst) != 1 {
        assert!(Instant::now() < deadline, "no BREAK request");
        std::thread::sleep(Duration::from_millis(10));
    }

    terminal.types(b"~?");
    stderr.wait_for(HELP.as_bytes());

    // SIGINT and SIGQUIT do not end an interactive session.
    signal(&child, Signal::SIGINT);
    signal(&child, Signal::SIGQUIT);
    terminal.types(b"still here\r");
    assert_eq!(vm.guest_reads(b"still here\r"), b"still here\r");

    terminal.types(b"~.");
    assert_eq!(wait_exit(&mut child), 0);
    assert!(terminal.echoes(), "terminal not restored");
    assert_eq!(
        stderr.final_text(),
        format!("{}{HELP}\r\n[EOT]\n", vm.connected_line())
    );
    assert_eq!(vm.breaks.load(Ordering::SeqCst), 1);
}

#[test]
fn interactive_session_ends_on_sighup_with_the_terminal_restored() {
    let vm = Vm::new(b"", None);
    let mut terminal = Terminal::new();
    let (mut child, _stdout, stderr) = vm.spawn(&["console", "web"], terminal.stdin());
    vm.wait_attached();
    stderr.wait_for(b"Connected to");
    signal(&child, Signal::SIGHUP);
    assert_eq!(wait_exit(&mut child), 0);
    assert!(terminal.echoes());
    assert_eq!(
        stderr.final_text(),
        format!("{}\r\n[SIGHUP]\n", vm.connected_line())
    );
}

#[test]
fn interactive_suspend_restores_the_terminal_meanwhile() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let vm = Vm::new(b"", None);
    let mut terminal = Terminal::new();
    let (mut child, _stdout, stderr) = vm.spawn(&["console", "web"], terminal.stdin());
    vm.wait_attached();
    stderr.wait_for(b"Connected to");
    let pid = Pid::from_raw(child.id() as i32);

    terminal.types(b"~\x1a");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WUNTRACED | WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::Stopped(_, Signal::SIGTSTP) => break,
            WaitStatus::StillAlive => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(Instant::now() < deadline, "vmctl did not suspend");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(terminal.echoes(), "terminal still raw while suspended");

    kill(pid, Signal::SIGCONT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while terminal.echoes() {
        assert!(Instant::now() < deadline, "raw mode not back after resume");
        std::thread::sleep(Duration::from_millis(10));
    }
    terminal.types(b"back\r");
    assert_eq!(vm.guest_reads(b"back\r"), b"back\r");
    terminal.types(b"~.");
    assert_eq!(wait_exit(&mut child), 0);
    assert!(terminal.echoes());
}

#[test]
fn interactive_local_file_and_command() {
    let dir = common::TempDir::new();
    let file = dir.file("payload.txt", b"file contents\n");
    let record = dir.path.join("record.log");
    let vm = Vm::new(b"", None);
    let mut terminal = Terminal::new();
    let (mut child, _stdout, stderr) = vm.spawn(&["console", "web"], terminal.stdin());
    vm.wait_attached();
    stderr.wait_for(b"Connected to");

    // `~>`: the prompt reads a line with the terminal back in normal mode.
    terminal.types(b"~>");
    stderr.wait_for(b"Local file? ");
    terminal.types(format!("{}\n", file.display()).as_bytes());
    assert_eq!(vm.guest_reads(b"file contents\n"), b"file contents\n");

    // `~$`: what the command prints goes to the guest.
    terminal.types(b"\r~$");
    stderr.wait_for(b"Local command? ");
    terminal.types(b"echo from-a-command\n");
    assert_eq!(vm.guest_reads(b"from-a-command\n"), b"\rfrom-a-command\n");

    // `~R`: guest output is also appended to the file.
    terminal.types(b"\r~R");
    stderr.wait_for(b"Record file? ");
    terminal.types(format!("{}\n", record.display()).as_bytes());
    vm.guest_reads(b"\r");
    // The answer is read once raw mode is back.
    let deadline = Instant::now() + Duration::from_secs(20);
    while terminal.echoes() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    while !record.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    vm.guest_writes(b"recorded output\r\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read(&record).unwrap() != b"recorded output\r\n" {
        assert!(Instant::now() < deadline, "nothing recorded");
        std::thread::sleep(Duration::from_millis(10));
    }

    // An answer typed ahead with the escape, in raw mode, ends at CR.
    terminal.types(b"\r~>/nonexistent/file\rafter\r");
    stderr.wait_for(b"vmctl: /nonexistent/file: No such file or directory\r\n");
    assert_eq!(vm.guest_reads(b"after\r"), b"\rafter\r");
    assert_eq!(stderr.text().matches("Local file? ").count(), 2);

    terminal.types(b"\r~.");
    assert_eq!(wait_exit(&mut child), 0);
    assert!(terminal.echoes());
}

#[test]
fn interactive_program_speed_dtr_and_xmodem() {
    use nix::sys::termios::{BaudRate, cfgetospeed};
    let dir = common::TempDir::new();
    let file = dir.file("upload.bin", b"xmodem payload");
    let vm = Vm::new(b"", None);
    let mut terminal = Terminal::new();
    let (mut child, _stdout, stderr) = vm.spawn(&["console", "web"], terminal.stdin());
    vm.wait_attached();
    stderr.wait_for(b"Connected to");

    // `~C`: the program's stdout goes to the guest, its stdin comes from it.
    terminal.types(b"~Cprintf 'from-program\\n'; read reply; echo \"got:$reply\" >&2\r");
    vm.guest_reads(b"from-program\n");
    vm.guest_writes(b"pong\n");
    stderr.wait_for(b"got:pong\n");

    // `~S`: the line speed changes (the pty keeps the setting).
    let speed = || cfgetospeed(&tcgetattr(vm.guest()).unwrap());
    assert_eq!(speed(), BaudRate::B115200);
    terminal.types(b"\r~S9600\r");
    let deadline = Instant::now() + Duration::from_secs(20);
    while speed() != BaudRate::B9600 {
        assert!(Instant::now() < deadline, "speed unchanged");
        std::thread::sleep(Duration::from_millis(10));
    }
    terminal.types(b"\r~Sfast\r");
    stderr.wait_for(b"vmctl: invalid speed: fast\r\n");

    // `~D` has nothing to drop on a pty and sends nothing.
    terminal.types(b"\r~Dd\r");
    // The CRs before the two `~S` and the `~D` arrive; the answers do not.
    assert_eq!(vm.guest_reads(b"d\r"), b"\r\r\rd\r");

    // `~X`: one checksummed block, then the end of transmission.
    terminal.types(format!("\r~X{}\r", file.display()).as_bytes());
    assert_eq!(vm.guest_reads(b"\r"), b"\r");
    vm.guest_writes(&[0x15]);
    let mut block = vec![0x01, 1, 0xfe];
    block.extend_from_slice(b"xmodem payload");
    block.resize(3 + 128, 0x1a);
    let sum = block[3..].iter().fold(0u8, |s, &b| s.wrapping_add(b));
    block.push(sum);
    assert_eq!(vm.guest_reads(&block[block.len() - 4..]), block);
    vm.guest_writes(&[0x06]);
    assert_eq!(vm.guest_reads(&[0x04]), [0x04]);
    vm.guest_writes(&[0x06]);
    stderr.wait_for(b"vmctl: xmodem: sent 1 block\r\n");

    terminal.types(b"\r~.");
    assert_eq!(wait_exit(&mut child), 0);
    assert!(terminal.echoes());
}
