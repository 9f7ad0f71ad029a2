//! vmctl against a fake vmd: what each command asks, and how it reports
//! each canned answer (exact stderr/stdout and exit status).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::{FakeVmd, TempDir, listing, vm_info};
use proto::control::{
    BootDevice, DiskFormat, DiskSpec, NicKind, Request, ResetMode, Response, SEND_RECEIVED,
    StartRequest, Started, VmInfo, VmRef, state,
};
use proto::error::{ErrorCode, Failed, Line};

const HEADER: &str = "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n";

fn name(n: &str) -> VmRef {
    VmRef::Name(n.to_string())
}

fn status_vms() -> Vec<VmInfo> {
    let mut running = vm_info(1, "example", Some("/dev/pts/8"));
    running.max_mem = 1 << 30;
    running.cur_mem = 92_379_955;
    running.pid = Some(72118);
    let mut stopped = vm_info(2, "web1", None);
    stopped.owner_gid = Some(0);
    let mut paused = vm_info(3, "paused-one", Some("/dev/pts/12"));
    paused.state = state::RUNNING | state::PAUSED;
    paused.owner_uid = 4_000_000;
    paused.vcpus = 4;
    let mut waiting = vm_info(14, "queued", None);
    waiting.state = state::WAITING;
    waiting.max_mem = 4608 << 20;
    waiting.owner_uid = 4_000_000;
    // "4000000:40000012" is cut to 15 characters.
    waiting.owner_gid = Some(40_000_012);
    vec![running, paused, stopped, waiting]
}

#[test]
fn status_table() {
    let vmd = FakeVmd::replying(listing(&status_vms()));
    let expected = format!(
        "{HEADER}\
         \x20   1 72118     1    1.0G   88.1M   pts/8         root  running example\n\
         \x20   3  4003     4    512M   10.0M  pts/12      4000000   paused paused-one\n\
         \x20   2     -     1    512M       -       -    root:root  stopped web1\n\
         \x20  14     -     1    4.5G       -       - 4000000:4000001  waiting queued\n"
    );
    assert_eq!(vmd.run(&["status"]), (0, expected.clone(), String::new()));
    assert_eq!(vmd.run(&["show"]), (0, expected, String::new()));
    assert_eq!(vmd.requests(), [Request::Info, Request::Info]);
}

#[test]
fn status_filters_and_exit_status() {
    let vmd = FakeVmd::replying(listing(&status_vms()));
    let (status, out, _) = vmd.run(&["status", "-r"]);
    assert_eq!(status, 0);
    assert_eq!(out.lines().count(), 3);
    assert!(out.lines().skip(1).all(|l| !l.contains(" - ")));

    let (status, out, _) = vmd.run(&["status", "web1"]);
    assert_eq!((status, out.lines().count()), (0, 2));
    assert!(out.ends_with(" stopped web1\n"));
    let (status, out, _) = vmd.run(&["stat", "14"]);
    assert_eq!((status, out.lines().count()), (0, 2));
    assert!(out.ends_with(" queued\n"));
    // An id that matches nothing: header only, still 0.
    assert_eq!(
        vmd.run(&["status", "nothing"]),
        (0, HEADER.to_string(), String::new())
    );
    // -r and a stopped VM: nothing printed for it, but others run.
    assert_eq!(
        vmd.run(&["status", "-r", "web1"]),
        (0, HEADER.to_string(), String::new())
    );

    let stopped_only = FakeVmd::replying(listing(&[vm_info(2, "web1", None)]));
    assert_eq!(
        stopped_only.run(&["status", "-r"]),
        (1, HEADER.to_string(), String::new())
    );
    let empty = FakeVmd::replying(listing(&[]));
    assert_eq!(
        empty.run(&["status"]),
        (1, HEADER.to_string(), String::new())
    );
}

