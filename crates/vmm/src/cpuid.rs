//! The CPUID a guest sees: what KVM supports on this host, minus what vmm(4)
//! hides from its guests (docs/machine.md, "CPUs"), with the topology of this
//! VM's vCPUs.
//!
//! The local APIC stays visible (KVM emulates one per vCPU and the IOAPIC
//! in the kernel; firmware and SMP need it), and so do x2APIC and the TSC
//! deadline timer, which the in-kernel LAPIC implements.
//!
//! What is hidden is hidden everywhere: a feature masked in one leaf takes
//! along the leaves that describe it, the features built on it, and its
//! XSAVE state components (leaf 0xD), so a guest never sizes or enables
//! state for something it cannot use.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

const fn bit(n: u32) -> u32 {
    1 << n
}

// Leaf 1 ECX.
const ECX_DTES64: u32 = bit(2);
const ECX_MONITOR: u32 = bit(3);
const ECX_DS_CPL: u32 = bit(4);
const ECX_VMX: u32 = bit(5);
const ECX_SMX: u32 = bit(6);
const ECX_EST: u32 = bit(7);
const ECX_TM2: u32 = bit(8);
const ECX_CNXT_ID: u32 = bit(10);
const ECX_SDBG: u32 = bit(11);
const ECX_XTPR: u32 = bit(14);
const ECX_PDCM: u32 = bit(15);
const ECX_PCID: u32 = bit(17);
const ECX_DCA: u32 = bit(18);
/// Bit 31: a hypervisor is present. Guests look for the hypervisor's own
/// leaves (0x4000_0000 on) only when it is set; KVM does not report it as
/// supported, it is the VMM's to say.
const ECX_HYPERVISOR: u32 = bit(31);
const LEAF1_ECX_HIDDEN: u32 = ECX_DTES64
    | ECX_MONITOR
    | ECX_DS_CPL
    | ECX_VMX
    | ECX_SMX
    | ECX_EST
    | ECX_TM2
    | ECX_CNXT_ID
    | ECX_SDBG
    | ECX_XTPR
    | ECX_PDCM
    | ECX_PCID
    | ECX_DCA;

// Leaf 1 EDX.
const EDX_MCE: u32 = bit(7);
const EDX_MTRR: u32 = bit(12);
const EDX_MCA: u32 = bit(14);
const EDX_PSN: u32 = bit(18);
const EDX_DS: u32 = bit(21);
const EDX_ACPI: u32 = bit(22);
const EDX_SS: u32 = bit(27);
const EDX_HTT: u32 = bit(28);
const EDX_TM: u32 = bit(29);
const EDX_PBE: u32 = bit(31);
const LEAF1_EDX_HIDDEN: u32 =
    EDX_MCE | EDX_MTRR | EDX_MCA | EDX_PSN | EDX_DS | EDX_ACPI | EDX_SS | EDX_TM | EDX_PBE;

// Leaf 7 EBX: TSC_ADJUST, SGX, HLE, INVPCID, RTM, PQM, MPX, PQE, AVX-512
// (F, DQ, IFMA, PF, ER, CD, BW, VL), PCOMMIT, PT.
const LEAF7_EBX_HIDDEN: u32 = bit(1)
    | bit(2)
    | bit(4)
    | bit(10)
    | bit(11)
    | bit(12)
    | bit(14)
    | bit(15)
    | bit(16)
    | bit(17)
    | bit(21)
    | bit(22)
    | bit(25)
    | bit(26)
    | bit(27)
    | bit(28)
    | bit(30)
    | bit(31);
/// Leaf 7 ECX: only UMIP is kept.
const LEAF7_ECX_KEPT: u32 = bit(2);
/// Leaf 7 EDX: only MD_CLEAR is kept.
const LEAF7_EDX_KEPT: u32 = bit(10);

// Leaf 0x8000_0001.
const EXT_ECX_SVM: u32 = bit(2);
const EXT_ECX_MWAITX: u32 = bit(29);
const EXT_EDX_RDTSCP: u32 = bit(27);
/// AMD repeats some of leaf 1's EDX bits here, at the same positions
/// (Intel leaves them zero): the hidden ones go here too.
const EXT_EDX_HIDDEN_MIRRORS: u32 = EDX_MCE | EDX_MTRR | EDX_MCA;
/// Leaf 0x8000_0007 EDX: only the invariant TSC is kept.
const POWER_EDX_INVARIANT_TSC: u32 = bit(8);
/// Leaf 0x8000_0008 EBX: AMD speculation controls (IBPB, IBRS, STIBP,
/// their "always on"/preferred variants, SSBD, VIRT_SSBD, SSB_NO).
const EXT8_EBX_SPEC_CTRL: u32 =
    bit(12) | bit(14) | bit(15) | bit(16) | bit(17) | bit(18) | bit(24) | bit(25) | bit(26);

/// KVM's paravirtual leaves (docs/machine.md, "CPUs"): the signature, and
/// the features a guest may use. kvmclock with the stable bit gives Linux
/// guests a clock that does not drift; the rest are handled inside KVM
/// and cost the VMM nothing. Asynchronous page faults are left out: they
/// need the VMM's help to move a VM (send/receive).
pub const KVM_SIGNATURE_LEAF: u32 = 0x4000_0000;
pub const KVM_FEATURES_LEAF: u32 = 0x4000_0001;
/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
pub const KVM_FEATURE_CLOCKSOURCE: u32 = bit(0);
pub const KVM_FEATURE_NOP_IO_DELAY: u32 = bit(1);
pub const KVM_FEATURE_CLOCKSOURCE2: u32 = bit(3);
pub const KVM_FEATURE_STEAL_TIME: u32 = bit(5);
pub const KVM_FEATURE_PV_EOI: u32 = bit(6);
pub const KVM_FEATURE_PV_UNHALT: u32 = bit(7);
pub const KVM_FEATURE_PV_TLB_FLUSH: u32 = bit(9);
pub const KVM_FEATURE_PV_SEND_IPI: u32 = bit(11);
pub const KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: u32 = bit(24);
const KVM_FEATURES_OFFERED: u32 = KVM_FEATURE_CLOCKSOURCE
    | KVM_FEATURE_NOP_IO_DELAY
    | KVM_FEATURE_CLOCKSOURCE2
    | KVM_FEATURE_STEAL_TIME
    | KVM_FEATURE_PV_EOI
    | KVM_FEATURE_PV_UNHALT
    | KVM_FEATURE_PV_TLB_FLUSH
    | KVM_FEATURE_PV_SEND_IPI
    | KVM_FEATURE_CLOCKSOURCE_STABLE_BIT;

