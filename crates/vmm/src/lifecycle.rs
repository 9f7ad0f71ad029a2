//! Run state shared by the vCPU threads, the devices and the control loop:
//! pausing, and the one reason the VM ends.
//!
//! A vCPU blocked in `KVM_RUN` (a halted guest waits there forever) is
//! pulled out with a signal whose handler sets `immediate_exit` in that
//! vCPU's `kvm_run` area, so a kick that lands just before `KVM_RUN` is not
//! lost: the next `KVM_RUN` returns at once. Only threads that are still
//! registered are kicked, and a thread takes itself off the list, under the
//! lock kicks hold, before it ends: no signal goes to a thread that may be
//! gone.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use proto::vmchannel::ExitReason;

/// The signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

thread_local! {
    /// This thread's `kvm_run` area, if it is a vCPU thread.
    static KVM_RUN: Cell<*mut kvm_bindings::kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int) {
    // Only touches a const-initialised thread-local and a byte in a mapping
    // that lives as long as the thread: async-signal-safe.
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: the pointer was registered by this thread from its own
        // live vCPU mapping and is cleared before the mapping goes away.
        let immediate_exit = unsafe { &raw mut (*run).immediate_exit };
        // SAFETY: a byte of that mapping, which KVM reads; written without
        // a reference, as the interrupted code may be using the mapping.
        unsafe { std::ptr::write_volatile(immediate_exit, 1) };
    }
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> std::io::Result<()> {
    // SAFETY: `sigaction` is plain data, for which all zeroes is valid.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_kick as *const () as usize;
    // SAFETY: `sa_mask` is a valid sigset to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: a plain sigaction with a handler that is async-signal-safe; no
    // SA_RESTART so blocking calls see EINTR.
    if unsafe { libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Registers the calling vCPU thread's `kvm_run` for the kick handler.
pub fn register_kvm_run(run: *mut kvm_bindings::kvm_run) {
    KVM_RUN.with(|r| r.set(run));
}

/// What a device I/O thread may do (see [`Lifecycle::device_may_work`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceWork {
    Go,
    /// The VM is paused: guest memory must hold still.
    Hold,
    /// The VM is ending.
    Stop,
}

/// What the control loop learns from the VM.
#[derive(Debug)]
pub enum VmEvent {
    /// The VM must end for this reason.
    Exit(ExitReason),
    /// The guest announced it is shutting down (vmd shows `stopping`).
    GuestShuttingDown,
}

#[derive(Default)]
struct State {
    paused: bool,
    parked: usize,
    exit: Option<ExitReason>,
}

/// Pause and exit coordination for one VM.
pub struct Lifecycle {
    /// Cheap check for vCPUs after every exit: is anything asked of us?
    attention: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
    /// The vCPU threads to kick: each is on the list from its
    /// [`Lifecycle::add_vcpu_thread`] until its [`VcpuRegistration`] goes,
    /// and a kick holds the lock while it signals them.
    threads: Mutex<Vec<libc::pthread_t>>,
    events: Mutex<Sender<VmEvent>>,
}

/// A vCPU thread's place on the list of threads kicks reach. The thread
/// drops it before it ends (a vCPU thread is detached, and its id means
/// nothing once it is gone); dropping it waits for a kick in progress.
#[must_use = "the thread is taken off the list when this is dropped"]
pub struct VcpuRegistration<'l> {
    lifecycle: &'l Lifecycle,
    thread: libc::pthread_t,
}

impl Drop for VcpuRegistration<'_> {
    fn drop(&mut self) {
        let mut threads = self.lifecycle.threads();
        if let Some(at) = threads.iter().position(|&t| {
            // SAFETY: pthread_equal only compares two ids.
            unsafe { libc::pthread_equal(t, self.thread) != 0 }
        }) {
            threads.swap_remove(at);
        }
    }
}