#[test]
fn protocol_failures() {
    let silent = FakeVmd::replying(vec![]);
    assert_eq!(
        silent.run(&["status"]),
        (1, String::new(), "vmctl: pipe closed\n".into())
    );
    // Part of a listing, then the connection closes.
    let cut = FakeVmd::replying(vec![Response::InfoData(vm_info(1, "a", None))]);
    assert_eq!(
        cut.run(&["status"]),
        (1, String::new(), "vmctl: pipe closed\n".into())
    );
    let wrong = FakeVmd::replying(vec![Response::Pause {
        id: 1,
        result: Ok(()),
    }]);
    for args in [
        &["status"][..],
        &["unpause", "1"],
        &["start", "a"],
        &["reload"],
    ] {
        assert_eq!(
            wrong.run(args),
            (
                1,
                String::new(),
                "vmctl: unexpected response received from vmd\n".into()
            ),
            "{args:?}"
        );
    }
    // A packet that is no response at all.
    let garbage = FakeVmd::start(|_, _, peer| peer.send_garbage());
    let (status, _, err) = garbage.run(&["pause", "1"]);
    assert_eq!(
        (status, err.as_str()),
        (1, "vmctl: unexpected response received from vmd\n")
    );
}

#[test]
fn generic_failures_read_command_failed() {
    let denied = FakeVmd::replying(vec![Response::Ctl(Err(ErrorCode::EPERM.into()))]);
    for args in [
        &["reload"][..],
        &["load", "/etc/vm.conf"],
        &["reset"],
        &["log", "brief"],
        &["status"],
        &["pause", "web"],
        &["send", "web"],
        &["receive", "web"],
    ] {
        assert_eq!(
            denied.run(args),
            (
                1,
                String::new(),
                "vmctl: command failed: Operation not permitted\n".into()
            ),
            "{args:?}"
        );
    }
    let bare = FakeVmd::replying(vec![Response::Ctl(Err(ErrorCode(0).into()))]);
    assert_eq!(
        bare.run(&["load", "/x.conf"]),
        (1, String::new(), "vmctl: command failed\n".into())
    );
}

#[test]
fn control_requests() {
    let vmd = FakeVmd::replying(vec![Response::Ctl(Ok(()))]);
    for args in [
        &["load", "/etc/vm.conf"][..],
        &["load", "relative.conf"],
        &["reload"],
        &["reset"],
        &["res", "VMS"],
        &["reset", "switches"],
        &["log", "verbose"],
        &["log", "B"],
    ] {
        assert_eq!(vmd.run(args), (0, String::new(), String::new()), "{args:?}");
    }
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        vmd.requests(),
        [
            Request::Load {
                path: "/etc/vm.conf".into()
            },
            Request::Load {
                path: cwd.join("relative.conf").to_string_lossy().into_owned()
            },
            Request::Reload,
            Request::Reset {
                mode: ResetMode::All
            },
            Request::Reset {
                mode: ResetMode::Vms
            },
            Request::Reset {
                mode: ResetMode::Switches
            },
            Request::Log { level: 2 },
            Request::Log { level: 0 },
        ]
    );
}

#[test]
fn pause_and_unpause() {
    let vmd = FakeVmd::start(|request, _, peer| {
        let response = match request {
            Request::Pause {
                target: VmRef::Id(7),
            } => Response::Pause {
                id: 7,
                result: Ok(()),
            },
            Request::Pause { .. } => Response::Pause {
                id: 0,
                result: Err(ErrorCode::ENOENT),
            },
            Request::Unpause { target } if target == name("web") => Response::Unpause {
                id: 3,
                result: Ok(()),
            },
            _ => Response::Unpause {
                id: 0,
                result: Err(ErrorCode::EPERM),
            },
        };
        peer.send(&response);
    });
    assert_eq!(
        vmd.run(&["pause", "7"]),
        (0, String::new(), "vmctl: paused vm 7 successfully\n".into())
    );
    assert_eq!(
        vmd.run(&["p", "ghost"]),
        (
            1,
            String::new(),
            "vmctl: pause vm command failed: No such file or directory\n".into()
        )
    );
    assert_eq!(
        vmd.run(&["unpause", "web"]),
        (
            0,
            String::new(),
            "vmctl: unpaused vm 3 successfully\n".into()
        )
    );
    assert_eq!(
        vmd.run(&["u", "other"]),
        (
            1,
            String::new(),
            "vmctl: unpause vm command failed: Operation not permitted\n".into()
        )
    );
    // A pause answered as an unpause is not an answer.
    let crossed = FakeVmd::replying(vec![Response::Unpause {
        id: 1,
        result: Ok(()),
    }]);
    assert_eq!(
        crossed.run(&["pause", "1"]).2,
        "vmctl: unexpected response received from vmd\n"
    );
}

