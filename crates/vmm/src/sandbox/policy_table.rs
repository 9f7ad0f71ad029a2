//! The VM process's system-call policy tested whole: every x86-64 system
//! call number, for the process baseline and for each kind of thread,
//! run through the compiled filters exactly as the kernel stacks them,
//! against the policy written out below. A call let through that the
//! table does not name fails the test, and so does one the table names
//! that is refused: spot checks of a few dangerous calls would not notice
//! `clone` losing its `CLONE_THREAD` condition.
//!
//! The compiled programs are classic BPF; the kernel cannot be asked what
//! a filter would answer without making the call, so a small interpreter
//! of the instructions seccomp filters use runs them here (no crate does
//! this; seccompiler only compiles).

use seccompiler::{BpfProgram, sock_filter};

use super::syscalls::{REFUSED, ThreadKind, baseline, for_kind, refuse_with};

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Above the highest x86-64 system call number.
const SYSCALL_LIMIT: i64 = 512;

/// What the kernel would do with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    Kill,
    Errno(i32),
}

/// One call as a filter sees it (`struct seccomp_data`).
#[derive(Debug, Clone, Copy)]
struct Call {
    nr: i64,
    args: [u64; 6],
}

impl Call {
    fn plain(nr: i64) -> Call {
        Call { nr, args: [0; 6] }
    }

    fn with(nr: i64, index: usize, value: u64) -> Call {
        let mut call = Call::plain(nr);
        call.args[index] = value;
        call
    }

    fn word(&self, offset: u32) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(self.nr as u32).to_le_bytes());
        data[4..8].copy_from_slice(&AUDIT_ARCH_X86_64.to_le_bytes());
        for (i, arg) in self.args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        let at = offset as usize;
        u32::from_le_bytes(data[at..at + 4].try_into().expect("an aligned word"))
    }
}

/// Runs one classic-BPF seccomp program on `call`; the return value.
fn run(program: &[sock_filter], call: &Call) -> u32 {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    loop {
        let insn = &program[pc];
        let k = insn.k;
        pc += 1;
        match insn.code & 0x07 {
            // BPF_LD: W ABS, IMM, MEM
            0x00 => match insn.code & 0xe0 {
                0x20 => a = call.word(k),
                0x00 => a = k,
                0x60 => a = mem[k as usize],
                other => panic!("unexpected load mode {other:#x}"),
            },
            // BPF_LDX: IMM, MEM
            0x01 => match insn.code & 0xe0 {
                0x00 => x = k,
                0x60 => x = mem[k as usize],
                other => panic!("unexpected ldx mode {other:#x}"),
            },
            0x02 => mem[k as usize] = a,
            0x03 => mem[k as usize] = x,
            // BPF_ALU
            0x04 => {
                let operand = if insn.code & 0x08 != 0 { x } else { k };
                a = match insn.code & 0xf0 {
                    0x00 => a.wrapping_add(operand),
                    0x10 => a.wrapping_sub(operand),
                    0x40 => a | operand,
                    0x50 => a & operand,
                    0x60 => a.wrapping_shl(operand),
                    0x70 => a.wrapping_shr(operand),
                    0x80 => a.wrapping_neg(),
                    other => panic!("unexpected alu op {other:#x}"),
                };
            }
            // BPF_JMP
            0x05 => {
                let operand = if insn.code & 0x08 != 0 { x } else { k };
                let taken = match insn.code & 0xf0 {
                    0x00 => {
                        pc += k as usize;
                        continue;
                    }
                    0x10 => a == operand,
                    0x20 => a > operand,
                    0x30 => a >= operand,
                    0x40 => a & operand != 0,
                    other => panic!("unexpected jump {other:#x}"),
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            // BPF_RET: K or A
            0x06 => return if insn.code & 0x10 != 0 { a } else { k },
            // BPF_MISC: TAX, TXA
            _ => {
                if insn.code & 0x80 != 0 {
                    a = x;
                } else {
                    x = a;
                }
            }
        }
    }
}

/// The kernel's verdict for a stack of filters: the most severe action
/// any of them returns (kill, then errno, then allow).
fn verdict(filters: &[BpfProgram], call: &Call) -> Verdict {
    let mut worst = Verdict::Allow;
    for filter in filters {
        let ret = run(filter, call);
        let this = match ret & 0xffff_0000 {
            RET_KILL_PROCESS | 0 => Verdict::Kill,
            RET_ERRNO => Verdict::Errno((ret & 0xffff) as i32),
            RET_ALLOW => Verdict::Allow,
            other => panic!("unexpected action {other:#x}"),
        };
        worst = match (worst, this) {
            (Verdict::Kill, _) | (_, Verdict::Kill) => Verdict::Kill,
            (Verdict::Errno(e), _) | (_, Verdict::Errno(e)) => Verdict::Errno(e),
            _ => Verdict::Allow,
        };
    }
    worst
}

/// The policy. Calls every thread may make with any arguments.
const COMMON: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_sched_yield,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getrandom,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_fcntl,
    libc::SYS_seccomp,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_lseek,
    libc::SYS_poll,
    libc::SYS_ppoll,
];

/// Device threads: queues, timers, disk and tap I/O.
const DEVICE: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_ftruncate,
];

