//! Can this host continue a guest that saw a given CPUID? The rules of
//! docs/send-stream.md, "CPU compatibility", applied to what KVM can offer here
//! (`KVM_GET_SUPPORTED_CPUID`): the same vendor and at least as many basic
//! leaves; every feature bit the guest saw among the feature leaves is one
//! KVM supports, or one this VMM sets itself and would set here too; XSAVE
//! areas no larger than this host's.
//!
//! The bits this VMM sets are found by running the host's supported set
//! through [`guest_cpuid`] for a VM of the guest's size: the hypervisor
//! bit, which KVM does not list, and HTT, which says the VM has several
//! vCPUs. The union with the supported set, rather than the VMM's output
//! alone, is what a received guest needs: it keeps the CPUID it was given,
//! and KVM runs it as long as KVM supports every feature in it, even one a
//! later version of this VMM would no longer offer. KVM's paravirtual
//! features are compared with what KVM supports, so a guest using kvmclock
//! is not moved to a host without it.
//!
//! Bits that report state rather than features are not compared: OSXSAVE
//! and OSPKE mirror the guest's CR4.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

use crate::cpuid::{KVM_FEATURES_LEAF, guest_cpuid};

/// Leaf 1 ECX bit 27: OSXSAVE, CR4.OSXSAVE as the guest set it.
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
/// Leaf 7 ECX bit 4: OSPKE, CR4.PKE as the guest set it.
const LEAF7_ECX_OSPKE: u32 = 1 << 4;