fn started(id: u32, tty: &str) -> Response {
    Response::Start(Ok(Started {
        id,
        pid: 999,
        tty: tty.into(),
    }))
}

#[test]
fn start_success_and_request() {
    let dir = TempDir::new();
    let disk = dir.file("disk.qcow2", b"QFI\xfb\0\0\0\x03");
    let iso = dir.file("install.iso", b"");
    let vmd = FakeVmd::replying(vec![started(5, "/dev/pts/4")]);
    let (status, out, err) = vmd.run(&[
        "start",
        "-m",
        "2G",
        "-d",
        disk.to_str().unwrap(),
        "-r",
        iso.to_str().unwrap(),
        "-B",
        "cdrom",
        "-L",
        "-n",
        "uplink",
        "-i",
        "3",
        "-p",
        "2",
        "newvm",
    ]);
    assert_eq!(
        (status, out.as_str(), err.as_str()),
        (0, "", "vmctl: started vm 5 successfully, tty /dev/pts/4\n")
    );
    assert_eq!(
        vmd.requests(),
        [Request::Start(StartRequest {
            target: Some(name("newvm")),
            memory: Some(2 << 30),
            vcpus: Some(2),
            disks: vec![DiskSpec {
                path: disk.to_string_lossy().into_owned(),
                format: DiskFormat::Qcow2,
            }],
            cdrom: Some(iso.to_string_lossy().into_owned()),
            nics: vec![
                NicKind::Local,
                NicKind::Switch("uplink".into()),
                NicKind::Plain
            ],
            boot_device: Some(BootDevice::Cdrom),
            ..Default::default()
        })]
    );
}

#[test]
fn start_passes_the_kernel_it_opened() {
    let dir = TempDir::new();
    let kernel = dir.file("vmlinuz", b"the kernel image");
    let initrd = dir.file("initrd.img", b"");
    let vmd = FakeVmd::start(|_, fds, peer| {
        assert_eq!(fds.len(), 1);
        let mut contents = Vec::new();
        std::fs::File::from(fds.into_iter().next().unwrap())
            .read_to_end(&mut contents)
            .unwrap();
        let ok = contents == b"the kernel image";
        peer.send(&if ok {
            started(9, "/dev/pts/1")
        } else {
            Response::Start(Err(ErrorCode::EIO.into()))
        });
    });
    let (status, _, err) = vmd.run(&[
        "start",
        "-b",
        kernel.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 quiet",
        "--initrd",
        initrd.to_str().unwrap(),
        "linux",
    ]);
    assert_eq!(
        (status, err.as_str()),
        (0, "vmctl: started vm 9 successfully, tty /dev/pts/1\n")
    );
    let Request::Start(request) = &vmd.requests()[0] else {
        panic!("not a start request");
    };
    assert_eq!(request.kernel.as_deref(), kernel.to_str());
    assert_eq!(request.cmdline.as_deref(), Some("console=ttyS0 quiet"));
    assert_eq!(request.initrd.as_deref(), initrd.to_str());
    assert!(request.nics.is_empty());
}

#[test]
fn start_failures() {
    let cases = [
        (ErrorCode::BIOS_MISSING, "vmm bios firmware file not found."),
        (ErrorCode::DISK_MISSING, "could not open disk image(s)"),
        (
            ErrorCode::CDROM_MISSING,
            "could not find specified iso image",
        ),
        (
            ErrorCode::CDROM_INVALID,
            "specified iso image is not a regular file",
        ),
        (ErrorCode::PARENT_INVALID, "invalid template"),
        (
            ErrorCode::EALREADY,
            "start vm command failed: Operation already in progress",
        ),
        (
            ErrorCode::EPERM,
            "start vm command failed: Operation not permitted",
        ),
        (
            ErrorCode::ENOMEM,
            "start vm command failed: Cannot allocate memory",
        ),
    ];
    for (code, text) in cases {
        let vmd = FakeVmd::replying(vec![Response::Start(Err(code.into()))]);
        assert_eq!(
            vmd.run(&["start", "web"]),
            (1, String::new(), format!("vmctl: {text}\n"))
        );
    }
}

