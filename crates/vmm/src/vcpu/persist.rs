//! One vCPU's saved state: everything KVM keeps for it that a guest can
//! observe. Taken from a parked vCPU whose last exit was completed (see
//! [`super::run`]), so no instruction is half done.
//!
//! Restoring follows the dependencies between the parts: the CPUID is set
//! when the vCPU is created; the TSC rate before the TSC; the special
//! registers (EFER, control registers, APIC base) before the general ones,
//! the MSRs and the local APIC; the MSRs with the TSC first, so that
//! values relative to it (the TSC deadline) are taken against the right
//! count; the pending events last.

use kvm_bindings::{
    CpuId, Msrs, Xsave, kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use zerocopy::IntoBytes;

use crate::snapshot::kvm_bytes::KvmBytes;

/// MSR_IA32_TSC: restored before the other MSRs.
const MSR_IA32_TSC: u32 = 0x10;
/// The size of the legacy `kvm_xsave` area.
const XSAVE_LEGACY_SIZE: usize = std::mem::size_of::<kvm_xsave>();

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VcpuState {
    pub index: u32,
    /// The CPUID this vCPU was given (`KVM_SET_CPUID2`).
    pub cpuid: Vec<KvmBytes<kvm_cpuid_entry2>>,
    pub regs: KvmBytes<kvm_regs>,
    pub sregs: KvmBytes<kvm_sregs>,
    /// The XSAVE area as `KVM_GET_XSAVE(2)` returns it.
    pub xsave: Vec<u8>,
    pub xcrs: KvmBytes<kvm_xcrs>,
    /// Every MSR of KVM's save list this vCPU could read: index, value.
    pub msrs: Vec<(u32, u64)>,
    pub lapic: KvmBytes<kvm_lapic_state>,
    pub events: KvmBytes<kvm_vcpu_events>,
    pub mp_state: KvmBytes<kvm_mp_state>,
    pub debugregs: KvmBytes<kvm_debugregs>,
    /// The guest's TSC rate in kHz.
    pub tsc_khz: u32,
}

/// What a vCPU ioctl refused, named.
fn ioctl(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// Bytes of XSAVE state this host's KVM exchanges for a vCPU of `vm`.
pub fn xsave_size(vm: &VmFd) -> usize {
    usize::try_from(vm.check_extension_int(Cap::Xsave2))
        .unwrap_or(0)
        .max(XSAVE_LEGACY_SIZE)
}

fn xsave_entries(size: usize) -> usize {
    (size - XSAVE_LEGACY_SIZE).div_ceil(std::mem::size_of::<u32>())
}

fn get_xsave(vcpu: &VcpuFd, size: usize) -> Result<Vec<u8>, String> {
    if size == XSAVE_LEGACY_SIZE {
        return Ok(vcpu
            .get_xsave()
            .map_err(ioctl("KVM_GET_XSAVE"))?
            .as_bytes()
            .to_vec());
    }
    let mut xsave = Xsave::new(xsave_entries(size)).map_err(|e| format!("xsave: {e:?}"))?;
    // SAFETY: the buffer holds `size` bytes, what KVM_CAP_XSAVE2 said
    // the kernel writes.
    unsafe { vcpu.get_xsave2(&mut xsave) }.map_err(ioctl("KVM_GET_XSAVE2"))?;
    Ok(fam_bytes(&xsave, size))
}

/// The first `size` bytes of an XSAVE buffer.
fn fam_bytes(xsave: &Xsave, size: usize) -> Vec<u8> {
    let head = xsave.as_fam_struct_ref().xsave.as_bytes();
    let mut out = head.to_vec();
    for word in xsave.as_slice() {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.truncate(size);
    out
}

fn set_xsave(vcpu: &VcpuFd, bytes: &[u8], size: usize) -> Result<(), String> {
    if bytes.len() > size {
        return Err(format!(
            "XSAVE state of {} bytes where this host has {size}",
            bytes.len()
        ));
    }
    let mut padded = bytes.to_vec();
    padded.resize(size, 0);
    if size == XSAVE_LEGACY_SIZE {
        let area = <kvm_xsave as zerocopy::FromBytes>::read_from_bytes(&padded)
            .map_err(|_| "XSAVE area size".to_string())?;
        // SAFETY: a full legacy area, which is all KVM reads here (no
        // XSAVE2 capability beyond it).
        return unsafe { vcpu.set_xsave(&area) }.map_err(ioctl("KVM_SET_XSAVE"));
    }
    let mut xsave = Xsave::new(xsave_entries(size)).map_err(|e| format!("xsave: {e:?}"))?;
    let (head, tail) = padded.split_at(XSAVE_LEGACY_SIZE);
    let legacy = <kvm_xsave as zerocopy::FromBytes>::read_from_bytes(head)
        .map_err(|_| "XSAVE area size".to_string())?;
    // SAFETY: only the fixed part is replaced; the length of the flexible
    // array stays what `Xsave::new` made it.
    unsafe { xsave.as_mut_fam_struct() }.xsave = legacy;
    for (word, chunk) in xsave.as_mut_slice().iter_mut().zip(tail.chunks(4)) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        *word = u32::from_le_bytes(b);
    }
    // SAFETY: the buffer holds the `size` bytes KVM_CAP_XSAVE2 announced.
    unsafe { vcpu.set_xsave2(&xsave) }.map_err(ioctl("KVM_SET_XSAVE"))
}

/// The MSRs KVM says a VMM should save (`KVM_GET_MSR_INDEX_LIST`).
pub fn msr_list(kvm: &Kvm) -> Result<Vec<u32>, String> {
    Ok(kvm
        .get_msr_index_list()
        .map_err(ioctl("KVM_GET_MSR_INDEX_LIST"))?
        .as_slice()
        .to_vec())
}

/// Reads the MSRs of `indices`; KVM stops at the first it cannot read,
/// which is then left out (it lists some that depend on CPUID bits this
/// guest does not have).
fn get_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<(u32, u64)>, String> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(kvm_bindings::KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|e| format!("msrs: {e:?}"))?;
        let read = vcpu.get_msrs(&mut msrs).map_err(ioctl("KVM_GET_MSRS"))?;
        out.extend(msrs.as_slice()[..read].iter().map(|e| (e.index, e.data)));
        let skip = if read < chunk.len() { 1 } else { 0 };
        rest = &rest[(read + skip).min(rest.len())..];
    }
    Ok(out)
}

