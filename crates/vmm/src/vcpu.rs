//! One vCPU thread: `KVM_RUN`, then hand each exit to the bus that owns the
//! address, until the VM pauses or ends.

use std::sync::{Arc, Mutex, MutexGuard};

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use proto::vmchannel::ExitReason;

use crate::bus::Bus;
use crate::lifecycle::{self, Lifecycle};

pub mod persist;

/// Where the vCPU's exits go.
pub struct VcpuContext {
    pub vm_name: String,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub lifecycle: Arc<Lifecycle>,
}

/// The x86 state at power-on for firmware boot (docs/machine.md, "Boot"): real mode at
/// F000:FFF0 with CS based at 0xF0000, where the firmware's reset vector
/// lives in its copy below 1 MiB.
pub fn set_reset_state(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    let mut sregs = vcpu.get_sregs()?;
    sregs.cs.selector = 0xf000;
    sregs.cs.base = 0xf_0000;
    sregs.cs.limit = 0xffff;
    sregs.cr0 = 0x6000_0010;
    vcpu.set_sregs(&sregs)?;
    let regs = kvm_regs {
        rip: 0xfff0,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
}

/// KVM's `KVM_EXIT_INTERNAL_ERROR` sub-errors worth naming in the log.
fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "emulation failure",
        2 => "simultaneous exception",
        3 => "delivery event failure",
        4 => "unexpected exit reason",
        _ => "internal error",
    }
}

/// A one-paragraph register dump for the log.
pub fn describe_registers(vcpu: &VcpuFd) -> String {
    let regs = vcpu.get_regs().unwrap_or_default();
    let sregs: kvm_sregs = vcpu.get_sregs().unwrap_or_default();
    format!(
        "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} \
         rsi={:#x} rdi={:#x} rbp={:#x} cs={:#x}(base {:#x}) ss={:#x} ds={:#x} \
         cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
        regs.rip,
        regs.rsp,
        regs.rflags,
        regs.rax,
        regs.rbx,
        regs.rcx,
        regs.rdx,
        regs.rsi,
        regs.rdi,
        regs.rbp,
        sregs.cs.selector,
        sregs.cs.base,
        sregs.ss.selector,
        sregs.ds.selector,
        sregs.cr0,
        sregs.cr3,
        sregs.cr4,
        sregs.efer,
    )
}

/// A vCPU shared between its thread, which runs it, and the control
/// thread, which reads or sets its state while it is parked.
pub type SharedVcpu = Arc<Mutex<VcpuFd>>;

fn lock(vcpu: &SharedVcpu) -> MutexGuard<'_, VcpuFd> {
    vcpu.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs vCPU `index` until the VM ends. The thread holds the vCPU only
/// while inside `KVM_RUN` and while handling the exit.
pub fn run(shared: SharedVcpu, index: u32, ctx: VcpuContext) {
    let run_area = lock(&shared).get_kvm_run() as *mut kvm_bindings::kvm_run;
    lifecycle::register_kvm_run(run_area);
    // Taken off the list of threads to kick when this function returns,
    // before the thread ends.
    let _registration = ctx.lifecycle.add_vcpu_thread();
    // A guest using kvmclock learns it was paused (no soft-lockup alarm);
    // one that does not answers EINVAL, which is fine.
    let resumed = || {
        let _ = lock(&shared).kvmclock_ctrl();
    };
    // KVM completes an I/O or MMIO exit on the next KVM_RUN; until then
    // the vCPU's registers do not show it. Before parking for a pause the
    // thread re-enters once with immediate_exit set, which completes the
    // instruction without running the guest further.
    let mut half_done = false;
    loop {
        let finish_only = half_done && ctx.lifecycle.pause_requested();
        let mut vcpu = if finish_only {
            let mut vcpu = lock(&shared);
            vcpu.set_kvm_immediate_exit(1);
            vcpu
        } else {
            // A kick that arrived before registration is covered by
            // this check.
            if !ctx.lifecycle.vcpu_may_run(resumed) {
                break;
            }
            lock(&shared).set_kvm_immediate_exit(0);
            // A kick between the check above and clearing the flag would
            // be lost; look again now that the flag is clear (and without
            // holding the vCPU, which a pause needs).
            if ctx.lifecycle.needs_attention() {
                continue;
            }
            lock(&shared)
        };
        let io_size = || {
            // SAFETY: run_area is this vCPU's live kvm_run mapping, and KVM
            // writes the exit's union only inside KVM_RUN, which is over.
            let exit = unsafe { &(*run_area).__bindgen_anon_1 };
            // SAFETY: the io member is valid after an IO exit, the only
            // time this is called.
            usize::from(unsafe { exit.io }.size).max(1)
        };
        let result = vcpu.run();
        half_done = result.is_ok();
        match result {
            Ok(VcpuExit::IoIn(port, data)) => {
                let size = io_size();
                for chunk in data.chunks_mut(size) {
                    if !ctx.pio.read(u64::from(port), chunk) {
                        chunk.fill(0xff);
                    }
                }
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                let size = io_size();
                for chunk in data.chunks(size) {
                    ctx.pio.write(u64::from(port), chunk);
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !ctx.mmio.read(addr, data) {
                    tracing::trace!("{}: unhandled mmio read at {addr:#x}", ctx.vm_name);
                    data.fill(0xff);
                }
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !ctx.mmio.write(addr, data) {
                    tracing::trace!("{}: unhandled mmio write at {addr:#x}", ctx.vm_name);
                }
            }
            Ok(VcpuExit::Shutdown) => {
                // Linux guests reboot this way too; on Intel the registers
                // tell a crash from a requested reset (on AMD, KVM has
                // already put the vCPU back in its reset state).
                tracing::info!(
                    "{}: vcpu {index}: triple fault, resetting: {}",
                    ctx.vm_name,
                    describe_registers(&vcpu)
                );
                ctx.lifecycle.request_exit(ExitReason::Reboot);
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => {
                    ctx.lifecycle.request_exit(ExitReason::PowerOff)
                }
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                    ctx.lifecycle.request_exit(ExitReason::Reboot)
                }
                other => fail(&vcpu, index, &ctx, &format!("system event {other}")),
            },
            Ok(VcpuExit::Hlt) => {
                // Only reachable without an in-kernel LAPIC; wait to be kicked.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(VcpuExit::Intr) => half_done = false,
            Ok(VcpuExit::InternalError) => {
                // SAFETY: as for `io_size`.
                let exit = unsafe { &(*run_area).__bindgen_anon_1 };
                // SAFETY: KVM filled the internal-error member for this exit.
                let suberror = unsafe { exit.internal }.suberror;
                let what = internal_error_name(suberror);
                fail(&vcpu, index, &ctx, what);
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => fail(
                &vcpu,
                index,
                &ctx,
                &format!("entry failure (reason {reason:#x}, cpu {cpu})"),
            ),
            Ok(other) => {
                let what = format!("unexpected exit {other:?}");
                fail(&vcpu, index, &ctx, &what);
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => fail(&vcpu, index, &ctx, &format!("KVM_RUN failed: {e}")),
        }
    }
    lifecycle::register_kvm_run(std::ptr::null_mut());
}

fn fail(vcpu: &VcpuFd, index: u32, ctx: &VcpuContext, what: &str) {
    let regs = describe_registers(vcpu);
    tracing::error!("{}: vcpu {index}: {what}: {regs}", ctx.vm_name);
    ctx.lifecycle
        .request_exit(ExitReason::Error(format!("vcpu {index}: {what}")));
}