#[test]
fn failures_carry_vmds_cause_after_openbsds_message() {
    let missing_base = Failed::because(
        ErrorCode::DISK_MISSING,
        "/var/vm/web.qcow2: backing file: /var/vm/base.qcow2: No such file or directory",
    );
    let vmd = FakeVmd::replying(vec![Response::Start(Err(missing_base.clone()))]);
    assert_eq!(
        vmd.run(&["start", "web"]),
        (
            1,
            String::new(),
            "vmctl: could not open disk image(s): /var/vm/web.qcow2: backing file: \
             /var/vm/base.qcow2: No such file or directory\n"
                .into()
        )
    );
    let vmd = FakeVmd::replying(vec![Response::Start(Err(Failed::because(
        ErrorCode::EPERM,
        "memory size may not be changed",
    )))]);
    assert_eq!(
        vmd.run(&["start", "web"]).2,
        "vmctl: start vm command failed: Operation not permitted: memory size may not be changed\n"
    );
    // A rejected file: OpenBSD's CTL_FAIL without an errno, then each of
    // the parser's errors.
    let rejected = Failed::because_of_lines(
        ErrorCode(0),
        [
            "/etc/bad.conf:2: syntax error",
            "/etc/bad.conf:5: unknown switch",
        ],
    );
    let vmd = FakeVmd::replying(vec![Response::Ctl(Err(rejected))]);
    assert_eq!(
        vmd.run(&["load", "/etc/bad.conf"]),
        (
            1,
            String::new(),
            "vmctl: command failed: /etc/bad.conf:2: syntax error\n\
             vmctl: /etc/bad.conf:5: unknown switch\n"
                .into()
        )
    );
    // What arrives is printed as text, never as terminal control.
    let sneaky = Failed::because(ErrorCode::CDROM_MISSING, "/tmp/\x1b[2J\nvmctl: started");
    let vmd = FakeVmd::replying(vec![Response::Start(Err(sneaky))]);
    assert_eq!(
        vmd.run(&["start", "web"]).2,
        "vmctl: could not find specified iso image: /tmp/\\u{1b}[2J\\nvmctl: started\n"
    );
}

#[test]
fn vmds_warnings_precede_the_answer() {
    let warning = |text: &str| Response::Warning(Line::new(text));
    let vmd = FakeVmd::replying(vec![
        warning("switch \"nosuch\" not found; interface 0 stays unattached"),
        started(4, "/dev/pts/3"),
    ]);
    assert_eq!(
        vmd.run(&["start", "web"]),
        (
            0,
            String::new(),
            "vmctl: warning: switch \"nosuch\" not found; interface 0 stays unattached\n\
             vmctl: started vm 4 successfully, tty /dev/pts/3\n"
                .into()
        )
    );
    let vmd = FakeVmd::replying(vec![warning("macro \"x\" not used"), Response::Ctl(Ok(()))]);
    assert_eq!(
        vmd.run(&["reload"]),
        (
            0,
            String::new(),
            "vmctl: warning: macro \"x\" not used\n".into()
        )
    );
}

/// A vmd that answers stop and wait requests for VM 3 "web" as the
/// scenario says.
fn stop_vmd(answer: impl Fn(&Request) -> Vec<Response> + Send + Sync + 'static) -> FakeVmd {
    FakeVmd::start(move |request, _, peer| {
        for response in answer(&request) {
            peer.send(&response);
        }
    })
}

