//! The typed configuration a parse produces and the daemon consumes.
//!
//! Settings that an instance may inherit from its template are `Option`s
//! (`None` = not given in the block); methods such as [`Vm::memory_bytes`]
//! apply the defaults of vm.conf(5), "VMs" for a VM that is not an instance.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use proto::control::{BootDevice, DiskSpec, NicKind};

use crate::diagnostics::Location;

/// Guest RAM when `memory` is not given: 512 MiB.
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// Smallest accepted `memory`: 1 MiB.
pub const MIN_MEMORY: u64 = 1 << 20;
/// Largest accepted `memory`: 128 GiB (`VMM_MAX_VM_MEM_SIZE`).
pub const MAX_MEMORY: u64 = 128 << 30;
/// vCPUs when `cpus` is not given.
pub const DEFAULT_VCPUS: u32 = 1;
/// Largest accepted `cpus` (`VMM_MAX_VCPUS_PER_VM`).
pub const MAX_VCPUS: u32 = 64;
/// Disks per VM (`VM_MAX_DISKS_PER_VM`).
pub const MAX_DISKS: usize = 4;
/// Network interfaces per VM (`VM_MAX_NICS_PER_VM`).
pub const MAX_INTERFACES: usize = 4;
/// Longest VM and instance name.
pub const MAX_VM_NAME_LEN: usize = proto::names::MAX_NAME_LEN;
/// Longest switch name, and switch reference in an interface.
pub const MAX_SWITCH_NAME_LEN: usize = 63;
/// Longest host interface or group name (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Longest path (PATH_MAX - 1), for `cdrom`.
pub const MAX_PATH_LEN: usize = 4095;
/// Longest AgentX context.
pub const MAX_AGENTX_CONTEXT_LEN: usize = 32;
/// AgentX master socket when `agentx` names none.
pub const DEFAULT_AGENTX_PATH: &str = "/var/agentx/master";
/// Seconds between staggered-start batches by default.
pub const DEFAULT_STAGGER_DELAY: u32 = 30;

/// Everything one configuration file (with its includes) defines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Global options the file set; see [`GlobalOptions::apply_to`].
    pub globals: GlobalOptions,
    /// Enabled switches in definition order. `disable`d switches are
    /// checked but not listed (vm.conf(5), "Switches").
    pub switches: Vec<Switch>,
    /// VMs and instances in file order, names unique (a later block with
    /// an existing name is skipped). The daemon registers them in this
    /// order and skips names it already has (vm.conf(5), "VMs").
    pub vms: Vec<Vm>,
}

impl Config {
    /// The global settings in force after applying this file to the
    /// defaults (daemon start, `reload`).
    pub fn settings(&self) -> GlobalSettings {
        let mut settings = GlobalSettings::default();
        self.globals.apply_to(&mut settings);
        settings
    }
}

/// Global options as written in the file; `None` = not mentioned. Kept
/// separate from [`GlobalSettings`] because `vmctl load` applies only what
/// the loaded file sets, while `reload` starts from the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalOptions {
    /// `local prefix`.
    pub local_prefix: Option<Ipv4Prefix>,
    /// `local inet6 [prefix …]`.
    pub local_inet6: Option<LocalInet6>,
    /// `socket owner`, resolved to ids (an unspecified group is gid 0).
    pub socket_owner: Option<SocketOwner>,
    /// `agentx …`.
    pub agentx: Option<Agentx>,
    /// `staggered start parallel N delay S`.
    pub staggered_start: Option<StaggeredStart>,
}

impl GlobalOptions {
    /// Overwrites in `settings` what this file set.
    pub fn apply_to(&self, settings: &mut GlobalSettings) {
        if let Some(prefix) = self.local_prefix {
            settings.local_prefix = prefix;
        }
        if let Some(inet6) = self.local_inet6 {
            settings.local_inet6 = Some(inet6);
        }
        if let Some(owner) = self.socket_owner {
            settings.socket_owner = owner;
        }
        if let Some(agentx) = &self.agentx {
            settings.agentx = Some(agentx.clone());
        }
        if let Some(staggered) = self.staggered_start {
            settings.staggered_start = staggered;
        }
    }
}

/// The daemon's global settings, defaults per vm.conf(5), "Global settings".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalSettings {
    /// Prefix local-interface addresses are carved from (docs/networking.md, "What vmd makes").
    pub local_prefix: Ipv4Prefix,
    /// IPv6 on local interfaces; `None` = off.
    pub local_inet6: Option<LocalInet6>,
    /// Owner of the control socket (mode is always 0660).
    pub socket_owner: SocketOwner,
    /// AgentX export; `None` = disabled.
    pub agentx: Option<Agentx>,
    pub staggered_start: StaggeredStart,
}