/// Applies vmm's masks and the topology of vCPU `index` of `count`, and
/// offers KVM's paravirtual leaves.
pub fn guest_cpuid(supported: &CpuId, index: u32, count: u32) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        adjust(entry, index, count);
    }
    for leaf in [KVM_SIGNATURE_LEAF, KVM_FEATURES_LEAF] {
        if !cpuid.as_slice().iter().any(|e| e.function == leaf) {
            // A KVM that does not list a leaf supports none of its bits;
            // the signature alone still names the hypervisor.
            let mut entry = kvm_cpuid_entry2 {
                function: leaf,
                ..Default::default()
            };
            adjust(&mut entry, index, count);
            let _ = cpuid.push(entry);
        }
    }
    let entries = cpuid.as_mut_slice();
    for &(feature, needs) in DEPENDS {
        if !shown(entries, needs) {
            hide(entries, feature);
        }
    }
    for &(leaf, feature) in DESCRIBED_BY {
        if !shown(entries, feature) {
            for e in entries.iter_mut().filter(|e| e.function == leaf) {
                clear(e);
            }
        }
    }
    trim_xsave(entries);
    cpuid
}

#[derive(Clone, Copy, Debug)]
enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// One feature flag: leaf, sub-leaf, register, bit.
#[derive(Clone, Copy, Debug)]
struct Feature {
    leaf: u32,
    subleaf: u32,
    reg: Reg,
    bit: u32,
}

const fn feature(leaf: u32, subleaf: u32, reg: Reg, bit: u32) -> Feature {
    Feature {
        leaf,
        subleaf,
        reg,
        bit,
    }
}

impl Reg {
    fn of(self, e: &mut kvm_cpuid_entry2) -> &mut u32 {
        match self {
            Reg::Eax => &mut e.eax,
            Reg::Ebx => &mut e.ebx,
            Reg::Ecx => &mut e.ecx,
            Reg::Edx => &mut e.edx,
        }
    }

    fn get(self, e: &kvm_cpuid_entry2) -> u32 {
        match self {
            Reg::Eax => e.eax,
            Reg::Ebx => e.ebx,
            Reg::Ecx => e.ecx,
            Reg::Edx => e.edx,
        }
    }
}

const XSAVE: Feature = feature(1, 0, Reg::Ecx, 26);
const AVX: Feature = feature(1, 0, Reg::Ecx, 28);
const MONITOR: Feature = feature(1, 0, Reg::Ecx, 3);
const HWP: Feature = feature(6, 0, Reg::Eax, 7);
const HDC: Feature = feature(6, 0, Reg::Eax, 13);
const SGX: Feature = feature(7, 0, Reg::Ebx, 2);
const RDT_MONITORING: Feature = feature(7, 0, Reg::Ebx, 12);
const MPX: Feature = feature(7, 0, Reg::Ebx, 14);
const RDT_ALLOCATION: Feature = feature(7, 0, Reg::Ebx, 15);
const AVX512F: Feature = feature(7, 0, Reg::Ebx, 16);
const PT: Feature = feature(7, 0, Reg::Ebx, 25);
const PKU: Feature = feature(7, 0, Reg::Ecx, 3);
const CET_SS: Feature = feature(7, 0, Reg::Ecx, 7);
const KEY_LOCKER: Feature = feature(7, 0, Reg::Ecx, 23);
const ENQCMD: Feature = feature(7, 0, Reg::Ecx, 29);
const UINTR: Feature = feature(7, 0, Reg::Edx, 5);
const HYBRID: Feature = feature(7, 0, Reg::Edx, 15);
const PCONFIG: Feature = feature(7, 0, Reg::Edx, 18);
const ARCH_LBR: Feature = feature(7, 0, Reg::Edx, 19);
const CET_IBT: Feature = feature(7, 0, Reg::Edx, 20);
const AMX_TILE: Feature = feature(7, 0, Reg::Edx, 24);
/// IBRS/IBPB: the IA32_SPEC_CTRL MSR exists.
const SPEC_CTRL: Feature = feature(7, 0, Reg::Edx, 26);
const AVX512_BF16: Feature = feature(7, 1, Reg::Eax, 5);
const AMX_FP16: Feature = feature(7, 1, Reg::Eax, 21);
const AMX_COMPLEX: Feature = feature(7, 1, Reg::Edx, 8);
const AVX10: Feature = feature(7, 1, Reg::Edx, 19);
const APX: Feature = feature(7, 1, Reg::Edx, 21);
const SVM: Feature = feature(0x8000_0001, 0, Reg::Ecx, 2);