#[test]
fn stop_completions() {
    let accepted = stop_vmd(|_| {
        vec![Response::Terminate {
            id: 3,
            result: Ok(()),
        }]
    });
    assert_eq!(
        accepted.run(&["stop", "web"]),
        (
            0,
            String::new(),
            "stopping vm web: requested to shutdown vm 3\n".into()
        )
    );
    assert_eq!(
        accepted.run(&["sto", "-f", "3"]),
        (
            0,
            String::new(),
            "stopping vm: requested to shutdown vm 3\n".into()
        )
    );
    assert_eq!(
        accepted.requests(),
        [
            Request::Terminate {
                target: name("web"),
                force: false,
                wait: false
            },
            Request::Terminate {
                target: VmRef::Id(3),
                force: true,
                wait: false
            },
        ]
    );

    let waited = stop_vmd(|_| {
        vec![
            Response::Terminate {
                id: 3,
                result: Ok(()),
            },
            Response::Terminated { id: 3 },
        ]
    });
    assert_eq!(
        waited.run(&["stop", "-w", "web"]),
        (
            0,
            String::new(),
            "stopping vm web: terminated vm 3\n".into()
        )
    );
    assert_eq!(
        waited.run(&["stop", "-fw", "3"]),
        (0, String::new(), "stopping vm: terminated vm 3\n".into())
    );
    assert_eq!(
        waited.requests()[1],
        Request::Terminate {
            target: VmRef::Id(3),
            force: true,
            wait: true
        }
    );

    let failures = [
        (ErrorCode::ENOENT, "vm not found"),
        (ErrorCode::EINVAL, "failed: Invalid argument"),
        (ErrorCode::EALREADY, "failed: Operation already in progress"),
        (ErrorCode::EPERM, "failed: Operation not permitted"),
        (
            ErrorCode::STOP_INVALID,
            "cannot stop vm that is not running",
        ),
        (ErrorCode::EINTR, "interrupted call"),
        (ErrorCode::EIO, "failed: Input/output error"),
    ];
    for (code, text) in failures {
        let vmd = stop_vmd(move |_| {
            vec![Response::Terminate {
                id: 0,
                result: Err(code),
            }]
        });
        assert_eq!(
            vmd.run(&["stop", "web"]),
            (1, String::new(), format!("stopping vm web: {text}\n"))
        );
        assert_eq!(
            vmd.run(&["stop", "-w", "4"]),
            (1, String::new(), format!("stopping vm: {text}\n"))
        );
        assert_eq!(
            vmd.run(&["wait", "web"]),
            (1, String::new(), format!("waiting for vm web: {text}\n"))
        );
    }

    let gone = FakeVmd::replying(vec![]);
    assert_eq!(
        gone.run(&["stop", "-w", "web"]),
        (
            1,
            String::new(),
            "stopping vm web: vmctl: pipe closed\n".into()
        )
    );
}

#[test]
fn wait_for_termination() {
    let vmd = stop_vmd(|_| vec![Response::Terminated { id: 3 }]);
    assert_eq!(
        vmd.run(&["wait", "web"]),
        (
            0,
            String::new(),
            "waiting for vm web: terminated vm 3\n".into()
        )
    );
    assert_eq!(
        vmd.run(&["w", "3"]),
        (0, String::new(), "waiting for vm: terminated vm 3\n".into())
    );
    assert_eq!(
        vmd.requests(),
        [
            Request::Wait {
                target: name("web")
            },
            Request::Wait {
                target: VmRef::Id(3)
            }
        ]
    );
}

#[test]
fn stop_all_running_vms_in_list_order() {
    let vmd = FakeVmd::start(|request, _, peer| match request {
        Request::Info => listing(&[
            vm_info(2, "beta", Some("/dev/pts/2")),
            vm_info(1, "alpha", Some("/dev/pts/1")),
            vm_info(3, "stopped", None),
        ])
        .iter()
        .for_each(|r| peer.send(r)),
        Request::Terminate { target, .. } if target == name("beta") => {
            peer.send(&Response::Terminate {
                id: 0,
                result: Err(ErrorCode::EPERM),
            })
        }
        Request::Terminate { .. } => {
            peer.send(&Response::Terminate {
                id: 1,
                result: Ok(()),
            });
            peer.send(&Response::Terminated { id: 1 });
        }
        _ => {}
    });
    // One failure does not change the exit status.
    assert_eq!(
        vmd.run(&["stop", "-w", "-a"]),
        (
            0,
            String::new(),
            "stopping vm beta: failed: Operation not permitted\n\
             stopping vm alpha: terminated vm 1\n"
                .into()
        )
    );
    assert_eq!(
        vmd.requests(),
        [
            Request::Info,
            Request::Terminate {
                target: name("beta"),
                force: false,
                wait: true
            },
            Request::Terminate {
                target: name("alpha"),
                force: false,
                wait: true
            },
        ]
    );
    let none = FakeVmd::replying(listing(&[vm_info(3, "stopped", None)]));
    assert_eq!(none.run(&["stop", "-a"]), (0, String::new(), String::new()));
}