impl Lifecycle {
    pub fn new(events: Sender<VmEvent>) -> Lifecycle {
        Lifecycle {
            attention: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            events: Mutex::new(events),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, Vec<libc::pthread_t>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the calling thread as a vCPU thread to kick, until the
    /// registration returned is dropped, which the thread does before it
    /// ends.
    pub fn add_vcpu_thread(&self) -> VcpuRegistration<'_> {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.threads().push(me);
        VcpuRegistration {
            lifecycle: self,
            thread: me,
        }
    }

    /// Signals every registered vCPU thread; returns how many.
    fn kick_all(&self) -> usize {
        let threads = self.threads();
        for &thread in threads.iter() {
            // SAFETY: the thread is registered, so it has not ended: it
            // deregisters before it ends, which waits for this lock.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
        threads.len()
    }

    /// Ends the VM for `reason`; the first reason wins.
    pub fn request_exit(&self, reason: ExitReason) {
        let mut state = self.lock();
        if state.exit.is_some() {
            return;
        }
        state.exit = Some(reason.clone());
        self.attention.store(true, Ordering::SeqCst);
        drop(state);
        self.changed.notify_all();
        self.kick_all();
        let _ = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(VmEvent::Exit(reason));
    }

    /// Tells the control loop about something the guest did.
    pub fn announce(&self, event: VmEvent) {
        let _ = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(event);
    }

    /// Whether a pause or the VM's end is pending (cheap, for vCPUs).
    pub fn needs_attention(&self) -> bool {
        self.attention.load(Ordering::SeqCst)
    }

    pub fn exit_requested(&self) -> bool {
        self.lock().exit.is_some()
    }

    /// Stops every vCPU outside `KVM_RUN` and waits until all of them are
    /// parked (or the VM is ending).
    pub fn pause(&self, vcpus: usize) {
        let mut state = self.lock();
        state.paused = true;
        self.attention.store(true, Ordering::SeqCst);
        let waiting = |state: &mut State| state.parked < vcpus && state.exit.is_none();
        // Nothing to kick once all are parked or the VM is ending.
        while waiting(&mut state) {
            drop(state);
            self.kick_all();
            state = self
                .changed
                .wait_timeout_while(self.lock(), Duration::from_millis(10), waiting)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Marks the VM paused before any vCPU thread exists (a received VM
    /// restores its state first); the threads park as they start.
    pub fn hold(&self) {
        let mut state = self.lock();
        state.paused = true;
        self.attention.store(true, Ordering::SeqCst);
    }

    /// Whether a pause was asked for: a vCPU finishes what KVM left half
    /// done (an exit to userspace completes on the next `KVM_RUN`) before
    /// it parks, so its saved state is whole.
    pub fn pause_requested(&self) -> bool {
        self.attention.load(Ordering::SeqCst) && self.lock().paused
    }

    pub fn resume(&self) {
        let mut state = self.lock();
        state.paused = false;
        if state.exit.is_none() {
            self.attention.store(false, Ordering::SeqCst);
        }
        drop(state);
        self.changed.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Asked by device I/O threads before they touch guest memory. It does
    /// not block: a thread told to hold still keeps answering its control
    /// requests (a send asks it where its queues stand) and asks again.
    pub fn device_may_work(&self) -> DeviceWork {
        if !self.attention.load(Ordering::SeqCst) {
            return DeviceWork::Go;
        }
        let state = self.lock();
        if state.exit.is_some() {
            DeviceWork::Stop
        } else if state.paused {
            DeviceWork::Hold
        } else {
            DeviceWork::Go
        }
    }

    /// Called by a vCPU between runs. Returns false when the vCPU must stop
    /// for good; parks while the VM is paused (counted, so that
    /// [`Lifecycle::pause`] knows when all of them stopped), and calls
    /// `on_resume` once it may run again after a pause.
    pub fn vcpu_may_run(&self, on_resume: impl FnOnce()) -> bool {
        if !self.attention.load(Ordering::SeqCst) {
            return true;
        }
        let mut state = self.lock();
        let waited = state.paused && state.exit.is_none();
        if waited {
            state.parked += 1;
            self.changed.notify_all();
            while state.paused && state.exit.is_none() {
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.parked -= 1;
        }
        let running = state.exit.is_none();
        drop(state);
        if waited && running {
            on_resume();
        }
        running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn lifecycle() -> Arc<Lifecycle> {
        Arc::new(Lifecycle::new(std::sync::mpsc::channel().0))
    }

    #[test]
    fn a_vcpu_thread_that_ended_is_not_kicked() {
        install_kick_handler().unwrap();
        let lifecycle = lifecycle();
        let (registered, go_on) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let vcpu = {
            let lifecycle = lifecycle.clone();
            std::thread::spawn(move || {
                let _registration = lifecycle.add_vcpu_thread();
                registered.0.send(()).unwrap();
                let _ = go_on.1.recv();
            })
        };
        registered.1.recv().unwrap();
        assert_eq!(lifecycle.kick_all(), 1, "a live vCPU thread is kicked");
        drop(go_on.0);
        vcpu.join().unwrap();
        assert_eq!(lifecycle.kick_all(), 0, "the thread is gone");
        // A VM whose vCPU ended: pausing it signals nobody and returns.
        lifecycle.request_exit(ExitReason::PowerOff);
        lifecycle.pause(1);
    }
}