/// Control threads: vmd's channel, send and receive, new threads.
const CONTROL: &[i64] = &[
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_recvfrom,
    libc::SYS_shutdown,
    libc::SYS_flock,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_ctl,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prctl,
    libc::SYS_sched_getaffinity,
];

/// Building the VM, before the threads narrow themselves (the baseline).
const SETUP: &[i64] = &[
    libc::SYS_memfd_create,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_dup,
    libc::SYS_prlimit64,
    libc::SYS_rt_sigaction,
    libc::SYS_set_tid_address,
];

/// The calls whose arguments decide, and the kinds that have them at all.
const CONDITIONAL: &[i64] = &[
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_ioctl,
    libc::SYS_sendto,
    libc::SYS_tgkill,
    libc::SYS_clone,
];

/// The filters a thread of `kind` runs under (None: the process baseline,
/// which the main thread keeps until it narrows itself).
fn stack(kind: Option<ThreadKind>, pid: u32) -> Vec<BpfProgram> {
    let mut filters = vec![baseline(pid)];
    filters.extend(REFUSED.iter().map(|&(nr, errno)| refuse_with(nr, errno)));
    if let Some(kind) = kind {
        filters.push(for_kind(kind, pid));
    }
    filters
}

/// The calls `kind` may make whatever the arguments.
fn unconditional(kind: Option<ThreadKind>) -> Vec<i64> {
    let mut list = COMMON.to_vec();
    match kind {
        Some(ThreadKind::Vcpu) => {}
        Some(ThreadKind::Device) => list.extend(DEVICE),
        Some(ThreadKind::Control) => list.extend(CONTROL),
        None => {
            list.extend(DEVICE);
            list.extend(CONTROL);
            list.extend(SETUP);
        }
    }
    list
}

const KINDS: [(&str, Option<ThreadKind>); 4] = [
    ("baseline", None),
    ("vcpu", Some(ThreadKind::Vcpu)),
    ("device", Some(ThreadKind::Device)),
    ("control", Some(ThreadKind::Control)),
];

#[test]
fn every_system_call_number_gets_the_documented_verdict() {
    let pid = 4242;
    for (name, kind) in KINDS {
        let filters = stack(kind, pid);
        let allowed = unconditional(kind);
        for nr in 0..SYSCALL_LIMIT {
            if CONDITIONAL.contains(&nr) {
                continue;
            }
            let expected = if let Some(&(_, errno)) = REFUSED.iter().find(|(r, _)| *r == nr) {
                Verdict::Errno(errno)
            } else if allowed.contains(&nr) {
                Verdict::Allow
            } else {
                Verdict::Kill
            };
            assert_eq!(
                verdict(&filters, &Call::plain(nr)),
                expected,
                "{name} thread, system call {nr}"
            );
        }
    }
}