/// A vmd that streams `payload` for `send`, then reports `done`.
/// A vmd whose VM writes `payload` as its stream, as a VM process does:
/// then it ends the stream and waits for vmctl's receipt; a successful
/// `done` is only sent if the receipt came.
fn sending_vmd(payload: &'static [u8], started: Response, done: Option<Response>) -> FakeVmd {
    FakeVmd::start(move |_, fds, peer| {
        let mut stream = UnixStream::from(fds.into_iter().next().expect("stream descriptor"));
        peer.send(&started);
        let mut receipt = [0u8; 1];
        if matches!(started, Response::SendStarted(Ok(_))) {
            stream.write_all(payload).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let _ = stream.read(&mut receipt);
        }
        drop(stream);
        match &done {
            Some(Response::SendDone(Ok(()))) if receipt != [SEND_RECEIVED] => {
                peer.send(&Response::SendDone(Err(ErrorCode::EIO)));
            }
            Some(done) => peer.send(done),
            None => {}
        }
    })
}

#[test]
fn send_streams_to_stdout() {
    let payload: &'static [u8] = Box::leak(
        (0..300_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let vmd = sending_vmd(
        payload,
        Response::SendStarted(Ok(3)),
        Some(Response::SendDone(Ok(()))),
    );
    let output = common::run_vmctl(&vmd.socket, &["send", "web"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout == payload, "stream differs");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "vmctl: sent vm web successfully\n"
    );
    let (status, _, err) = vmd.run(&["se", "3"]);
    assert_eq!(
        (status, err.as_str()),
        (0, "vmctl: sent vm 3 successfully\n")
    );
    assert_eq!(
        vmd.requests(),
        [
            Request::Send {
                target: name("web")
            },
            Request::Send {
                target: VmRef::Id(3)
            }
        ]
    );
}

#[test]
fn send_failures() {
    let unknown = sending_vmd(b"", Response::SendStarted(Err(ErrorCode::ENOENT)), None);
    assert_eq!(
        unknown.run(&["send", "ghost"]),
        (1, String::new(), "vmctl: vm not found\n".into())
    );
    // The stream ended but vmd never confirmed it.
    let cut = sending_vmd(b"partial", Response::SendStarted(Ok(1)), None);
    assert_eq!(
        cut.run(&["send", "web"]),
        (1, "partial".into(), "vmctl: pipe closed\n".into())
    );
    let failed = sending_vmd(
        b"partial",
        Response::SendStarted(Ok(1)),
        Some(Response::SendDone(Err(ErrorCode::EIO))),
    );
    let (status, _, err) = failed.run(&["send", "web"]);
    assert_eq!(
        (status, err.as_str()),
        (1, "vmctl: command failed: Input/output error\n")
    );
}

#[test]
fn receive_feeds_stdin_to_vmd() {
    let vmd = FakeVmd::start(|_, fds, peer| {
        let mut stream = UnixStream::from(fds.into_iter().next().expect("stream descriptor"));
        let mut received = Vec::new();
        stream.read_to_end(&mut received).unwrap();
        let expected: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        peer.send(&if received == expected {
            started(12, "/dev/pts/9")
        } else {
            Response::Start(Err(ErrorCode::EINVAL.into()))
        });
    });
    let mut child = common::vmctl_command(&vmd.socket, &["receive", "moved"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        stdin.write_all(&payload).unwrap();
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(
        common::outcome(&output),
        (
            0,
            String::new(),
            "vmctl: started vm 12 successfully, tty /dev/pts/9\n".into()
        )
    );
    assert_eq!(
        vmd.requests(),
        [Request::Receive {
            name: "moved".into()
        }]
    );
}

#[test]
fn receive_reports_an_early_refusal() {
    let vmd = FakeVmd::replying(vec![Response::Start(Err(ErrorCode::ENOENT.into()))]);
    let mut child = common::vmctl_command(&vmd.socket, &["rec", "moved"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // stdin stays open: the refusal alone must end the command.
    let _stdin = child.stdin.take();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        common::outcome(&output),
        (
            1,
            String::new(),
            "vmctl: start vm command failed: No such file or directory\n".into()
        )
    );
}
