//! The address plan of local interfaces (docs/networking.md, "What vmd makes"): every NIC of every
//! VM gets its own /31 out of the `local prefix`, the even address for the
//! host side of the tap and the odd one for the guest, so neither side
//! needs any configuration but the DHCP reply.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Host bits the plan needs below the VM id: one octet for the NIC pairs.
const NIC_BITS: u32 = 8;
/// NIC indexes whose pair fits in the low octet (2i + 3 ≤ 255).
pub const MAX_NIC_INDEX: usize = 126;
/// Prefix length of the host side's IPv4 address.
pub const IPV4_PREFIX_LEN: u8 = 31;
/// Prefix length of the host side's IPv6 address.
pub const IPV6_PREFIX_LEN: u8 = 96;

/// The two ends of a local interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPair {
    /// The tap's address, also the guest's router and DNS server.
    pub host: Ipv4Addr,
    /// What the DHCP responder leases to the guest.
    pub guest: Ipv4Addr,
}

/// VM id or NIC index beyond what the prefix can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeExceeded {
    pub vm_id: u32,
    pub nic: usize,
}

impl fmt::Display for RangeExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dhcp address range exceeded, vm id {} interface {}",
            self.vm_id, self.nic
        )
    }
}

impl std::error::Error for RangeExceeded {}

/// The pair of NIC `nic` (0-based among all the VM's NICs) of VM `vm_id`
/// in `prefix/prefix_len`: host = prefix | id << 8 | (2·nic + 2),
/// guest = host + 1.
pub fn ipv4_pair(
    prefix: Ipv4Addr,
    prefix_len: u8,
    vm_id: u32,
    nic: usize,
) -> Result<LocalPair, RangeExceeded> {
    let exceeded = RangeExceeded { vm_id, nic };
    let id_bits = 32u32
        .checked_sub(u32::from(prefix_len) + NIC_BITS)
        .ok_or(exceeded)?;
    if nic > MAX_NIC_INDEX || u64::from(vm_id) >= 1u64 << id_bits {
        return Err(exceeded);
    }
    let host = u32::from(prefix) | vm_id << NIC_BITS | (2 * nic as u32 + 2);
    Ok(LocalPair {
        host: Ipv4Addr::from(host),
        guest: Ipv4Addr::from(host + 1),
    })
}

/// Whether `pair` is one the plan of `prefix/prefix_len` can give: both
/// ends inside the prefix, the host's the even address of a /31 the
/// NIC octet can hold and the guest's the odd one. A VM received from
/// another host keeps its local interfaces' pairs only when they are
/// (docs/networking.md).
pub fn is_planned_pair(prefix: Ipv4Addr, prefix_len: u8, pair: LocalPair) -> bool {
    let Some(shift) = 32u32.checked_sub(u32::from(prefix_len)) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(shift).unwrap_or(0);
    let host = u32::from(pair.host);
    let low = host & ((1 << NIC_BITS) - 1);
    host & mask == u32::from(prefix) & mask
        && u32::from(pair.guest) == host + 1
        && low >= 2
        && low.is_multiple_of(2)
        && (low as usize - 2) / 2 <= MAX_NIC_INDEX
}

/// The host side's IPv6 address with `local inet6`: the prefix (at most
/// /64), the guest's IPv4 address in bytes 8–11 and 1 in the last byte.
pub fn ipv6_host(prefix: Ipv6Addr, guest: Ipv4Addr) -> Ipv6Addr {
    let mut octets = prefix.octets();
    octets[8..12].copy_from_slice(&guest.octets());
    octets[12..].fill(0);
    octets[15] = 1;
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGNAT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);

    #[test]
    fn first_nics_of_vm_one() {
        let pair = ipv4_pair(CGNAT, 10, 1, 0).unwrap();
        assert_eq!(pair.host, Ipv4Addr::new(100, 64, 1, 2));
        assert_eq!(pair.guest, Ipv4Addr::new(100, 64, 1, 3));
        let second = ipv4_pair(CGNAT, 10, 1, 1).unwrap();
        assert_eq!(second.host, Ipv4Addr::new(100, 64, 1, 4));
        assert_eq!(second.guest, Ipv4Addr::new(100, 64, 1, 5));
    }

    #[test]
    fn large_ids_spill_into_the_next_octets() {
        let pair = ipv4_pair(CGNAT, 10, 300, 0).unwrap();
        assert_eq!(pair.host, Ipv4Addr::new(100, 65, 44, 2));
        assert_eq!(pair.guest, Ipv4Addr::new(100, 65, 44, 3));
    }

    #[test]
    fn the_prefix_bounds_ids_and_nics() {
        // /10 leaves 14 bits for the id.
        assert!(ipv4_pair(CGNAT, 10, 16383, 0).is_ok());
        assert_eq!(
            ipv4_pair(CGNAT, 10, 16384, 0),
            Err(RangeExceeded {
                vm_id: 16384,
                nic: 0
            })
        );
        // /16 leaves 8.
        let ten = Ipv4Addr::new(10, 1, 0, 0);
        assert_eq!(
            ipv4_pair(ten, 16, 255, 126).unwrap().guest,
            Ipv4Addr::new(10, 1, 255, 255)
        );
        assert!(ipv4_pair(ten, 16, 256, 0).is_err());
        assert!(ipv4_pair(ten, 16, 1, 127).is_err());
        // A prefix too long to hold anything.
        assert!(ipv4_pair(ten, 30, 0, 0).is_err());
        assert_eq!(
            RangeExceeded { vm_id: 7, nic: 2 }.to_string(),
            "dhcp address range exceeded, vm id 7 interface 2"
        );
    }

    #[test]
    fn planned_pairs_are_recognised() {
        let pair = |host: [u8; 4], guest: [u8; 4]| LocalPair {
            host: Ipv4Addr::from(host),
            guest: Ipv4Addr::from(guest),
        };
        let planned = ipv4_pair(CGNAT, 10, 300, 3).unwrap();
        assert!(is_planned_pair(CGNAT, 10, planned));
        assert!(is_planned_pair(
            CGNAT,
            10,
            pair([100, 64, 7, 2], [100, 64, 7, 3])
        ));
        // Another prefix, the guest's address on the host side, a guest
        // that is not the host's neighbour, the .0/.1 pair no NIC has.
        assert!(!is_planned_pair(
            Ipv4Addr::new(10, 1, 0, 0),
            16,
            pair([100, 64, 7, 2], [100, 64, 7, 3])
        ));
        assert!(!is_planned_pair(
            CGNAT,
            10,
            pair([100, 64, 7, 3], [100, 64, 7, 4])
        ));
        assert!(!is_planned_pair(
            CGNAT,
            10,
            pair([100, 64, 7, 2], [100, 64, 7, 5])
        ));
        assert!(!is_planned_pair(
            CGNAT,
            10,
            pair([100, 64, 7, 0], [100, 64, 7, 1])
        ));
        assert!(!is_planned_pair(CGNAT, 33, planned));
    }

    #[test]
    fn ipv6_embeds_the_guest_address() {
        let prefix: Ipv6Addr = "fd12:3456:789a:1::".parse().unwrap();
        let host = ipv6_host(prefix, Ipv4Addr::new(100, 64, 1, 3));
        assert_eq!(
            host,
            "fd12:3456:789a:1:6440:103::1".parse::<Ipv6Addr>().unwrap()
        );
    }
}
