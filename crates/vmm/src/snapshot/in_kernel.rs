//! The devices KVM emulates for the whole VM: the two 8259 PICs, the
//! IOAPIC, the 8254 PIT, and the clock kvmclock guests read. (Each vCPU's
//! local APIC travels with the vCPU.)

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_clock_data, kvm_irqchip,
    kvm_pit_state2,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::kvm_bytes::KvmBytes;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InKernelState {
    pub pic_master: KvmBytes<kvm_irqchip>,
    pub pic_slave: KvmBytes<kvm_irqchip>,
    pub ioapic: KvmBytes<kvm_irqchip>,
    pub pit: KvmBytes<kvm_pit_state2>,
    /// kvmclock when the VM was paused.
    pub clock: KvmBytes<kvm_clock_data>,
}

fn chip(vm: &VmFd, chip_id: u32) -> Result<KvmBytes<kvm_irqchip>, String> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(|e| format!("KVM_GET_IRQCHIP {chip_id}: {e}"))?;
    Ok(KvmBytes(chip))
}

/// Takes the state of a paused VM whose clock stood at `clock`.
pub fn save(vm: &VmFd, clock: kvm_clock_data) -> Result<InKernelState, String> {
    Ok(InKernelState {
        pic_master: chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: chip(vm, KVM_IRQCHIP_IOAPIC)?,
        pit: KvmBytes(vm.get_pit2().map_err(|e| format!("KVM_GET_PIT2: {e}"))?),
        clock: KvmBytes(clock),
    })
}

/// Sets the interrupt controllers and the PIT; the clock is set when the
/// VM resumes (see [`crate::vm::Vm::resume`]).
pub fn restore(vm: &VmFd, state: &InKernelState) -> Result<(), String> {
    for (chip, id) in [
        (&state.pic_master, KVM_IRQCHIP_PIC_MASTER),
        (&state.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
        (&state.ioapic, KVM_IRQCHIP_IOAPIC),
    ] {
        if chip.0.chip_id != id {
            return Err(format!(
                "interrupt controller {} saved as {id}",
                chip.0.chip_id
            ));
        }
        vm.set_irqchip(&chip.0)
            .map_err(|e| format!("KVM_SET_IRQCHIP {id}: {e}"))?;
    }
    vm.set_pit2(&state.pit.0)
        .map_err(|e| format!("KVM_SET_PIT2: {e}"))
}