impl GlobalSettings {
    /// The defaults, with `online_cpus` as the staggered-start parallelism.
    pub fn with_online_cpus(online_cpus: u32) -> GlobalSettings {
        GlobalSettings {
            local_prefix: Ipv4Prefix::DEFAULT_LOCAL,
            local_inet6: None,
            socket_owner: SocketOwner::default(),
            agentx: None,
            staggered_start: StaggeredStart {
                parallel: online_cpus.max(1),
                delay_secs: DEFAULT_STAGGER_DELAY,
            },
        }
    }
}

impl Default for GlobalSettings {
    /// The defaults for this host (parallelism = online CPUs).
    fn default() -> GlobalSettings {
        GlobalSettings::with_online_cpus(online_cpus())
    }
}

/// Number of online host CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1.
pub fn online_cpus() -> u32 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
        _ => 1,
    }
}

/// An IPv4 prefix: `addr/len` with all host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Prefix {
    /// `100.64.0.0/10`, the default `local prefix`.
    pub const DEFAULT_LOCAL: Ipv4Prefix = Ipv4Prefix {
        addr: Ipv4Addr::new(100, 64, 0, 0),
        len: 10,
    };
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An IPv6 prefix of at most 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Prefix {
    pub addr: Ipv6Addr,
    pub len: u8,
}

impl Ipv6Prefix {
    /// A unique-local `fd00::/8`-derived /64 from 56 random bits, as
    /// `local inet6` without a prefix asks for. The daemon draws the bits
    /// once per lifetime.
    pub fn random_ula(random: [u8; 7]) -> Ipv6Prefix {
        let mut octets = [0u8; 16];
        octets[0] = 0xfd;
        octets[1..8].copy_from_slice(&random);
        Ipv6Prefix {
            addr: Ipv6Addr::from(octets),
            len: 64,
        }
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// How `local inet6` chose the IPv6 prefix of local interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalInet6 {
    /// `local inet6`: a random ULA prefix the daemon generates once per
    /// lifetime (see [`Ipv6Prefix::random_ula`]).
    Random,
    /// `local inet6 prefix <addr>/<len>`.
    Prefix(Ipv6Prefix),
}

/// Owner of the control socket as numeric ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketOwner {
    pub uid: u32,
    pub gid: u32,
}

/// `agentx [context <ctx>] [path <path>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agentx {
    /// SNMP context, at most 32 characters.
    pub context: Option<String>,
    /// Absolute path of the master agent's socket.
    pub path: String,
}

/// `staggered start parallel N delay S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaggeredStart {
    /// VMs started per batch, at least 1.
    pub parallel: u32,
    /// Seconds between batches.
    pub delay_secs: u32,
}

/// A `switch` block: a pre-existing host bridge VM interfaces can join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// Sequential id in definition order, starting at
    /// [`crate::LoadOptions::first_switch_id`] (used in the bridge alias
    /// `switch<id>-<name>`).
    pub id: u32,
    pub name: String,
    /// The bridge device (`interface`). **\[Linux\]** any bridge name; that
    /// the device exists and is a bridge is checked when applying.
    pub interface: String,
    /// Interface group for every VM interface on this switch.
    pub group: Option<String>,
    /// `locked lladdr`: MAC enforcement on every member interface.
    pub locked: bool,
    /// Routing domain (0..=255) of the bridge and, unless they set their
    /// own, of its member interfaces; `None` = the default table.
    pub rdomain: Option<u8>,
    /// Administratively up (default) or `down`.
    pub up: bool,
    /// Where the `switch` keyword is.
    pub defined_at: Location,
}