/// Features that need another one, which the masks above may hide: a
/// guest would use them without it (AVX-512 BF16 instructions with no
/// opmask state; a write of IA32_SPEC_CTRL, which KVM refuses a guest
/// that was not shown the MSR).
const DEPENDS: &[(Feature, Feature)] = &[
    (AVX512_BF16, AVX512F),
    (AVX10, AVX512F),
    (AMX_FP16, AMX_TILE),
    (AMX_COMPLEX, AMX_TILE),
    // Leaf 7.2 EDX: PSFD, IPRED_CTRL, RRSBA_CTRL, DDPD_U, BHI_CTRL, all
    // bits of IA32_SPEC_CTRL.
    (feature(7, 2, Reg::Edx, 0), SPEC_CTRL),
    (feature(7, 2, Reg::Edx, 1), SPEC_CTRL),
    (feature(7, 2, Reg::Edx, 2), SPEC_CTRL),
    (feature(7, 2, Reg::Edx, 3), SPEC_CTRL),
    (feature(7, 2, Reg::Edx, 4), SPEC_CTRL),
];

/// Leaves that describe one feature, emptied when it is hidden.
const DESCRIBED_BY: &[(u32, Feature)] = &[
    (0x5, MONITOR),
    (0xf, RDT_MONITORING),
    (0x10, RDT_ALLOCATION),
    (0x12, SGX),
    (0x14, PT),
    (0x19, KEY_LOCKER),
    (0x1a, HYBRID),
    (0x1b, PCONFIG),
    (0x1c, ARCH_LBR),
    (0x1d, AMX_TILE),
    (0x1e, AMX_TILE),
    (0x24, AVX10),
    (0x8000_000a, SVM),
];

/// XSAVE state components beyond x87 and SSE (which come with XSAVE
/// itself) and the features whose state they hold, any one of which
/// brings the component. A component not listed is not offered: what it
/// holds is unknown here, so whether its feature is shown is too.
const XSAVE_COMPONENTS: &[(u32, &[Feature])] = &[
    (2, &[AVX]),
    (3, &[MPX]),     // BNDREGS
    (4, &[MPX]),     // BNDCSR
    (5, &[AVX512F]), // opmask
    (6, &[AVX512F]), // ZMM_Hi256
    (7, &[AVX512F]), // Hi16_ZMM
    (8, &[PT]),
    (9, &[PKU]),
    (10, &[ENQCMD]),          // PASID
    (11, &[CET_SS, CET_IBT]), // CET_U
    (12, &[CET_SS]),          // CET_S
    (13, &[HDC]),
    (14, &[UINTR]),
    (15, &[ARCH_LBR]),
    (16, &[HWP]),
    (17, &[AMX_TILE]), // XTILECFG
    (18, &[AMX_TILE]), // XTILEDATA
    (19, &[APX]),
];

/// The legacy region and XSAVE header: the least a standard-format XSAVE
/// area takes, x87 and SSE state included.
const XSAVE_LEGACY_AND_HEADER: u32 = 512 + 64;
/// Leaf 0xD.1 EAX bit 4: extended feature disable (XFD), which serves only
/// components that can be disabled so (their sub-leaf's ECX bit 2).
const XSAVE_XFD: u32 = bit(4);
const XSAVE_COMPONENT_XFD: u32 = bit(2);

fn find(entries: &[kvm_cpuid_entry2], leaf: u32, subleaf: u32) -> Option<&kvm_cpuid_entry2> {
    entries
        .iter()
        .find(|e| e.function == leaf && e.index == subleaf)
}

fn find_mut(
    entries: &mut [kvm_cpuid_entry2],
    leaf: u32,
    subleaf: u32,
) -> Option<&mut kvm_cpuid_entry2> {
    entries
        .iter_mut()
        .find(|e| e.function == leaf && e.index == subleaf)
}

fn shown(entries: &[kvm_cpuid_entry2], f: Feature) -> bool {
    find(entries, f.leaf, f.subleaf).is_some_and(|e| f.reg.get(e) & bit(f.bit) != 0)
}

fn hide(entries: &mut [kvm_cpuid_entry2], f: Feature) {
    if let Some(e) = find_mut(entries, f.leaf, f.subleaf) {
        *f.reg.of(e) &= !bit(f.bit);
    }
}

fn clear(e: &mut kvm_cpuid_entry2) {
    e.eax = 0;
    e.ebx = 0;
    e.ecx = 0;
    e.edx = 0;
}

/// The XSAVE state components whose features the guest is shown and
/// whose layout the host described (a sub-leaf of 0xD for each beyond
/// SSE).
fn xsave_components(entries: &[kvm_cpuid_entry2]) -> u64 {
    if !shown(entries, XSAVE) {
        return 0;
    }
    let mut components = 0b11;
    for &(component, features) in XSAVE_COMPONENTS {
        if features.iter().any(|&f| shown(entries, f)) && find(entries, 0xd, component).is_some() {
            components |= 1 << component;
        }
    }
    components
}

/// Leaf 0xD lists only the state components that [`xsave_components`]
/// keeps: the others leave the user (XCR0, sub-leaf 0) and supervisor
/// (IA32_XSS, sub-leaf 1) masks, which KVM also takes as the state the
/// guest may enable, and their sub-leaves are emptied. The size of the
/// area for every user component (sub-leaf 0 ECX) is what the remaining
/// ones reach, so a guest does not allocate room for state it cannot have.
fn trim_xsave(entries: &mut [kvm_cpuid_entry2]) {
    let kept = xsave_components(entries);
    if kept == 0 {
        // No XSAVE: the leaf describes nothing the guest can use.
        for e in entries.iter_mut().filter(|e| e.function == 0xd) {
            clear(e);
        }
        return;
    }
    let mut xfd = false;
    for e in entries
        .iter_mut()
        .filter(|e| e.function == 0xd && e.index >= 2)
    {
        if e.index < 64 && kept & (1 << e.index) != 0 {
            xfd |= e.ecx & XSAVE_COMPONENT_XFD != 0;
        } else {
            clear(e);
        }
    }
    let Some(user) = find_mut(entries, 0xd, 0).map(|e| {
        e.eax &= kept as u32;
        e.edx &= (kept >> 32) as u32;
        u64::from(e.eax) | (u64::from(e.edx) << 32)
    }) else {
        return;
    };
    let size = entries
        .iter()
        .filter(|e| e.function == 0xd && (2..64).contains(&e.index))
        .filter(|e| user & (1 << e.index) != 0)
        .map(|e| e.ebx.saturating_add(e.eax))
        .fold(XSAVE_LEGACY_AND_HEADER, u32::max);
    if let Some(e) = find_mut(entries, 0xd, 0) {
        e.ecx = size;
        // EBX is the size for what XCR0 enables now; KVM keeps it up to
        // date, it only must not exceed the whole.
        e.ebx = e.ebx.min(size);
    }
    if let Some(e) = find_mut(entries, 0xd, 1) {
        e.ecx &= kept as u32;
        e.edx &= (kept >> 32) as u32;
        if !xfd {
            e.eax &= !XSAVE_XFD;
        }
    }
}

