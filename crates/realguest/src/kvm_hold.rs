//! A KVM VM held open, and never run, for as long as a runner inside the
//! outer guest lives. When the number of KVM VMs goes from none to one,
//! the outer kernel switches on the preempt notifiers' static key, which
//! it patches into `__schedule` through breakpoints while the other CPU
//! runs, and enables SVM on every CPU; when the last VM ends it undoes
//! both. vmd starts a new VM (a new process) for every guest boot, so a run
//! crosses these paths at every boot. Under emulated SVM the outer guest
//! was seen frozen with one CPU in the breakpoint handler and the other in
//! `__schedule` (docs/real-guests.md, "Findings"); with one VM held for
//! the whole run, the count never reaches zero and nothing is patched or
//! switched. On hardware nothing of this matters, and nothing here is
//! needed.

use kvm_ioctls::{Kvm, VcpuFd, VmFd};

/// The held VM, ended when dropped.
pub struct KvmHold {
    _vcpu: VcpuFd,
    _vm: VmFd,
}

/// Creates the VM (with an in-kernel interrupt controller, as vmd's and
/// QEMU's have) and one vCPU, and keeps them.
pub fn hold() -> Result<KvmHold, String> {
    let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    vm.create_irq_chip()
        .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    Ok(KvmHold {
        _vcpu: vcpu,
        _vm: vm,
    })
}

/// [`hold`], and the line that says how it went.
pub fn hold_noted() -> (Option<KvmHold>, String) {
    match hold() {
        Ok(held) => (Some(held), "an idle KVM VM held for the run".into()),
        Err(e) => (None, format!("no idle KVM VM held: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn holds_a_vm_with_a_vcpu() {
        testkit::needs!(kvm);
        let held = hold().unwrap();
        let link = |f: &dyn AsRawFd| {
            std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
                .unwrap()
                .display()
                .to_string()
        };
        assert_eq!(link(&held._vm), "anon_inode:kvm-vm");
        assert!(link(&held._vcpu).starts_with("anon_inode:kvm-vcpu"));
    }
}