/// A `vm` block, or `vm "<template>" instance "<name>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// The VM's name (the instance name for an instance).
    pub name: String,
    /// For `vm "<parent>" instance "<name>"`: the template's name. The
    /// daemon resolves the template and fills unset options from it
    /// (vm.conf(5), "Instances"), so the device checks made here for plain VMs are
    /// left to it for instances.
    pub instance_of: Option<String>,
    /// Started whenever the configuration is applied (`enable`, default)
    /// or only on request (`disable`).
    pub enabled: bool,
    /// `memory`, in bytes, a whole number of MiB in 1 MiB..=128 GiB.
    pub memory: Option<u64>,
    /// `cpus` (Linux extension), 1..=64.
    pub vcpus: Option<u32>,
    /// `boot <path>`: canonical path of a kernel or BIOS image; `None` =
    /// the default BIOS.
    pub boot: Option<String>,
    /// `boot device disk|cdrom|net`; `None` = automatic.
    pub boot_device: Option<BootDevice>,
    /// `cmdline "…"` (Linux extension): kernel command line for a direct
    /// kernel boot.
    pub cmdline: Option<String>,
    /// `initrd "…"` (Linux extension): canonical path of an initial
    /// ramdisk for a direct kernel boot.
    pub initrd: Option<String>,
    /// `user-data "…"` (Linux extension): canonical path of the
    /// cloud-init user-data vmd gives the guest (docs/cloud-init.md); read
    /// when the VM starts.
    pub user_data: Option<String>,
    /// `ssh-key "…"` (Linux extension): canonical path of an SSH public
    /// key for the guest's default user, through cloud-init.
    pub ssh_key: Option<String>,
    /// `cdrom <path>`, stored as written (opened at start).
    pub cdrom: Option<String>,
    /// `disk` statements in guest order: canonical path and format.
    pub disks: Vec<DiskSpec>,
    /// Interfaces in guest NIC order, already padded with plain interfaces
    /// up to `interfaces N`.
    pub interfaces: Vec<Interface>,
    /// `interfaces N` as written, if given (instances need to know whether
    /// an interface count was asked for).
    pub interface_count: Option<u32>,
    /// `owner`; unset parts mean root / no group.
    pub owner: Owner,
    /// `allow instance …`; `None` = no instances for anyone but root.
    pub instances: Option<InstancePermissions>,
    /// `sev`: AMD SEV requested (**\[Linux\]** unsupported: refused at start).
    pub sev: bool,
    /// Where the `vm` keyword is.
    pub defined_at: Location,
}

impl Vm {
    /// Guest RAM in bytes: `memory` or 512 MiB.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.unwrap_or(DEFAULT_MEMORY)
    }

    /// Number of vCPUs: `cpus` or 1.
    pub fn vcpu_count(&self) -> u32 {
        self.vcpus.unwrap_or(DEFAULT_VCPUS)
    }

    /// Whether the block set any option that describes a device (vm.conf(5),
    /// "VMs": a VM without one is rejected with "no devices").
    pub fn has_device_options(&self) -> bool {
        self.boot.is_some()
            || !self.disks.is_empty()
            || self.cdrom.is_some()
            || self.memory.is_some()
            || !self.interfaces.is_empty()
            || self.interface_count.is_some()
    }

    /// Whether there is something to boot from besides the default BIOS
    /// (vm.conf(5), "VMs": a kernel, a disk or a CD-ROM is required).
    pub fn has_boot_source(&self) -> bool {
        self.boot.is_some() || !self.disks.is_empty() || self.cdrom.is_some()
    }
}

/// Who owns a VM, or who may create instances of it. `None` parts were not
/// given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Owner {
    /// The owner user: as configured, else root.
    pub fn uid_or_root(&self) -> u32 {
        self.uid.unwrap_or(0)
    }
}

/// `allow instance { … }` of a template (vm.conf(5), "Instances").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstancePermissions {
    /// Instances may choose a kernel/BIOS image.
    pub boot: bool,
    /// … an ISO image.
    pub cdrom: bool,
    /// … disk images.
    pub disk: bool,
    /// … be templates themselves.
    pub instance: bool,
    /// … a different interface configuration.
    pub interface: bool,
    /// … a different memory size.
    pub memory: bool,
    /// … a different number of vCPUs (`cpus`, Linux extension).
    pub cpus: bool,
    /// Who may create instances (`owner` flag); both `None` = root only.
    pub owner: Owner,
}

/// A `[local] interface` statement, or a padding interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Host tap device.
    pub tap: Tap,
    /// `local`: vmd addresses the host side and answers DHCP (docs/networking.md, "What vmd makes").
    pub local: bool,
    /// `switch <name>`: the switch to join (checked when the VM starts).
    pub switch: Option<String>,
    /// `group <name>`.
    pub group: Option<String>,
    /// `lladdr <mac>`; `None` = a random MAC chosen at registration (see
    /// [`MacAddr::random_for_interface`]).
    pub lladdr: Option<MacAddr>,
    /// `locked lladdr`: MAC enforcement for this interface.
    pub locked: bool,
    /// `rdomain <N>`; `None` = the switch's or the default.
    pub rdomain: Option<u8>,
    /// Administratively up (default) or `down`.
    pub up: bool,
}

impl Default for Interface {
    /// A plain interface: next free tap, up, random MAC, not locked.
    fn default() -> Interface {
        Interface {
            tap: Tap::NextFree,
            local: false,
            switch: None,
            group: None,
            lladdr: None,
            locked: false,
            rdomain: None,
            up: true,
        }
    }
}

impl Interface {
    /// The interface `vmctl start -L` / `-n switch` / `-i` padding asks for.
    pub fn from_nic_kind(kind: &NicKind) -> Interface {
        match kind {
            NicKind::Plain => Interface::default(),
            NicKind::Local => Interface {
                local: true,
                ..Interface::default()
            },
            NicKind::Switch(name) => Interface {
                switch: Some(name.clone()),
                ..Interface::default()
            },
        }
    }
}