#[derive(Clone, Copy)]
enum Register {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

impl Register {
    fn of(self, e: &kvm_cpuid_entry2) -> u32 {
        match self {
            Register::Eax => e.eax,
            Register::Ebx => e.ebx,
            Register::Ecx => e.ecx,
            Register::Edx => e.edx,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Register::Eax => "eax",
            Register::Ebx => "ebx",
            Register::Ecx => "ecx",
            Register::Edx => "edx",
        }
    }
}

/// Feature registers whose bits must be a subset of the host's: leaf,
/// sub-leaf, register, and the bits not to compare.
const FEATURE_BITS: &[(u32, u32, Register, u32)] = &[
    (1, 0, Register::Ecx, LEAF1_ECX_OSXSAVE),
    (1, 0, Register::Edx, 0),
    (7, 0, Register::Ebx, 0),
    (7, 0, Register::Ecx, LEAF7_ECX_OSPKE),
    (7, 0, Register::Edx, 0),
    (7, 1, Register::Eax, 0),
    (7, 1, Register::Edx, 0),
    (7, 2, Register::Edx, 0),
    (0xd, 0, Register::Eax, 0),
    (0xd, 0, Register::Edx, 0),
    (0xd, 1, Register::Eax, 0),
    (0xd, 1, Register::Ecx, 0),
    (0xd, 1, Register::Edx, 0),
    (0x8000_0001, 0, Register::Ecx, 0),
    (0x8000_0001, 0, Register::Edx, 0),
    (0x8000_0007, 0, Register::Edx, 0),
    (0x8000_0008, 0, Register::Ebx, 0),
    (KVM_FEATURES_LEAF, 0, Register::Eax, 0),
];

/// Registers whose value is a size the host must reach.
const SIZES: &[(u32, u32, Register)] = &[(0xd, 0, Register::Ebx), (0xd, 0, Register::Ecx)];

/// Whether a leaf's sub-leaves differ (KVM_CPUID_FLAG_SIGNIFCANT_INDEX).
const SIGNIFICANT_INDEX: u32 = 1;

fn find(entries: &[kvm_cpuid_entry2], leaf: u32, subleaf: u32) -> Option<&kvm_cpuid_entry2> {
    entries
        .iter()
        .find(|e| e.function == leaf && (e.flags & SIGNIFICANT_INDEX == 0 || e.index == subleaf))
}

/// What this VMM gives vCPU 0 of a VM of the guest's size (leaf 1 EBX
/// bits 23:16, as [`guest_cpuid`] sets them) on a host that supports
/// `host`.
fn offered(
    guest: &[kvm_cpuid_entry2],
    host: &[kvm_cpuid_entry2],
) -> Result<Vec<kvm_cpuid_entry2>, String> {
    let vcpus = find(guest, 1, 0).map_or(1, |e| (e.ebx >> 16) & 0xff).max(1);
    let host = CpuId::from_entries(host).map_err(|e| format!("this host's CPUID: {e:?}"))?;
    Ok(guest_cpuid(&host, 0, vcpus).as_slice().to_vec())
}

/// Checks `guest` (the CPUID a vCPU answered) against `host` (what this
/// host's KVM supports); the error names the first difference.
pub fn check(guest: &[kvm_cpuid_entry2], host: &[kvm_cpuid_entry2]) -> Result<(), String> {
    let zero = kvm_cpuid_entry2::default();
    let (g0, h0) = (find(guest, 0, 0), find(host, 0, 0));
    let (g0, h0) = match (g0, h0) {
        (Some(g), Some(h)) => (g, h),
        _ => return Err("no CPUID leaf 0".into()),
    };
    let vendor = |e: &kvm_cpuid_entry2| {
        let mut v = Vec::new();
        for r in [e.ebx, e.edx, e.ecx] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        String::from_utf8_lossy(&v).into_owned()
    };
    if vendor(g0) != vendor(h0) {
        return Err(format!(
            "CPU vendor {} where the guest ran on {}",
            vendor(h0),
            vendor(g0)
        ));
    }
    if g0.eax > h0.eax {
        return Err(format!(
            "{:#x} basic CPUID leaves where the guest saw {:#x}",
            h0.eax, g0.eax
        ));
    }
    let offered = offered(guest, host)?;
    for &(leaf, subleaf, reg, ignored) in FEATURE_BITS {
        let Some(g) = find(guest, leaf, subleaf) else {
            continue;
        };
        let h = find(host, leaf, subleaf).unwrap_or(&zero);
        let o = find(&offered, leaf, subleaf).unwrap_or(&zero);
        let missing = reg.of(g) & !(reg.of(h) | reg.of(o)) & !ignored;
        if missing != 0 {
            return Err(format!(
                "CPUID leaf {leaf:#x}.{subleaf} {} bits {missing:#x} are missing",
                reg.name()
            ));
        }
    }
    for &(leaf, subleaf, reg) in SIZES {
        let Some(g) = find(guest, leaf, subleaf) else {
            continue;
        };
        let h = find(host, leaf, subleaf).unwrap_or(&zero);
        if reg.of(g) > reg.of(h) {
            return Err(format!(
                "CPUID leaf {leaf:#x}.{subleaf} {}: XSAVE area of {} bytes where the guest's needs {}",
                reg.name(),
                reg.of(h),
                reg.of(g)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: if function == 7 || function == 0xd {
                SIGNIFICANT_INDEX
            } else {
                0
            },
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// "GenuineIntel" as EBX, EDX, ECX.
    const INTEL: [u32; 3] = [0x756e_6547, 0x4965_6e69, 0x6c65_746e];

    fn cpu(max_leaf: u32, leaf1_ecx: u32, leaf7_ebx: u32, xsave_max: u32) -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0, 0, [max_leaf, INTEL[0], INTEL[2], INTEL[1]]),
            entry(1, 0, [0, 0, leaf1_ecx, 0x0f]),
            entry(7, 0, [0, leaf7_ebx, 0, 0]),
            entry(0xd, 0, [7, 0x340, xsave_max, 0]),
        ]
    }

    #[test]
    fn a_subset_passes_and_each_rule_refuses() {
        let host = cpu(0xd, 0b1110, 0b11, 0x400);
        assert_eq!(check(&cpu(0xd, 0b0110, 0b01, 0x340), &host), Ok(()));
        // OSXSAVE follows the guest's CR4, not the host's features.
        assert_eq!(check(&cpu(0xd, LEAF1_ECX_OSXSAVE, 0, 0x340), &host), Ok(()));
        let err = check(&cpu(0xd, 0b1_0000, 0, 0x340), &host).unwrap_err();
        assert!(err.contains("leaf 0x1.0 ecx bits 0x10"), "{err}");
        let err = check(&cpu(0xd, 0, 0b100, 0x340), &host).unwrap_err();
        assert!(err.contains("leaf 0x7.0 ebx"), "{err}");
        let err = check(&cpu(0x14, 0, 0, 0x340), &host).unwrap_err();
        assert!(err.contains("basic CPUID leaves"), "{err}");
        let err = check(&cpu(0xd, 0, 0, 0x800), &host).unwrap_err();
        assert!(err.contains("XSAVE area"), "{err}");
        let mut amd = host.clone();
        amd[0].ebx = 0x6874_7541; // "Auth"
        let err = check(&cpu(0xd, 0, 0, 0x340), &amd).unwrap_err();
        assert!(err.contains("CPU vendor"), "{err}");
    }

    #[test]
    fn a_leaf_the_host_lacks_must_be_empty() {
        let host = cpu(0xd, 0, 0, 0x400);
        let mut guest = cpu(0xd, 0, 0, 0x400);
        guest.push(entry(0x8000_0001, 0, [0, 0, 0, 0]));
        assert_eq!(check(&guest, &host), Ok(()));
        guest.push(entry(0x8000_0007, 0, [0, 0, 0, 1 << 8]));
        assert!(check(&guest, &host).is_err());
    }

    fn set(
        entries: &mut [kvm_cpuid_entry2],
        leaf: u32,
        subleaf: u32,
        f: impl Fn(&mut kvm_cpuid_entry2),
    ) {
        f(entries
            .iter_mut()
            .find(|e| e.function == leaf && e.index == subleaf)
            .unwrap());
    }

    #[test]
    fn a_guest_of_this_vmm_is_accepted_where_it_was_made() {
        testkit::needs!(kvm);
        let mut hosts = vec![crate::cpuid::test_hosts::sapphire_rapids()];
        hosts.extend(crate::cpuid::test_hosts::this_host());
        for host in hosts {
            for vcpus in [1, 4] {
                let guest = guest_cpuid(&host, 0, vcpus);
                // The hypervisor bit and HTT are set though KVM does not
                // list them.
                assert_ne!(guest.as_slice()[1].ecx & (1 << 31), 0);
                assert_eq!(
                    check(guest.as_slice(), host.as_slice()),
                    Ok(()),
                    "{vcpus} vCPUs"
                );
            }
        }
    }

    #[test]
    fn what_the_host_lacks_is_still_refused() {
        let host = crate::cpuid::test_hosts::sapphire_rapids();
        let guest = guest_cpuid(&host, 0, 2);
        let guest = guest.as_slice();

        // AVX2 missing on the receiving host.
        let mut without_avx2 = host.as_slice().to_vec();
        set(&mut without_avx2, 7, 0, |e| e.ebx &= !(1 << 5));
        let err = check(guest, &without_avx2).unwrap_err();
        assert!(err.contains("leaf 0x7.0 ebx bits 0x20"), "{err}");

        // A leaf 1 bit that is neither supported nor set by this VMM.
        let mut without_rdrand = host.as_slice().to_vec();
        set(&mut without_rdrand, 1, 0, |e| e.ecx &= !(1 << 30));
        let err = check(guest, &without_rdrand).unwrap_err();
        assert!(err.contains("leaf 0x1.0 ecx bits 0x40000000"), "{err}");

        // A guest that may use kvmclock, on a KVM without it.
        let mut without_kvmclock = host.as_slice().to_vec();
        set(&mut without_kvmclock, KVM_FEATURES_LEAF, 0, |e| {
            e.eax &= !(1 << 3)
        });
        let err = check(guest, &without_kvmclock).unwrap_err();
        assert!(err.contains("leaf 0x40000001.0 eax bits 0x8"), "{err}");

        // A feature KVM supports but this VMM hides (a guest given it by
        // an earlier version) still runs here: KVM is what runs it.
        let mut older = guest.to_vec();
        set(&mut older, 0xd, 0, |e| e.eax |= 1 << 9);
        set(&mut older, 7, 0, |e| e.ecx |= 1 << 3);
        assert_eq!(check(&older, host.as_slice()), Ok(()));
    }
}
