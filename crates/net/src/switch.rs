//! Switches (docs/networking.md, "What vmd makes"): each is a Linux bridge.
//! vmd creates the bridge when it is missing (a Linux host has no
//! `bridge0` waiting the way an OpenBSD host has), refuses a name taken
//! by something that is not a bridge, and sets its routing domain,
//! description and link state whenever the configuration is applied.

use std::io;

use crate::rtnl::Rtnl;
use crate::vrf;

/// What one switch's bridge should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchPlan {
    /// The bridge device (`interface`).
    pub bridge: String,
    /// `switch<id>-<name>`.
    pub description: String,
    pub rdomain: u8,
    pub up: bool,
}

/// Sets up the bridge of `plan` and returns its index.
pub fn apply(rtnl: &Rtnl, plan: &SwitchPlan) -> io::Result<u32> {
    let name = &plan.bridge;
    let index = match rtnl.link(name)? {
        Some(link) if link.kind.as_deref() == Some("bridge") => link.index,
        Some(link) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{name} is not a bridge (it is a {})",
                    link.kind.as_deref().unwrap_or("plain device")
                ),
            ));
        }
        None => {
            tracing::info!("creating bridge {name}");
            rtnl.create_bridge(name).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create bridge {name}: {e}"))
            })?
        }
    };
    if let Err(e) = vrf::set_rdomain(rtnl, index, plan.rdomain) {
        tracing::error!("{name}: cannot move to rdomain {}: {e}", plan.rdomain);
    }
    rtnl.set_alias(index, &plan.description)?;
    rtnl.set_up(index, plan.up)?;
    Ok(index)
}
