//! Can this host continue a guest that saw a given CPUID? The rules of
//! vmd.md §12, applied to what KVM can offer here
//! (`KVM_GET_SUPPORTED_CPUID`): the same vendor and at least as many basic
//! leaves; every feature bit the guest saw among the feature leaves is one
//! KVM supports; XSAVE areas no larger than this host's.
//!
//! Bits that report state rather than features are not compared: OSXSAVE
//! and OSPKE mirror the guest's CR4, and HTT says that the VM has more
//! than one vCPU, which is this VMM's to decide, not the host's.

use kvm_bindings::kvm_cpuid_entry2;

use crate::cpuid::KVM_FEATURES_LEAF;

/// Leaf 1 ECX bit 27: OSXSAVE, CR4.OSXSAVE as the guest set it.
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
/// Leaf 1 EDX bit 28: HTT, set for VMs of several vCPUs.
const LEAF1_EDX_HTT: u32 = 1 << 28;
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
    (1, 0, Register::Edx, LEAF1_EDX_HTT),
    (7, 0, Register::Ebx, 0),
    (7, 0, Register::Ecx, LEAF7_ECX_OSPKE),
    (7, 0, Register::Edx, 0),
    (7, 1, Register::Eax, 0),
    (0xd, 0, Register::Eax, 0),
    (0xd, 0, Register::Edx, 0),
    (0xd, 1, Register::Eax, 0),
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
    for &(leaf, subleaf, reg, ignored) in FEATURE_BITS {
        let Some(g) = find(guest, leaf, subleaf) else {
            continue;
        };
        let h = find(host, leaf, subleaf).unwrap_or(&zero);
        let missing = reg.of(g) & !reg.of(h) & !ignored;
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
}
