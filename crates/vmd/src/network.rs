//! The host side of VM networking, as the daemon (root) does it: switch
//! bridges when the configuration is applied (docs/networking.md, "What vmd makes"), one tap per
//! NIC when a VM starts (docs/networking.md), and their removal when it ends.
//!
//! The taps' descriptors go to the VM process, so a tap lives exactly as
//! long as that process; [`VmTaps`] removes them explicitly as well, so
//! nothing is left even if a descriptor leaked somewhere.

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::OwnedFd;

use conf::model::{GlobalSettings, Interface, LocalInet6, Switch, Tap};
use net::descriptions::{switch_description, tap_description};
use net::host_nic::{self, BridgePort, CreatedTap, NicPlan};
use net::local_addr::{self, IPV4_PREFIX_LEN, IPV6_PREFIX_LEN, LocalPair};
use net::rtnl::{Address, Rtnl};
use net::switch::{self, SwitchPlan};
use proto::ErrorCode;
use proto::error::Failed;
use proto::vmchannel::{LaunchNic, LocalAddrs};

use crate::params::NicParams;
use crate::vmproc::LaunchDescriptors;

/// The daemon's netlink socket and what it chose once per lifetime.
pub struct Network {
    rtnl: Option<Rtnl>,
    /// The prefix `local inet6` without a prefix stands for, drawn the
    /// first time it is needed.
    random_inet6: Option<Ipv6Addr>,
}

/// Where Debian's ipxe-qemu puts iPXE for virtio-net: the legacy PXE
/// image (1af4:1041, the modern device) followed by the EFI one.
pub const PXE_ROM_PATHS: [&str; 2] = [
    "/usr/lib/ipxe/qemu/efi-virtio.rom",
    "/usr/share/qemu/efi-virtio.rom",
];

/// A VM being started, as far as its NICs are concerned.
pub struct VmNics<'a> {
    pub id: u32,
    pub name: &'a str,
    pub nics: &'a [NicParams],
    /// Boot device `net`: the first NIC carries the PXE option ROM.
    pub net_boot: bool,
    /// Per NIC, the addresses a received VM's local interface had on the
    /// host it came from: kept when this host has them free.
    pub keep: &'a [Option<LocalAddrs>],
}

impl Network {
    pub fn new() -> Network {
        Network {
            rtnl: None,
            random_inet6: None,
        }
    }

    fn rtnl(&mut self) -> io::Result<&Rtnl> {
        if self.rtnl.is_none() {
            self.rtnl = Some(Rtnl::open()?);
        }
        Ok(self.rtnl.as_ref().expect("just opened"))
    }

    /// Sets up the bridge of each switch; one whose bridge cannot be made
    /// is logged, and tried again when a VM wants to join it.
    pub fn apply_switches(&mut self, switches: &[Switch]) {
        for s in switches {
            if self.bridge_of(s).is_ok() {
                tracing::debug!("switch {} on bridge {}", s.name, s.interface);
            }
        }
    }

    /// Creates and configures the taps of a VM's NICs, puts their
    /// descriptors into `fds` and says what the VM process needs to know
    /// of each. What the VM goes without (a switch, its addresses, a boot
    /// ROM) is logged and added to `warnings`, for the user who started
    /// it.
    pub fn create_nics(
        &mut self,
        vm: &VmNics<'_>,
        switches: &[Switch],
        settings: &GlobalSettings,
        fds: &mut LaunchDescriptors,
        warnings: &mut Vec<String>,
    ) -> Result<(Vec<LaunchNic>, VmTaps), Failed> {
        let mut launch = Vec::new();
        let mut taps = VmTaps::default();
        for (index, nic) in vm.nics.iter().enumerate() {
            let iface = &nic.iface;
            let local = match iface.local {
                true => Some(self.local_pair(
                    settings,
                    vm,
                    index,
                    vm.keep.get(index).copied().flatten(),
                    warnings,
                )?),
                false => None,
            };
            let switch = configured_switch(iface, switches, index, warnings);
            let bridge = match switch {
                Some(s) => self.bridge_of(s).map_err(|e| {
                    warnings.push(format!(
                        "switch \"{}\": {e}; interface {index} stays unattached",
                        s.name
                    ))
                }),
                None => Err(()),
            }
            .ok();
            let plan = NicPlan {
                tap: match &iface.tap {
                    Tap::NextFree => None,
                    Tap::Named(name) => Some(name.clone()),
                },
                description: tap_description(vm.id, index, vm.name),
                bridge: bridge.map(|bridge| BridgePort {
                    bridge,
                    rdomain: switch.and_then(|s| s.rdomain).unwrap_or(0),
                }),
                rdomain: iface.rdomain,
                group: group_of(iface, switch, warnings),
                up: iface.up,
                addresses: self.addresses(settings, local),
            };
            let rtnl = self.rtnl().map_err(|e| io_failure("netlink", &e))?;
            let host = host_nic::create(rtnl, &plan).map_err(|e| {
                tracing::warn!("{}: {e}", vm.name);
                Failed::because(ErrorCode::from_io(&e), format!("interface {index}: {e}"))
            })?;
            taps.created.extend(host.created());
            taps.names.push(host.tap.name().to_string());
            let locked = iface.locked || switch.is_some_and(|s| s.locked);
            launch.push(LaunchNic {
                guest_mac: nic.mac,
                host_mac: host.mac,
                locked,
                local: local.map(|pair| LocalAddrs {
                    host: pair.host.octets(),
                    guest: pair.guest.octets(),
                }),
                tap: fds.push(host.tap.into_fd()),
                boot_rom: match vm.net_boot && index == 0 {
                    true => open_pxe_rom(warnings).map(|rom| fds.push(rom)),
                    false => None,
                },
            });
        }
        Ok((launch, taps))
    }