#[test]
fn argument_conditions_hold_for_every_kind() {
    let pid = 4242;
    let exec = libc::PROT_READ as u64 | libc::PROT_EXEC as u64;
    let kvm_ioctl = 0xae80; // KVM_RUN
    for (name, kind) in KINDS {
        let filters = stack(kind, pid);
        let check = |call: Call, expected: Verdict, what: &str| {
            assert_eq!(verdict(&filters, &call), expected, "{name} thread: {what}");
        };
        let control = matches!(kind, None | Some(ThreadKind::Control));
        let device = matches!(kind, None | Some(ThreadKind::Device));
        let allow_if = |yes: bool| if yes { Verdict::Allow } else { Verdict::Kill };

        // Memory, never executable.
        for nr in [libc::SYS_mmap, libc::SYS_mprotect] {
            check(
                Call::with(nr, 2, libc::PROT_READ as u64),
                Verdict::Allow,
                "map",
            );
            check(Call::with(nr, 2, exec), Verdict::Kill, "executable map");
        }
        // KVM's ioctls everywhere; the terminal and tap ones where used.
        check(
            Call::with(libc::SYS_ioctl, 1, kvm_ioctl),
            Verdict::Allow,
            "KVM",
        );
        check(
            Call::with(libc::SYS_ioctl, 1, libc::TCFLSH),
            allow_if(control || device),
            "TCFLSH",
        );
        check(
            Call::with(libc::SYS_ioctl, 1, libc::TUNSETOFFLOAD),
            allow_if(device),
            "TUNSETOFFLOAD",
        );
        check(
            Call::with(libc::SYS_ioctl, 1, libc::TUNSETVNETHDRSZ),
            allow_if(device),
            "TUNSETVNETHDRSZ",
        );
        for request in [libc::TCGETS, libc::TCSETS] {
            check(
                Call::with(libc::SYS_ioctl, 1, request),
                allow_if(control),
                "terminal attributes",
            );
        }
        check(
            Call::with(libc::SYS_ioctl, 1, libc::FIONREAD),
            Verdict::Kill,
            "another ioctl",
        );
        check(
            Call::with(libc::SYS_ioctl, 1, libc::TIOCSTI),
            Verdict::Kill,
            "typing into a terminal",
        );
        // Syslog on the connected socket only, never to an address.
        check(Call::with(libc::SYS_sendto, 4, 0), Verdict::Allow, "sendto");
        check(
            Call::with(libc::SYS_sendto, 4, 0x1000),
            Verdict::Kill,
            "sendto an address",
        );
        // Signals to this process's own threads only.
        check(
            Call::with(libc::SYS_tgkill, 0, u64::from(pid)),
            Verdict::Allow,
            "signal a thread of its own",
        );
        check(
            Call::with(libc::SYS_tgkill, 0, 1),
            Verdict::Kill,
            "signal another process",
        );
        // Threads, never processes.
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD) as u64;
        check(
            Call::with(libc::SYS_clone, 0, thread),
            allow_if(control),
            "a new thread",
        );
        check(
            Call::with(libc::SYS_clone, 0, libc::SIGCHLD as u64),
            Verdict::Kill,
            "a fork",
        );
        check(
            Call::with(
                libc::SYS_clone,
                0,
                (libc::CLONE_VM | libc::CLONE_VFORK) as u64,
            ),
            Verdict::Kill,
            "a vfork",
        );
    }
}

#[test]
fn the_interpreter_agrees_with_the_kernel_on_a_filter() {
    // A filter that allows getpid and makes everything else fail with
    // EPERM, installed on a thread of its own: the kernel's answer for
    // getpid and getppid must be what the interpreter says.
    let filter = refuse_with(libc::SYS_getppid, libc::EPERM);
    assert_eq!(
        verdict(
            std::slice::from_ref(&filter),
            &Call::plain(libc::SYS_getppid)
        ),
        Verdict::Errno(libc::EPERM)
    );
    assert_eq!(
        verdict(
            std::slice::from_ref(&filter),
            &Call::plain(libc::SYS_getpid)
        ),
        Verdict::Allow
    );
    let kernel = std::thread::spawn(move || {
        // SAFETY: PR_SET_NO_NEW_PRIVS with constant arguments, on this
        // thread only.
        let set = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        assert_eq!(set, 0);
        seccompiler::apply_filter(&filter).expect("install the filter");
        // SAFETY: getppid and getpid take no arguments.
        let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        // SAFETY: as above.
        let pid = unsafe { libc::syscall(libc::SYS_getpid) };
        (ppid, errno, pid)
    })
    .join()
    .unwrap();
    assert_eq!((kernel.0, kernel.1), (-1, Some(libc::EPERM)));
    assert!(kernel.2 > 0);
}