fn adjust(e: &mut kvm_cpuid_entry2, index: u32, count: u32) {
    match e.function {
        0x1 => {
            e.ecx = (e.ecx & !LEAF1_ECX_HIDDEN) | ECX_HYPERVISOR;
            e.edx &= !LEAF1_EDX_HIDDEN;
            if count > 1 {
                e.edx |= EDX_HTT;
            } else {
                e.edx &= !EDX_HTT;
            }
            // Initial APIC id and the logical processor count.
            e.ebx = (e.ebx & 0x0000_ffff) | (index << 24) | (count.min(255) << 16);
        }
        0x4 => {
            // One core per package, one thread per cache; the packages are
            // described by leaf 1 and 0xB.
            e.eax &= 0x0000_3fff;
        }
        0x7 if e.index == 0 => {
            e.ebx &= !LEAF7_EBX_HIDDEN;
            e.ecx &= LEAF7_ECX_KEPT;
            e.edx &= LEAF7_EDX_KEPT;
        }
        0xb | 0x1f => {
            // x2APIC topology: report this vCPU's id; one thread per core,
            // `count` cores per package.
            e.edx = index;
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = (1 << 8) | e.index;
                }
                1 => {
                    e.eax = 32 - count.max(1).saturating_sub(1).leading_zeros();
                    e.ebx = count;
                    e.ecx = (2 << 8) | e.index;
                }
                _ => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = e.index;
                }
            }
        }
        KVM_SIGNATURE_LEAF => {
            e.eax = KVM_FEATURES_LEAF;
            [e.ebx, e.ecx, e.edx] = KVM_SIGNATURE;
        }
        KVM_FEATURES_LEAF => {
            e.eax &= KVM_FEATURES_OFFERED;
            e.ebx = 0;
            e.ecx = 0;
            // No hints (KVM_HINTS_REALTIME would claim dedicated CPUs).
            e.edx = 0;
        }
        0x8000_0001 => {
            e.ecx &= !(EXT_ECX_SVM | EXT_ECX_MWAITX);
            e.edx &= !(EXT_EDX_RDTSCP | EXT_EDX_HIDDEN_MIRRORS);
        }
        0x8000_0007 => {
            e.edx &= POWER_EDX_INVARIANT_TSC;
        }
        0x8000_0008 => {
            e.ebx &= !EXT8_EBX_SPEC_CTRL;
        }
        _ => {}
    }
}

/// Supported-CPUID sets for tests: a recorded-style one of a recent Intel
/// server (every kind of state the masks hide is in it), and this host's.
#[cfg(test)]
pub(crate) mod test_hosts {
    use super::*;

    /// "GenuineIntel" as EBX, EDX, ECX.
    pub const INTEL: [u32; 3] = [0x756e_6547, 0x4965_6e69, 0x6c65_746e];

    const fn bits(list: &[u32]) -> u32 {
        let mut v = 0;
        let mut i = 0;
        while i < list.len() {
            v |= 1 << list[i];
            i += 1;
        }
        v
    }