    /// The /31 of a local interface: the one a received VM had, if this
    /// host can give it (see [`Network::keepable`]), else the plan's for
    /// the VM's id; a VM id or NIC index beyond the prefix fails the
    /// start.
    fn local_pair(
        &mut self,
        settings: &GlobalSettings,
        vm: &VmNics<'_>,
        index: usize,
        keep: Option<LocalAddrs>,
        warnings: &mut Vec<String>,
    ) -> Result<LocalPair, Failed> {
        let prefix = settings.local_prefix;
        let kept = keep.map(|addrs| LocalPair {
            host: addrs.host.into(),
            guest: addrs.guest.into(),
        });
        let refusal = match kept {
            Some(pair) => match self.keepable(settings, pair) {
                Ok(()) => {
                    tracing::info!(
                        "{}: vm {} interface {index} keeps its addresses: host {}, guest {}",
                        vm.name,
                        vm.id,
                        pair.host,
                        pair.guest
                    );
                    return Ok(pair);
                }
                Err(why) => Some((pair, why)),
            },
            None => None,
        };
        let planned =
            local_addr::ipv4_pair(prefix.addr, prefix.len, vm.id, index).map_err(|e| {
                tracing::warn!("{e}");
                Failed::because(ErrorCode(libc::EADDRNOTAVAIL), e.to_string())
            })?;
        if let Some((old, why)) = refusal {
            let warning = format!(
                "interface {index} cannot keep host {} and guest {} ({why}): \
                 it gets host {} and guest {} instead; the guest must renew its DHCP lease",
                old.host, old.guest, planned.host, planned.guest
            );
            tracing::warn!("{}: vm {} {warning}", vm.name, vm.id);
            warnings.push(warning);
        }
        Ok(planned)
    }

    /// Whether a received VM's local interface can keep `pair` here: a
    /// pair this host's `local prefix` could give, neither of whose
    /// addresses any interface of this host has (another VM's tap, of
    /// this vmd or another, or the host's own).
    fn keepable(&mut self, settings: &GlobalSettings, pair: LocalPair) -> Result<(), String> {
        let prefix = settings.local_prefix;
        if !local_addr::is_planned_pair(prefix.addr, prefix.len, pair) {
            return Err(format!(
                "not a local interface's pair in this host's prefix {}/{}",
                prefix.addr, prefix.len
            ));
        }
        let rtnl = self.rtnl().map_err(|e| format!("netlink: {e}"))?;
        let addresses = rtnl
            .all_addresses()
            .map_err(|e| format!("cannot list this host's addresses: {e}"))?;
        let taken = addresses
            .iter()
            .find(|(_, a)| a.addr == IpAddr::V4(pair.host) || a.addr == IpAddr::V4(pair.guest));
        match taken {
            Some((link, a)) => {
                let name = match rtnl.link_by_index(*link) {
                    Ok(Some(link)) => link.name,
                    _ => format!("link {link}"),
                };
                Err(format!("{} is in use on {name}", a.addr))
            }
            None => Ok(()),
        }
    }

    /// The host side's addresses of a local interface.
    fn addresses(&mut self, settings: &GlobalSettings, local: Option<LocalPair>) -> Vec<Address> {
        let Some(pair) = local else {
            return Vec::new();
        };
        let mut addresses = vec![Address {
            addr: IpAddr::V4(pair.host),
            prefix_len: IPV4_PREFIX_LEN,
        }];
        let prefix6 = match settings.local_inet6 {
            None => None,
            Some(LocalInet6::Prefix(p)) => Some(p.addr),
            Some(LocalInet6::Random) => Some(*self.random_inet6.get_or_insert_with(random_ula)),
        };
        if let Some(prefix) = prefix6 {
            addresses.push(Address {
                addr: IpAddr::V6(local_addr::ipv6_host(prefix, pair.guest)),
                prefix_len: IPV6_PREFIX_LEN,
            });
        }
        addresses
    }