/// Which host tap device an interface uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tap {
    /// `tap` or no name: the next free tap device.
    NextFree,
    /// `tap<N>`: exactly this device (created on demand on Linux).
    Named(String),
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `xx:xx:xx:xx:xx:xx` with one or two hex digits per byte.
    pub fn parse(text: &str) -> Option<MacAddr> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next()?;
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(MacAddr(bytes))
    }

    /// The random MAC of the `index`-th interface (0-based):
    /// `fe:e1:bb:dX:YY:ZZ` with X = (index + 1) & 0xf and YY, ZZ random.
    pub fn random_for_interface(index: usize, random: [u8; 2]) -> MacAddr {
        let x = ((index + 1) & 0xf) as u8;
        MacAddr([0xfe, 0xe1, 0xbb, 0xd0 | x, random[0], random[1]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses() {
        let mac = MacAddr::parse("fe:e1:bb:d1:0:7").unwrap();
        assert_eq!(mac.0, [0xfe, 0xe1, 0xbb, 0xd1, 0, 7]);
        assert_eq!(mac.to_string(), "fe:e1:bb:d1:00:07");
        assert_eq!(MacAddr::parse("FE:E1:BB:D1:00:07"), Some(mac));
        for bad in [
            "",
            "fe:e1:bb:d1:00",
            "fe:e1:bb:d1:00:07:08",
            "fe:e1:bb:d1:00:",
            "fe:e1:bb:d1:000:7",
            "fe-e1-bb-d1-00-07",
            "fe:e1:bb:d1:00:0g",
            "+f:e1:bb:d1:00:07",
        ] {
            assert_eq!(MacAddr::parse(bad), None, "{bad}");
        }
        assert_eq!(
            MacAddr::random_for_interface(0, [0x12, 0x34]).to_string(),
            "fe:e1:bb:d1:12:34"
        );
        assert_eq!(
            MacAddr::random_for_interface(3, [0, 0]).to_string(),
            "fe:e1:bb:d4:00:00"
        );
        assert_eq!(
            MacAddr::random_for_interface(15, [0, 0]).to_string(),
            "fe:e1:bb:d0:00:00"
        );
    }

    #[test]
    fn global_defaults() {
        let settings = GlobalSettings::with_online_cpus(6);
        assert_eq!(settings.local_prefix.to_string(), "100.64.0.0/10");
        assert_eq!(settings.local_inet6, None);
        assert_eq!(settings.socket_owner, SocketOwner { uid: 0, gid: 0 });
        assert_eq!(settings.agentx, None);
        assert_eq!(
            settings.staggered_start,
            StaggeredStart {
                parallel: 6,
                delay_secs: 30
            }
        );
        assert!(GlobalSettings::default().staggered_start.parallel >= 1);
        assert_eq!(
            GlobalSettings::default().staggered_start.parallel,
            online_cpus()
        );
    }

    #[test]
    fn applying_globals_changes_only_what_was_set() {
        let mut settings = GlobalSettings::with_online_cpus(2);
        settings.socket_owner = SocketOwner { uid: 5, gid: 6 };
        let options = GlobalOptions {
            local_inet6: Some(LocalInet6::Random),
            staggered_start: Some(StaggeredStart {
                parallel: 3,
                delay_secs: 1,
            }),
            ..GlobalOptions::default()
        };
        options.apply_to(&mut settings);
        assert_eq!(settings.socket_owner, SocketOwner { uid: 5, gid: 6 });
        assert_eq!(settings.local_inet6, Some(LocalInet6::Random));
        assert_eq!(
            settings.staggered_start,
            StaggeredStart {
                parallel: 3,
                delay_secs: 1
            }
        );
        assert_eq!(settings.local_prefix, Ipv4Prefix::DEFAULT_LOCAL);
    }

    #[test]
    fn random_ula() {
        let prefix = Ipv6Prefix::random_ula([1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(prefix.to_string(), "fd01:203:405:607::/64");
    }

    #[test]
    fn interfaces_from_command_line_kinds() {
        assert_eq!(
            Interface::from_nic_kind(&NicKind::Plain),
            Interface::default()
        );
        assert!(Interface::from_nic_kind(&NicKind::Local).local);
        assert_eq!(
            Interface::from_nic_kind(&NicKind::Switch("uplink".into()))
                .switch
                .as_deref(),
            Some("uplink")
        );
        let plain = Interface::default();
        assert!(plain.up && !plain.locked && plain.lladdr.is_none() && plain.tap == Tap::NextFree);
    }
}
