//! The CPUID a guest sees: what KVM supports on this host, minus what vmm(4)
//! hides from its guests (linux-mapping.md §2.4), with the topology of this
//! VM's vCPUs.
//!
//! The local APIC stays visible (KVM emulates one per vCPU and the IOAPIC
//! in the kernel; firmware and SMP need it), and so do x2APIC and the TSC
//! deadline timer, which the in-kernel LAPIC implements.

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
/// Leaf 0x8000_0007 EDX: only the invariant TSC is kept.
const POWER_EDX_INVARIANT_TSC: u32 = bit(8);
/// Leaf 0x8000_0008 EBX: AMD speculation controls (IBPB, IBRS, STIBP,
/// their "always on"/preferred variants, SSBD, VIRT_SSBD, SSB_NO).
const EXT8_EBX_SPEC_CTRL: u32 =
    bit(12) | bit(14) | bit(15) | bit(16) | bit(17) | bit(18) | bit(24) | bit(25) | bit(26);

/// KVM's paravirtual leaves (linux-mapping.md §2.4): the signature, and
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
    cpuid
}

fn adjust(e: &mut kvm_cpuid_entry2, index: u32, count: u32) {
    match e.function {
        0x1 => {
            e.ecx &= !LEAF1_ECX_HIDDEN;
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
            e.edx &= !EXT_EDX_RDTSCP;
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
        assert_eq!(e[3].edx, 2);
        assert_eq!(e[3].ebx, 4);
        assert_eq!(e[3].eax, 2);
    }
}