    fn leaf(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        let indexed = matches!(function, 4 | 7 | 0xb | 0xd | 0x12 | 0x14 | 0x1d | 0x1f);
        kvm_cpuid_entry2 {
            function,
            index,
            flags: u32::from(indexed),
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// What KVM_GET_SUPPORTED_CPUID reports on a Sapphire Rapids host
    /// with nested VMX, SGX, PT for guests, CET and AMX permitted: no
    /// hypervisor bit; AVX-512, PKU, AMX, CET and PT state in leaf 0xD.
    pub fn sapphire_rapids() -> CpuId {
        let leaf1_ecx = bits(&[
            0, 1, 5, 9, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 28, 29, 30,
        ]);
        let leaf7_ebx = bits(&[
            0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 23, 24, 25, 28, 29, 30, 31,
        ]);
        let leaf7_ecx = bits(&[
            1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 22, 24, 25, 27, 28,
        ]);
        let leaf7_edx = bits(&[4, 10, 14, 16, 20, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]);
        // x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM, PKRU, XTILECFG,
        // XTILEDATA; supervisor: CET_U, CET_S.
        let xcr0 = bits(&[0, 1, 2, 5, 6, 7, 9, 17, 18]);
        let xss = bits(&[11, 12]);
        let xsave_all = 2816 + 8192;
        CpuId::from_entries(&[
            leaf(0, 0, [0x20, INTEL[0], INTEL[2], INTEL[1]]),
            leaf(1, 0, [0x806f8, 0x800, leaf1_ecx, 0x178b_fbff]),
            leaf(4, 0, [0x1c00_0121, 0x02c0_003f, 0x3f, 0]),
            leaf(4, 1, [0x1c00_0122, 0x01c0_003f, 0x3f, 0]),
            leaf(5, 0, [0x40, 0x40, 3, 0x2020]),
            leaf(6, 0, [4, 0, 0, 0]),
            leaf(7, 0, [2, leaf7_ebx, leaf7_ecx, leaf7_edx]),
            leaf(7, 1, [bits(&[4, 5, 10, 11, 12]), 0, 0, 0]),
            leaf(7, 2, [0, 0, 0, bits(&[0, 1, 2, 4, 5])]),
            leaf(0xb, 0, [1, 2, 0x100, 0]),
            leaf(0xb, 1, [7, 0x40, 0x201, 0]),
            leaf(0xd, 0, [xcr0, xsave_all, xsave_all, 0]),
            leaf(0xd, 1, [bits(&[0, 1, 2, 3, 4]), 0, xss, 0]),
            leaf(0xd, 2, [256, 576, 0, 0]),
            leaf(0xd, 5, [64, 1088, 0, 0]),
            leaf(0xd, 6, [512, 1152, 0, 0]),
            leaf(0xd, 7, [1024, 1664, 0, 0]),
            leaf(0xd, 9, [8, 2688, 0, 0]),
            leaf(0xd, 11, [16, 0, 1, 0]),
            leaf(0xd, 12, [24, 0, 1, 0]),
            leaf(0xd, 17, [64, 2752, 2, 0]),
            leaf(0xd, 18, [8192, 2816, 6, 0]),
            leaf(0x12, 0, [3, 0, 0, 0x381f]),
            leaf(0x12, 1, [0x36, 0, 0x1f, 0]),
            leaf(0x14, 0, [1, 0x2f, 7, 0]),
            leaf(0x14, 1, [0x0249_0002, 0x003f_ffff, 0, 0]),
            leaf(0x1d, 0, [1, 0, 0, 0]),
            leaf(0x1d, 1, [0x0400_2000, 0x0008_0040, 0x10, 0]),
            leaf(0x1e, 0, [0, 0x4010, 0, 0]),
            leaf(0x8000_0000, 0, [0x8000_0008, 0, 0, 0]),
            leaf(0x8000_0001, 0, [0, 0, 0x121, 0x2c10_0800]),
            leaf(0x8000_0007, 0, [0, 0, 0, 0x100]),
            leaf(0x8000_0008, 0, [0x3934, 0x200, 0, 0]),
            leaf(
                KVM_SIGNATURE_LEAF,
                0,
                [
                    KVM_FEATURES_LEAF,
                    KVM_SIGNATURE[0],
                    KVM_SIGNATURE[1],
                    KVM_SIGNATURE[2],
                ],
            ),
            leaf(KVM_FEATURES_LEAF, 0, [0x0100_7afb, 0, 0, 0]),
        ])
        .unwrap()
    }

    /// What this host's KVM supports, or None (and a note why) without
    /// /dev/kvm.
    pub fn this_host() -> Option<CpuId> {
        match kvm_ioctls::Kvm::new() {
            Ok(kvm) => Some(
                kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
                    .expect("KVM_GET_SUPPORTED_CPUID"),
            ),
            Err(e) => {
                eprintln!("no /dev/kvm ({e}): this host's CPUID not checked");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, v: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: v,
            ebx: v,
            ecx: v,
            edx: v,
            ..Default::default()
        }
    }

    #[test]
    fn kvm_leaves_offer_a_stable_kvmclock() {
        let supported = CpuId::from_entries(&[
            entry(KVM_SIGNATURE_LEAF, 0, 0),
            entry(KVM_FEATURES_LEAF, 0, u32::MAX),
        ])
        .unwrap();
        let guest = guest_cpuid(&supported, 0, 1);
        let e = guest.as_slice();
        assert_eq!(e[0].eax, KVM_FEATURES_LEAF);
        let signature: Vec<u8> = [e[0].ebx, e[0].ecx, e[0].edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&signature, b"KVMKVMKVM\0\0\0");
        let wanted = KVM_FEATURE_CLOCKSOURCE2 | KVM_FEATURE_CLOCKSOURCE_STABLE_BIT;
        assert_eq!(e[1].eax & wanted, wanted);
        assert_eq!(e[1].eax & bit(4), 0, "no async page faults");
        assert_eq!(e[1].edx, 0);

        // Leaves KVM did not list are added with what it supports: none.
        let bare = guest_cpuid(&CpuId::from_entries(&[entry(1, 0, 0)]).unwrap(), 0, 1);
        let features = bare
            .as_slice()
            .iter()
            .find(|e| e.function == KVM_FEATURES_LEAF)
            .unwrap();
        assert_eq!(features.eax, 0);
    }

    #[test]
    fn masks_and_topology() {
        let supported = CpuId::from_entries(&[
            entry(0x1, 0, u32::MAX),
            entry(0x7, 0, u32::MAX),
            entry(0x8000_0001, 0, u32::MAX),
            entry(0xb, 1, u32::MAX),
        ])
        .unwrap();
        let guest = guest_cpuid(&supported, 2, 4);
        let e = guest.as_slice();
        assert_eq!(e[0].ecx & ECX_VMX, 0);
        assert_ne!(e[0].edx & bit(9), 0, "APIC stays visible");
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[0].edx & EDX_MTRR, 0);
        assert_eq!(e[0].ebx >> 24, 2);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_eq!(e[1].ecx, LEAF7_ECX_KEPT);
        assert_eq!(e[1].ebx & bit(16), 0, "AVX-512F hidden");
        assert_eq!(e[2].edx & EXT_EDX_RDTSCP, 0);
        assert_eq!(e[2].ecx & EXT_ECX_SVM, 0, "SVM hidden, as VMX is");
        // AMD's copies of leaf 1 EDX bits: hidden ones hidden here too.
        assert_eq!(e[2].edx & (EDX_MCE | EDX_MTRR | EDX_MCA), 0);
        assert_ne!(e[2].edx & bit(0), 0, "FPU's copy stays");
        assert_eq!(e[3].edx, 2);
        assert_eq!(e[3].ebx, 4);
        assert_eq!(e[3].eax, 2);
    }

    /// A supported set run through [`guest_cpuid`] must hold together,
    /// whatever the host: checked here against the SDM's names of things,
    /// not the tables the code uses.
    fn assert_consistent(guest: &CpuId) {
        let e = guest.as_slice();
        let get = |leaf: u32, sub: u32| {
            e.iter()
                .find(|x| x.function == leaf && x.index == sub)
                .copied()
                .unwrap_or_default()
        };
        let empty = |x: kvm_cpuid_entry2| [x.eax, x.ebx, x.ecx, x.edx] == [0; 4];
        let (l1, l7, l71, l72) = (get(1, 0), get(7, 0), get(7, 1), get(7, 2));
        assert_ne!(l1.ecx & bit(31), 0, "hypervisor bit");
        let sig = get(KVM_SIGNATURE_LEAF, 0);
        assert!(sig.eax >= KVM_FEATURES_LEAF, "{:#x}", sig.eax);
        let signature: Vec<u8> = [sig.ebx, sig.ecx, sig.edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&signature, b"KVMKVMKVM\0\0\0");

        // Each XSAVE state component and the feature whose state it is.
        let feature_of = |component: u32| match component {
            0 | 1 => l1.ecx & bit(26) != 0,                      // XSAVE
            2 => l1.ecx & bit(28) != 0,                          // AVX
            3 | 4 => l7.ebx & bit(14) != 0,                      // MPX
            5..=7 => l7.ebx & bit(16) != 0,                      // AVX-512F
            8 => l7.ebx & bit(25) != 0,                          // PT
            9 => l7.ecx & bit(3) != 0,                           // PKU
            10 => l7.ecx & bit(29) != 0,                         // ENQCMD
            11 => l7.ecx & bit(7) != 0 || l7.edx & bit(20) != 0, // CET
            12 => l7.ecx & bit(7) != 0,                          // CET shadow stack
            17 | 18 => l7.edx & bit(24) != 0,                    // AMX-TILE
            _ => false,
        };
        let (d0, d1) = (get(0xd, 0), get(0xd, 1));
        let user = u64::from(d0.eax) | u64::from(d0.edx) << 32;
        let supervisor = u64::from(d1.ecx) | u64::from(d1.edx) << 32;
        let mut xfd_capable = false;
        for c in 0..64 {
            if (user | supervisor) & (1 << c) != 0 {
                assert!(feature_of(c), "XSAVE component {c} without its feature");
                xfd_capable |= get(0xd, c).ecx & bit(2) != 0;
            } else if c >= 2 {
                assert!(empty(get(0xd, c)), "sub-leaf 0xd.{c} of a hidden component");
            }
        }
        if user != 0 {
            let reach = (2..64)
                .filter(|c| user & (1 << c) != 0)
                .map(|c| get(0xd, c).ebx + get(0xd, c).eax)
                .fold(576, u32::max);
            assert_eq!(
                d0.ecx, reach,
                "0xd.0 ECX: the area the listed components need"
            );
            assert!(d0.ebx <= d0.ecx);
        } else {
            assert!(empty(d0) && empty(d1), "leaf 0xd without XSAVE");
        }
        assert!(
            xfd_capable || d1.eax & bit(4) == 0,
            "XFD with nothing to disable"
        );

        if l7.ebx & bit(16) == 0 {
            // No AVX-512 instruction without AVX-512F's state.
            let ebx = bits(&[17, 21, 26, 27, 28, 30, 31]);
            assert_eq!(l7.ebx & ebx, 0, "AVX-512 in 7.0 EBX");
            assert_eq!(l7.ecx & bits(&[1, 6, 11, 12, 14]), 0, "AVX-512 in 7.0 ECX");
            assert_eq!(l7.edx & bits(&[2, 3, 8, 23]), 0, "AVX-512 in 7.0 EDX");
            assert_eq!(l71.eax & bit(5), 0, "AVX512_BF16");
            assert_eq!(l71.edx & bit(19), 0, "AVX10");
            assert!(empty(get(0x24, 0)), "AVX10 leaf");
        }
        if l7.edx & bit(24) == 0 {
            assert_eq!(l7.edx & bits(&[22, 25]), 0, "AMX in 7.0 EDX");
            assert_eq!(l71.eax & bit(21), 0, "AMX-FP16");
            assert_eq!(l71.edx & bit(8), 0, "AMX-COMPLEX");
            assert!(empty(get(0x1d, 0)) && empty(get(0x1d, 1)) && empty(get(0x1e, 0)));
        }
        if l7.edx & bit(26) == 0 {
            assert_eq!(l72.edx & bits(&[0, 1, 2, 3, 4]), 0, "IA32_SPEC_CTRL bits");
        }
        if l7.ebx & bit(2) == 0 {
            assert!(empty(get(0x12, 0)) && empty(get(0x12, 1)), "SGX leaf");
        }
        if l7.ebx & bit(25) == 0 {
            assert!(empty(get(0x14, 0)) && empty(get(0x14, 1)), "PT leaf");
        }
        if l1.ecx & bit(3) == 0 {
            assert!(empty(get(5, 0)), "MONITOR leaf");
        }
        let l1_hidden = !l1.edx & bits(&[7, 12, 14]);
        assert_eq!(
            get(0x8000_0001, 0).edx & l1_hidden,
            0,
            "AMD's copy of leaf 1 EDX"
        );
    }

    fn bits(list: &[u32]) -> u32 {
        list.iter().fold(0, |v, &b| v | bit(b))
    }

    /// A host that supports every bit of the leaves the masks touch: the
    /// guest sees exactly what docs/machine.md ("CPUs") promises, bit for
    /// bit, so a mask that loses or gains one bit fails here. The hidden
    /// bits are listed by their SDM/APM names, not taken from the masks.
    #[test]
    fn a_host_with_every_bit_shows_exactly_the_documented_features() {
        let all = u32::MAX;
        let all_but = |hidden: &[u32]| all & !bits(hidden);
        let supported = CpuId::from_entries(&[
            entry(0x1, 0, all),
            entry(0x7, 0, all),
            entry(0x8000_0001, 0, all),
            entry(0x8000_0007, 0, all),
            entry(0x8000_0008, 0, all),
            entry(KVM_FEATURES_LEAF, 0, all),
            entry(0x4, 0, all),
            entry(0xb, 0, all),
            entry(0xb, 1, all),
            entry(0xb, 2, all),
        ])
        .unwrap();
        for (index, count) in [(0, 1), (5, 6)] {
            let guest = guest_cpuid(&supported, index, count);
            let sub = |leaf: u32, subleaf: u32| {
                let e = find(guest.as_slice(), leaf, subleaf).unwrap();
                [e.eax, e.ebx, e.ecx, e.edx]
            };
            let get = |leaf: u32| sub(leaf, 0);
            // Caches: cores per package (31:26) and threads sharing the
            // cache (25:14) are 0, that is one each.
            assert_eq!(get(0x4), [0x3fff, all, all, all], "leaf 4");
            // x2APIC topology: the SMT level has one thread, the core
            // level `count` cores in 2^shift ids, then nothing; EDX is
            // this vCPU's x2APIC id.
            let shift = if count == 1 { 0 } else { 3 };
            assert_eq!(sub(0xb, 0), [0, 1, 0x100, index], "leaf 0xb.0");
            assert_eq!(sub(0xb, 1), [shift, count, 0x201, index], "leaf 0xb.1");
            assert_eq!(sub(0xb, 2), [0, 0, 2, index], "leaf 0xb.2");
            // DTES64 2, MONITOR 3, DS-CPL 4, VMX 5, SMX 6, EST 7, TM2 8,
            // CNXT-ID 10, SDBG 11, xTPR 14, PDCM 15, PCID 17, DCA 18;
            // the hypervisor bit 31 is set.
            let l1_ecx = all_but(&[2, 3, 4, 5, 6, 7, 8, 10, 11, 14, 15, 17, 18]);
            // MCE 7, MTRR 12, MCA 14, PSN 18, DS 21, ACPI 22, SS 27, TM 29,
            // PBE 31; HTT 28 only with more than one vCPU.
            let mut l1_edx = all_but(&[7, 12, 14, 18, 21, 22, 27, 29, 31]);
            if count == 1 {
                l1_edx &= !bit(28);
            }
            let l1_ebx = 0xffff | (index << 24) | (count << 16);
            assert_eq!(
                get(0x1),
                [all, l1_ebx, l1_ecx, l1_edx],
                "leaf 1, {count} vCPUs"
            );
            // TSC_ADJUST 1, SGX 2, HLE 4, INVPCID 10, RTM 11, RDT-M 12,
            // MPX 14, RDT-A 15, AVX512F 16, AVX512DQ 17, AVX512_IFMA 21,
            // bit 22 (PCOMMIT), PT 25, AVX512PF 26, AVX512ER 27,
            // AVX512CD 28, AVX512BW 30, AVX512VL 31; ECX keeps UMIP (2),
            // EDX MD_CLEAR (10).
            let l7_ebx = all_but(&[
                1, 2, 4, 10, 11, 12, 14, 15, 16, 17, 21, 22, 25, 26, 27, 28, 30, 31,
            ]);
            assert_eq!(get(0x7), [all, l7_ebx, bit(2), bit(10)], "leaf 7");
            // SVM 2, MONITORX 29; RDTSCP 27 and AMD's copies of MCE 7,
            // MTRR 12, MCA 14.
            let ext_ecx = all_but(&[2, 29]);
            let ext_edx = all_but(&[7, 12, 14, 27]);
            assert_eq!(
                get(0x8000_0001),
                [all, all, ext_ecx, ext_edx],
                "leaf 0x8000_0001"
            );
            assert_eq!(
                get(0x8000_0007),
                [all, all, all, bit(8)],
                "invariant TSC only"
            );
            // IBPB 12, IBRS 14, STIBP 15, IBRS_ALWAYS_ON 16,
            // STIBP_ALWAYS_ON 17, IBRS_PREFERRED 18, SSBD 24, VIRT_SSBD 25,
            // SSB_NO 26.
            let ext8_ebx = all_but(&[12, 14, 15, 16, 17, 18, 24, 25, 26]);
            assert_eq!(
                get(0x8000_0008),
                [all, ext8_ebx, all, all],
                "leaf 0x8000_0008"
            );
            // CLOCKSOURCE 0, NOP_IO_DELAY 1, CLOCKSOURCE2 3, STEAL_TIME 5,
            // PV_EOI 6, PV_UNHALT 7, PV_TLB_FLUSH 9, PV_SEND_IPI 11,
            // CLOCKSOURCE_STABLE_BIT 24; no hints.
            let kvm = bits(&[0, 1, 3, 5, 6, 7, 9, 11, 24]);
            assert_eq!(get(KVM_FEATURES_LEAF), [kvm, 0, 0, 0], "KVM features");
        }
    }

    /// XSAVE with nothing beyond x87 and SSE: the area is the legacy
    /// region and the header, 576 bytes.
    #[test]
    fn xsave_of_x87_and_sse_alone_takes_576_bytes() {
        let mut leaf1 = entry(0x1, 0, 0);
        leaf1.ecx = bit(26); // XSAVE
        let mut d0 = entry(0xd, 0, 0);
        d0.eax = 0b11;
        d0.ebx = 1024;
        d0.ecx = 1024;
        let guest = guest_cpuid(&CpuId::from_entries(&[leaf1, d0]).unwrap(), 0, 1);
        let d0 = *find(guest.as_slice(), 0xd, 0).unwrap();
        assert_eq!([d0.eax, d0.ebx, d0.ecx], [0b11, 576, 576]);
    }

    /// State components past 31 (EDX of sub-leaves 0 and 1), which no
    /// feature here brings, are not offered.
    #[test]
    fn xsave_components_past_31_are_not_offered() {
        let mut entries = test_hosts::sapphire_rapids().as_slice().to_vec();
        for subleaf in [0, 1] {
            find_mut(&mut entries, 0xd, subleaf).unwrap().edx = 1;
        }
        trim_xsave(&mut entries);
        assert_eq!(find(&entries, 0xd, 0).unwrap().edx, 0, "XCR0 high half");
        assert_eq!(find(&entries, 0xd, 1).unwrap().edx, 0, "IA32_XSS high half");
    }

    /// Trimming leaf 0xD touches that leaf only: other leaves' sub-leaves
    /// (the caches of leaf 4 past the first two) stay, whatever their
    /// index; a sub-leaf of 0xD past the 64 components there can be is
    /// emptied rather than read as one.
    #[test]
    fn xsave_trimming_leaves_other_leaves_sub_leaves_alone() {
        let mut entries = test_hosts::sapphire_rapids().as_slice().to_vec();
        let l3 = kvm_cpuid_entry2 {
            function: 4,
            index: 3,
            flags: 1,
            eax: 0x1c00_4163,
            ebx: 0x0380_003f,
            ecx: 0xbfff,
            edx: 4,
            ..Default::default()
        };
        entries.push(l3);
        entries.push(kvm_cpuid_entry2 {
            function: 0xd,
            index: 64,
            eax: 8,
            ebx: 4096,
            ..Default::default()
        });
        trim_xsave(&mut entries);
        assert_eq!(
            find(&entries, 4, 3),
            Some(&l3),
            "component 3 (MPX) is hidden, leaf 4.3 is not"
        );
        let beyond = *find(&entries, 0xd, 64).unwrap();
        assert_eq!([beyond.eax, beyond.ebx, beyond.ecx, beyond.edx], [0; 4]);
    }

    #[test]
    fn hypervisor_bit_is_set() {
        let supported = CpuId::from_entries(&[entry(0x1, 0, 0)]).unwrap();
        let guest = guest_cpuid(&supported, 0, 1);
        assert_eq!(guest.as_slice()[0].ecx, ECX_HYPERVISOR);
    }

    #[test]
    fn a_recorded_host_gives_a_consistent_guest() {
        let supported = test_hosts::sapphire_rapids();
        for (index, count) in [(0, 1), (3, 4)] {
            let guest = guest_cpuid(&supported, index, count);
            assert_consistent(&guest);
            let e = guest.as_slice();
            let get = |leaf: u32, sub: u32| {
                *e.iter()
                    .find(|x| x.function == leaf && x.index == sub)
                    .unwrap()
            };
            // Only x87, SSE and AVX are left, in 576 + 256 bytes; the
            // PKRU, AVX-512, AMX and CET components are gone.
            assert_eq!(get(0xd, 0).eax, 0b111);
            assert_eq!(get(0xd, 0).ecx, 832);
            assert_eq!(get(0xd, 0).ebx, 832);
            assert_eq!(get(0xd, 1).ecx, 0);
            assert_eq!(get(0xd, 1).eax, 0b1111, "XSAVES stays, XFD goes");
            assert_eq!(get(0xd, 2).eax, 256, "AVX's component stays");
            for c in [5, 6, 7, 9, 11, 12, 17, 18] {
                assert_eq!(get(0xd, c).eax, 0, "component {c}");
            }
            assert_eq!(get(7, 1).eax, bits(&[4, 10, 11, 12]), "AVX512_BF16 hidden");
            assert_eq!(get(7, 2).edx, bit(5), "only MCDT_NO");
            assert_eq!(get(0x12, 0).eax, 0);
            assert_eq!(get(5, 0).eax, 0);
        }
    }

    #[test]
    fn this_host_gives_a_consistent_guest() {
        testkit::needs!(kvm);
        let Some(supported) = test_hosts::this_host() else {
            return;
        };
        assert_consistent(&guest_cpuid(&supported, 0, 1));
        assert_consistent(&guest_cpuid(&supported, 1, 2));
    }

    #[test]
    fn shown_features_keep_their_xsave_state() {
        // With every feature shown nothing goes, and the sizes stay.
        let supported = test_hosts::sapphire_rapids();
        let mut entries = supported.as_slice().to_vec();
        trim_xsave(&mut entries);
        assert_eq!(entries, supported.as_slice());

        // PKU and AMX hidden: their components go, XFD with AMX's tile
        // data, and the area ends where Hi16_ZMM does.
        hide(&mut entries, PKU);
        hide(&mut entries, AMX_TILE);
        trim_xsave(&mut entries);
        let d0 = *find(&entries, 0xd, 0).unwrap();
        assert_eq!(d0.eax, 0xe7);
        assert_eq!(d0.ecx, 1664 + 1024);
        assert_eq!(find(&entries, 0xd, 1).unwrap().eax & XSAVE_XFD, 0);
        assert_eq!(find(&entries, 0xd, 1).unwrap().ecx, bit(11) | bit(12));
    }
}
