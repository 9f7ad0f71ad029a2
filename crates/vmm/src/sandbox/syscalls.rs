//! The system calls each kind of thread of a VM process needs, as seccomp
//! filters (seccompiler). Anything else kills the process.
//!
//! Three kinds of thread run after the VM is built: vCPUs (`KVM_RUN` and
//! device emulation on port and MMIO exits), device threads (virtqueues,
//! timers, the console relay: descriptor I/O on the disks, taps, pty and
//! eventfds) and control threads (vmd's channel, pause, threads spawned
//! later). Every thread first inherits the process-wide baseline, the union
//! of the three plus what building the VM takes; each then narrows itself
//! to its kind.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Which filter a thread installs on itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    Vcpu,
    Device,
    Control,
}

/// A syscall and the conditions under which it is allowed (empty: always).
type Allowed = (i64, Vec<SeccompRule>);

fn always(syscall: i64) -> Allowed {
    (syscall, Vec::new())
}

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
        .expect("a valid seccomp condition")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("a valid seccomp rule")
}

/// Memory may be mapped and protected, but never executable: a guest that
/// takes over a thread cannot bring in code.
fn no_exec(syscall: i64, prot_arg: u8) -> Allowed {
    (
        syscall,
        vec![rule(vec![condition(
            prot_arg,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )])],
    )
}

/// ioctl requests of the KVM type (`_IOC_TYPE` 0xAE) and the listed ones.
fn ioctls(extra: &[u64]) -> Allowed {
    let mut rules = vec![rule(vec![condition(
        1,
        SeccompCmpOp::MaskedEq(0xff00),
        0xae00,
    )])];
    for &request in extra {
        rules.push(rule(vec![condition(1, SeccompCmpOp::Eq, request)]));
    }
    (libc::SYS_ioctl, rules)
}

/// Signals only to this process's own threads (vCPU kicks, abort).
fn own_threads(pid: u32) -> Vec<Allowed> {
    vec![(
        libc::SYS_tgkill,
        vec![rule(vec![condition(0, SeccompCmpOp::Eq, u64::from(pid))])],
    )]
}

/// System calls that fail with an error instead of killing. The allow
/// lists let them through so that these separate filters decide:
/// - glibc falls back from clone3 to clone, which may only make threads;
/// - the syslog client reconnects after a syslog restart, which must fail
///   quietly rather than end the VM;
/// - library code probing files (time zone, sysfs) gets a plain refusal —
///   the chroot and Landlock would refuse the access anyway.
pub const REFUSED: [(i64, i32); 4] = [
    (libc::SYS_clone3, libc::ENOSYS),
    (libc::SYS_socket, libc::EACCES),
    (libc::SYS_openat, libc::EACCES),
    (libc::SYS_open, libc::EACCES),
];

/// What every thread does: memory, locks, time, signals, exit, logging.
fn common(pid: u32) -> Vec<Allowed> {
    let mut list: Vec<Allowed> = REFUSED
        .iter()
        .map(|&(syscall, _)| always(syscall))
        .collect();
    list.extend([
        always(libc::SYS_read),
        always(libc::SYS_write),
        always(libc::SYS_readv),
        always(libc::SYS_writev),
        always(libc::SYS_close),
        always(libc::SYS_futex),
        no_exec(libc::SYS_mmap, 2),
        no_exec(libc::SYS_mprotect, 2),
        always(libc::SYS_munmap),
        always(libc::SYS_mremap),
        always(libc::SYS_madvise),
        always(libc::SYS_brk),
        always(libc::SYS_rt_sigprocmask),
        always(libc::SYS_rt_sigreturn),
        always(libc::SYS_sigaltstack),
        always(libc::SYS_clock_gettime),
        always(libc::SYS_clock_nanosleep),
        always(libc::SYS_nanosleep),
        always(libc::SYS_sched_yield),
        always(libc::SYS_getpid),
        always(libc::SYS_gettid),
        always(libc::SYS_getrandom),
        always(libc::SYS_exit),
        always(libc::SYS_exit_group),
        always(libc::SYS_fcntl),
        // Threads narrow themselves after the baseline is in place; more
        // filters can only take rights away.
        always(libc::SYS_seccomp),
        always(libc::SYS_fstat),
        // The standard library asks file metadata through statx; with the
        // process chrooted and under Landlock only open descriptors answer.
        always(libc::SYS_statx),
        always(libc::SYS_newfstatat),
        always(libc::SYS_lseek),
        always(libc::SYS_poll),
        always(libc::SYS_ppoll),
        // Log lines to syslog go out on the already connected socket.
        (
            libc::SYS_sendto,
            vec![rule(vec![condition(4, SeccompCmpOp::Eq, 0)])],
        ),
    ]);
    list.extend(own_threads(pid));
    list
}

fn vcpu() -> Vec<Allowed> {
    // Port and MMIO exits reach device models that re-register ioeventfds
    // and MSI routes: all of that is KVM ioctls.
    vec![ioctls(&[])]
}

fn device() -> Vec<Allowed> {
    vec![
        always(libc::SYS_epoll_wait),
        always(libc::SYS_epoll_pwait),
        always(libc::SYS_epoll_ctl),
        always(libc::SYS_pread64),
        always(libc::SYS_pwrite64),
        always(libc::SYS_preadv),
        always(libc::SYS_pwritev),
        always(libc::SYS_preadv2),
        always(libc::SYS_pwritev2),
        always(libc::SYS_fsync),
        always(libc::SYS_fdatasync),
        always(libc::SYS_fallocate),
        always(libc::SYS_ftruncate),
        ioctls(&[libc::TCFLSH, libc::TUNSETOFFLOAD, libc::TUNSETVNETHDRSZ]),
    ]
}

