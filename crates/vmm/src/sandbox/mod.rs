//! What a VM process may still do once it runs guest code (docs/architecture.md,
//! "Three kinds of process"; SECURITY.md): nothing but serve its VM.
//!
//! Before building the VM, with every host resource already open, the
//! process locks itself in: no core dumps and no ptrace by its peers,
//! `chroot` into an empty directory, a Landlock ruleset that grants no
//! file access at all, the unprivileged `_vmd` user (which drops every
//! capability), `no_new_privs`, and a seccomp baseline. Each thread then
//! narrows itself to its kind ([`confine_thread`]). A system call outside
//! the filters kills the process with SIGSYS, which vmd reports.

#[cfg(test)]
mod policy_table;
mod syscalls;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use landlock::{ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetStatus};
use nix::unistd::{Gid, Uid, chdir, chroot, setgroups, setresgid, setresuid};

pub use syscalls::ThreadKind;

/// Set once the process is confined: threads then install their filters.
static CONFINED: AtomicBool = AtomicBool::new(false);

/// Who the VM process becomes, and where it is locked in.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    pub uid: u32,
    pub gid: u32,
    /// An empty directory to chroot into.
    pub root: &'a Path,
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit with a valid rlimit structure.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn seccomp_error(e: seccompiler::Error) -> io::Error {
    io::Error::other(format!("seccomp: {e}"))
}

/// Confines the calling process; call while it is still single-threaded.
/// Returns whether Landlock could be enforced (older kernels lack it; the
/// chroot and the unprivileged user still keep files out of reach).
pub fn confine_process(identity: &Identity) -> io::Result<bool> {
    // Guest memory must not end up in a core file, nor be read by another
    // VM process of the same user through ptrace.
    set_limit(libc::RLIMIT_CORE, 0, 0)?;
    set_limit(libc::RLIMIT_MEMLOCK, 0, 0)?;
    set_limit(libc::RLIMIT_NOFILE, 4096, 4096)?;
    // SAFETY: PR_SET_DUMPABLE with a constant argument.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }

    chroot(identity.root)?;
    chdir("/")?;
    let landlock = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V6))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self())
        .map_err(|e| io::Error::other(format!("landlock: {e}")))?;
    let enforced = landlock.ruleset != RulesetStatus::NotEnforced;

    let gid = Gid::from_raw(identity.gid);
    setgroups(&[gid])?;
    setresgid(gid, gid, gid)?;
    let uid = Uid::from_raw(identity.uid);
    setresuid(uid, uid, uid)?;
    // SAFETY: PR_SET_NO_NEW_PRIVS with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }

    // glibc sizes its malloc arenas from the CPU count, read from sysfs the
    // first time a thread allocates; a fixed limit keeps it from looking
    // (and keeps the process small).
    // SAFETY: mallopt with a valid parameter.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 4) };

    let pid = std::process::id();
    seccompiler::apply_filter(&syscalls::baseline(pid)).map_err(seccomp_error)?;
    for (syscall, errno) in syscalls::REFUSED {
        seccompiler::apply_filter(&syscalls::refuse_with(syscall, errno)).map_err(seccomp_error)?;
    }
    CONFINED.store(true, Ordering::SeqCst);
    Ok(enforced)
}

/// Narrows the calling thread to what its kind needs. Does nothing in a
/// process that is not confined (the VMM's own tests run VMs in-process).
pub fn confine_thread(kind: ThreadKind) {
    if !CONFINED.load(Ordering::SeqCst) {
        return;
    }
    if let Err(e) = seccompiler::apply_filter(&syscalls::for_kind(kind, std::process::id())) {
        // A thread that cannot narrow itself must not run unconfined.
        tracing::error!("sandbox: {kind:?} thread: {e}");
        std::process::abort();
    }
}

/// Spawns a named thread that first narrows itself to `kind`.
pub fn spawn<F, T>(
    kind: ThreadKind,
    name: String,
    body: F,
) -> io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(move || {
        confine_thread(kind);
        body()
    })
}

/// Whether the process has been confined.
pub fn is_confined() -> bool {
    CONFINED.load(Ordering::SeqCst)
}