/// Writes MSRs in order; one this host refuses is logged and skipped so
/// the others still arrive.
fn set_msrs(vcpu: &VcpuFd, index: u32, msrs: &[(u32, u64)]) -> Result<(), String> {
    let mut ordered: Vec<(u32, u64)> = msrs
        .iter()
        .copied()
        .filter(|&(i, _)| i == MSR_IA32_TSC)
        .collect();
    ordered.extend(msrs.iter().copied().filter(|&(i, _)| i != MSR_IA32_TSC));
    let mut rest = &ordered[..];
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(kvm_bindings::KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|e| format!("msrs: {e:?}"))?;
        let written = vcpu.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
        if let Some(&(msr, _)) = chunk.get(written) {
            tracing::warn!("vcpu {index}: this host does not take MSR {msr:#x}; skipped");
            rest = &rest[written + 1..];
        } else {
            rest = &rest[chunk.len()..];
        }
    }
    Ok(())
}

/// Takes the state of a parked vCPU that was given `cpuid`.
pub fn save(
    vcpu: &VcpuFd,
    index: u32,
    cpuid: &CpuId,
    msr_indices: &[u32],
    xsave_size: usize,
) -> Result<VcpuState, String> {
    Ok(VcpuState {
        index,
        cpuid: cpuid.as_slice().iter().copied().map(KvmBytes).collect(),
        regs: KvmBytes(vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?),
        sregs: KvmBytes(vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?),
        xsave: get_xsave(vcpu, xsave_size)?,
        xcrs: KvmBytes(vcpu.get_xcrs().map_err(ioctl("KVM_GET_XCRS"))?),
        msrs: get_msrs(vcpu, msr_indices)?,
        lapic: KvmBytes(vcpu.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?),
        events: KvmBytes(
            vcpu.get_vcpu_events()
                .map_err(ioctl("KVM_GET_VCPU_EVENTS"))?,
        ),
        mp_state: KvmBytes(vcpu.get_mp_state().map_err(ioctl("KVM_GET_MP_STATE"))?),
        debugregs: KvmBytes(vcpu.get_debug_regs().map_err(ioctl("KVM_GET_DEBUGREGS"))?),
        tsc_khz: vcpu.get_tsc_khz().map_err(ioctl("KVM_GET_TSC_KHZ"))?,
    })
}

impl VcpuState {
    /// The CPUID to create the vCPU with.
    pub fn cpuid(&self) -> Result<CpuId, String> {
        let entries: Vec<kvm_cpuid_entry2> = self.cpuid.iter().map(|e| e.0).collect();
        CpuId::from_entries(&entries).map_err(|e| format!("cpuid: {e:?}"))
    }
}

/// Puts a saved state into a new vCPU (created with [`VcpuState::cpuid`])
/// before it first runs.
pub fn restore(vcpu: &VcpuFd, state: &VcpuState, xsave_size: usize) -> Result<(), String> {
    let index = state.index;
    let host_khz = vcpu.get_tsc_khz().unwrap_or(0);
    if state.tsc_khz != 0
        && state.tsc_khz != host_khz
        && let Err(e) = vcpu.set_tsc_khz(state.tsc_khz)
    {
        // Without TSC scaling the guest's TSC runs at this host's rate;
        // kvmclock tells a guest that uses it.
        tracing::warn!(
            "vcpu {index}: TSC at {host_khz} kHz instead of the guest's {} kHz: {e}",
            state.tsc_khz
        );
    }
    vcpu.set_sregs(&state.sregs.0)
        .map_err(ioctl("KVM_SET_SREGS"))?;
    vcpu.set_regs(&state.regs.0)
        .map_err(ioctl("KVM_SET_REGS"))?;
    set_xsave(vcpu, &state.xsave, xsave_size)?;
    vcpu.set_xcrs(&state.xcrs.0)
        .map_err(ioctl("KVM_SET_XCRS"))?;
    set_msrs(vcpu, index, &state.msrs)?;
    vcpu.set_lapic(&state.lapic.0)
        .map_err(ioctl("KVM_SET_LAPIC"))?;
    vcpu.set_mp_state(state.mp_state.0)
        .map_err(ioctl("KVM_SET_MP_STATE"))?;
    vcpu.set_vcpu_events(&state.events.0)
        .map_err(ioctl("KVM_SET_VCPU_EVENTS"))?;
    vcpu.set_debug_regs(&state.debugregs.0)
        .map_err(ioctl("KVM_SET_DEBUGREGS"))?;
    Ok(())
}