fn control() -> Vec<Allowed> {
    vec![
        always(libc::SYS_recvmsg),
        always(libc::SYS_sendmsg),
        always(libc::SYS_recvfrom),
        // A send ends its stream for the reader before it waits for the
        // receipt.
        always(libc::SYS_shutdown),
        // A VM sent away lets go of its disk images' locks before its
        // process ends, for the receiver.
        always(libc::SYS_flock),
        always(libc::SYS_epoll_wait),
        always(libc::SYS_epoll_ctl),
        ioctls(&[libc::TCFLSH, libc::TCGETS, libc::TCSETS]),
        // New threads (never new processes): glibc tries clone3 first and
        // falls back to clone, which may only create threads.
        (
            libc::SYS_clone,
            vec![rule(vec![condition(
                0,
                SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
                libc::CLONE_THREAD as u64,
            )])],
        ),
        always(libc::SYS_set_robust_list),
        always(libc::SYS_rseq),
        always(libc::SYS_prctl),
        always(libc::SYS_sched_getaffinity),
    ]
}

/// What building the VM adds: guest memory, eventfds, epoll sets, the
/// first threads.
fn setup() -> Vec<Allowed> {
    vec![
        always(libc::SYS_memfd_create),
        always(libc::SYS_eventfd2),
        always(libc::SYS_epoll_create1),
        always(libc::SYS_dup),
        always(libc::SYS_prlimit64),
        always(libc::SYS_rt_sigaction),
        always(libc::SYS_set_tid_address),
    ]
}

fn merge(lists: Vec<Vec<Allowed>>) -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (syscall, rules) in lists.into_iter().flatten() {
        match map.get_mut(&syscall) {
            // An unconditional allowance covers every conditional one.
            Some(existing) if existing.is_empty() => {}
            Some(_) if rules.is_empty() => {
                map.insert(syscall, Vec::new());
            }
            Some(existing) => existing.extend(rules),
            None => {
                map.insert(syscall, rules);
            }
        }
    }
    map
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, mismatch: SeccompAction) -> BpfProgram {
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .expect("a valid seccomp filter");
    filter.try_into().expect("a filter that compiles to BPF")
}

/// The process-wide filter installed before the VM is built.
pub fn baseline(pid: u32) -> BpfProgram {
    compile(
        merge(vec![common(pid), vcpu(), device(), control(), setup()]),
        SeccompAction::KillProcess,
    )
}

/// The filter a thread of `kind` adds on top of the baseline.
pub fn for_kind(kind: ThreadKind, pid: u32) -> BpfProgram {
    let specific = match kind {
        ThreadKind::Vcpu => vcpu(),
        ThreadKind::Device => device(),
        ThreadKind::Control => control(),
    };
    compile(
        merge(vec![common(pid), specific]),
        SeccompAction::KillProcess,
    )
}

/// A filter that makes `syscall` fail with `errno` and lets everything
/// else through (the other filters decide about those). Used where an
/// error beats killing (see `confine_process`).
pub fn refuse_with(syscall: i64, errno: i32) -> BpfProgram {
    let mut rules = BTreeMap::new();
    rules.insert(syscall, Vec::new());
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        TargetArch::x86_64,
    )
    .expect("a valid seccomp filter");
    filter.try_into().expect("a filter that compiles to BPF")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        let pid = std::process::id();
        assert!(!baseline(pid).is_empty());
        for kind in [ThreadKind::Vcpu, ThreadKind::Device, ThreadKind::Control] {
            assert!(!for_kind(kind, pid).is_empty());
        }
        assert!(!refuse_with(libc::SYS_clone3, libc::ENOSYS).is_empty());
    }

    /// A call allowed outright in one list stays allowed outright when
    /// another list allows it only under conditions, in either order:
    /// merging must never narrow what a list grants.
    #[test]
    fn an_unconditional_allowance_covers_conditional_ones() {
        let conditional = || {
            (
                libc::SYS_ioctl,
                vec![rule(vec![condition(1, SeccompCmpOp::Eq, 7)])],
            )
        };
        for lists in [
            vec![vec![always(libc::SYS_ioctl)], vec![conditional()]],
            vec![vec![conditional()], vec![always(libc::SYS_ioctl)]],
        ] {
            let merged = merge(lists);
            assert_eq!(merged.get(&libc::SYS_ioctl).map(Vec::len), Some(0));
        }
        let both = merge(vec![vec![conditional()], vec![conditional()]]);
        assert_eq!(both.get(&libc::SYS_ioctl).map(Vec::len), Some(2));
    }

    #[test]
    fn kinds_are_narrower_than_the_baseline() {
        let pid = 1;
        let all = merge(vec![common(pid), vcpu(), device(), control(), setup()]);
        for list in [vcpu(), device(), control()] {
            for (syscall, _) in list {
                assert!(all.contains_key(&syscall));
            }
        }
        let vcpu_only = merge(vec![common(pid), vcpu()]);
        assert!(!vcpu_only.contains_key(&libc::SYS_recvmsg));
        assert!(!vcpu_only.contains_key(&libc::SYS_pwrite64));
        assert!(!all.contains_key(&libc::SYS_execve));
        assert!(!all.contains_key(&libc::SYS_kill));
        assert!(!all.contains_key(&libc::SYS_ptrace));
        assert!(!all.contains_key(&libc::SYS_connect));
        assert!(!all.contains_key(&libc::SYS_process_vm_readv));
        // The refused calls pass the allow lists only to reach their
        // refusal filters.
        for (syscall, _) in REFUSED {
            assert!(all.contains_key(&syscall));
        }
    }
}
