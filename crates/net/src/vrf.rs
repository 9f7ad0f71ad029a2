//! Routing domains as VRFs (docs/networking.md, "What vmd makes"): rdomain 0 is the main
//! table; rdomain N > 0 is a VRF device `rdomainN` bound to table N,
//! created the first time something is put in it and left in place
//! afterwards, as a routing table would be (routes an administrator adds
//! to it must not vanish with the last VM).

use std::io;

use crate::rtnl::Rtnl;

/// The VRF device of rdomain `rdomain`.
pub fn vrf_name(rdomain: u8) -> String {
    format!("rdomain{rdomain}")
}

/// The index of the VRF of `rdomain` (> 0), created and brought up if
/// missing. A kernel without VRF support answers `EOPNOTSUPP`.
pub fn ensure_vrf(rtnl: &Rtnl, rdomain: u8) -> io::Result<u32> {
    let name = vrf_name(rdomain);
    let index = match rtnl.link(&name)? {
        Some(link) if link.kind.as_deref() == Some("vrf") => link.index,
        Some(_) => {
            return Err(io::Error::other(format!("{name} exists and is not a VRF")));
        }
        None => rtnl.create_vrf(&name, u32::from(rdomain))?,
    };
    rtnl.set_up(index, true)?;
    Ok(index)
}

/// Puts link `index` in routing domain `rdomain`: enslaved to its VRF, or
/// freed from any VRF for rdomain 0.
pub fn set_rdomain(rtnl: &Rtnl, index: u32, rdomain: u8) -> io::Result<()> {
    if rdomain == 0 {
        let in_vrf = match rtnl.link_by_index(index)?.and_then(|l| l.master) {
            Some(master) => rtnl
                .link_by_index(master)?
                .is_some_and(|m| m.kind.as_deref() == Some("vrf")),
            None => false,
        };
        return if in_vrf {
            rtnl.set_master(index, 0)
        } else {
            Ok(())
        };
    }
    let vrf = ensure_vrf(rtnl, rdomain)?;
    rtnl.set_master(index, vrf)
}