    /// The index of a switch's bridge, made sure of now; an error
    /// (logged) leaves the tap unattached.
    fn bridge_of(&mut self, s: &Switch) -> Result<u32, io::Error> {
        let plan = switch_plan(s);
        self.rtnl()
            .and_then(|rtnl| switch::apply(rtnl, &plan))
            .inspect_err(|e| tracing::warn!("switch \"{}\": {e}", s.name))
    }
}

/// The configured switch interface `index` names. Its flags (locked,
/// group, rdomain) apply to the NIC; an unknown name does not fail the
/// start, as on OpenBSD, but is a warning (vmd(8)).
fn configured_switch<'s>(
    iface: &Interface,
    switches: &'s [Switch],
    index: usize,
    warnings: &mut Vec<String>,
) -> Option<&'s Switch> {
    let name = iface.switch.as_ref()?;
    let found = switches.iter().find(|s| &s.name == name);
    if found.is_none() {
        tracing::warn!("switch \"{name}\" not found");
        warnings.push(format!(
            "switch \"{name}\" not found; interface {index} stays unattached"
        ));
    }
    found
}

/// The PXE option ROM, if one is installed; without it a network boot
/// still gets its DHCP answers, but the firmware has nothing to run.
fn open_pxe_rom(warnings: &mut Vec<String>) -> Option<OwnedFd> {
    let rom = PXE_ROM_PATHS
        .iter()
        .find_map(|path| std::fs::File::open(path).ok());
    if rom.is_none() {
        let warning = format!(
            "no PXE option ROM ({}): install ipxe-qemu",
            PXE_ROM_PATHS[0]
        );
        tracing::warn!("{warning}");
        warnings.push(warning);
    }
    rom.map(OwnedFd::from)
}

fn io_failure(what: &str, e: &io::Error) -> Failed {
    tracing::warn!("{what}: {e}");
    Failed::because(ErrorCode::from_io(e), format!("{what}: {e}"))
}

fn switch_plan(s: &Switch) -> SwitchPlan {
    SwitchPlan {
        bridge: s.interface.clone(),
        description: switch_description(s.id, &s.name),
        rdomain: s.rdomain.unwrap_or(0),
        up: s.up,
    }
}

/// The numeric group of a NIC: the interface's group, else its switch's
/// (docs/networking.md, "What vmd makes"). Names the system does not know are logged
/// and skipped, and added to `warnings`.
fn group_of(iface: &Interface, switch: Option<&Switch>, warnings: &mut Vec<String>) -> Option<u32> {
    let name = iface
        .group
        .as_deref()
        .or_else(|| switch.and_then(|s| s.group.as_deref()))?;
    let number = net::groups::resolve(name);
    if number.is_none() {
        tracing::warn!("group {name} unsupported on this system");
        warnings.push(format!("group {name} unsupported on this system"));
    }
    number
}

/// `fd` and 56 random bits, then a zero subnet id: a /64 unique local
/// prefix (vm.conf(5), "Global settings").
fn random_ula() -> Ipv6Addr {
    let mut random = [0u8; 7];
    // SAFETY: getrandom writes at most 7 bytes into `random`.
    unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    conf::model::Ipv6Prefix::random_ula(random).addr
}

/// The taps vmd made for one run of a VM; dropping this removes whatever
/// of them is still there (the VM process ended, or is being ended).
#[derive(Debug, Default)]
pub struct VmTaps {
    created: Vec<CreatedTap>,
    /// Each NIC's tap, in NIC order (`status -v`).
    names: Vec<String>,
}

impl VmTaps {
    /// The tap of each NIC, in NIC order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Removes the taps now (the VM process has ended).
    pub fn remove(&mut self) {
        if self.created.is_empty() {
            return;
        }
        let rtnl = match Rtnl::open() {
            Ok(rtnl) => rtnl,
            Err(e) => {
                tracing::warn!("cannot remove taps: {e}");
                return;
            }
        };
        for tap in &self.created {
            if let Err(e) = host_nic::remove(&rtnl, tap) {
                tracing::warn!("cannot remove {}: {e}", tap.name);
            }
        }
        self.created.clear();
    }
}

impl Drop for VmTaps {
    /// Whatever way a run ends (stop, reset, daemon shutdown), its taps go.
    fn drop(&mut self) {
        self.remove();
    }
}
