//! The host side of one VM NIC (docs/networking.md, "What vmd makes"): a tap, set up in vmd's
//! order — description, bridge, routing domain, group, link state,
//! addresses.
//!
//! What cannot be honoured on Linux without harm to the VM (a routing
//! domain the kernel has no VRFs for, an interface rdomain that differs
//! from its switch's) is logged and skipped; what would leave the VM
//! without the network it was promised (no tap, no address) fails.

use std::io;

use crate::rtnl::{Address, Rtnl};
use crate::tap::Tap;
use crate::vrf;

/// The bridge of the switch a NIC joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgePort {
    pub bridge: u32,
    /// The switch's routing domain, applied to the bridge itself.
    pub rdomain: u8,
}

/// What one NIC's host side should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPlan {
    /// `tapN` from the configuration, or the next free tap.
    pub tap: Option<String>,
    /// `vm<ID>-if<i>-<vmname>`.
    pub description: String,
    pub bridge: Option<BridgePort>,
    /// The interface's own `rdomain`.
    pub rdomain: Option<u8>,
    /// The numeric group, if the configured name maps to one.
    pub group: Option<u32>,
    pub up: bool,
    /// Local interfaces: the host side's IPv4 and (with `local inet6`)
    /// IPv6 address.
    pub addresses: Vec<Address>,
}

/// A tap set up for a NIC.
#[derive(Debug)]
pub struct HostNic {
    pub tap: Tap,
    pub index: u32,
    /// The tap's own MAC, for the DHCP responder.
    pub mac: [u8; 6],
}

/// A tap vmd made, remembered so it can be removed when its VM ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTap {
    pub index: u32,
    pub name: String,
}

impl HostNic {
    /// What to remove when the VM ends: nothing for a persistent tap that
    /// was there before.
    pub fn created(&self) -> Option<CreatedTap> {
        (!self.tap.pre_existing()).then(|| CreatedTap {
            index: self.index,
            name: self.tap.name().to_string(),
        })
    }
}

fn context(what: &str, tap: &str) -> impl FnOnce(io::Error) -> io::Error {
    let what = format!("{tap}: {what}");
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Creates and configures the tap of `plan`.
pub fn create(rtnl: &Rtnl, plan: &NicPlan) -> io::Result<HostNic> {
    let tap = Tap::create(plan.tap.as_deref()).map_err(context(
        "cannot create tap",
        plan.tap.as_deref().unwrap_or("tap"),
    ))?;
    let name = tap.name().to_string();
    let index = rtnl
        .link(&name)?
        .ok_or_else(|| io::Error::other(format!("{name} vanished after its creation")))?
        .index;
    let mac = tap.mac().map_err(context("cannot read its MAC", &name))?;
    rtnl.set_alias(index, &plan.description)
        .map_err(context("cannot set its description", &name))?;
    match plan.bridge {
        Some(port) => {
            if let Err(e) = rtnl.set_master(index, port.bridge) {
                tracing::warn!("{name}: cannot join its switch's bridge: {e}");
            }
            if plan.rdomain.is_some_and(|own| own != port.rdomain) {
                tracing::warn!(
                    "{name}: rdomain {} differs from its switch's ({}); a bridge port \
                     follows its bridge on this system",
                    plan.rdomain.unwrap_or(0),
                    port.rdomain
                );
            }
        }
        None => {
            let rdomain = plan.rdomain.unwrap_or(0);
            if let Err(e) = vrf::set_rdomain(rtnl, index, rdomain) {
                tracing::error!("{name}: cannot move to rdomain {rdomain}: {e}");
            }
        }
    }
    if let Some(group) = plan.group {
        rtnl.set_group(index, group)
            .map_err(context("cannot set its group", &name))?;
    }
    rtnl.set_up(index, plan.up)
        .map_err(context("cannot set its link state", &name))?;
    for address in &plan.addresses {
        if address.addr.is_ipv6() {
            // A stale copy of the same address would make adding fail.
            rtnl.delete_address(index, address)
                .map_err(context("cannot remove an old address", &name))?;
        }
        rtnl.add_address(index, address)
            .map_err(context(&format!("cannot add {}", address.addr), &name))?;
    }
    Ok(HostNic { tap, index, mac })
}

/// Removes a tap vmd made, unless it is already gone (its last descriptor
/// closed) or its index now names another link.
pub fn remove(rtnl: &Rtnl, tap: &CreatedTap) -> io::Result<()> {
    match rtnl.link_by_index(tap.index)? {
        Some(link) if link.name == tap.name => match rtnl.delete_link(tap.index) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other,
        },
        _ => Ok(()),
    }
}
