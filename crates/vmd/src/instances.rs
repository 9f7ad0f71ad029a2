//! VM instances (vm.conf(5), "Instances"): a VM made from a configured template, with
//! what it does not say copied from the template, and what a non-root
//! creator may change limited by the template's `allow instance`.

use conf::model::{InstancePermissions, Interface, MacAddr, Tap};
use disk::Expect;
use proto::ErrorCode;
use proto::control::{BootDevice, DiskSpec};

use crate::config;
use crate::params::{Owner, VmParams};
use crate::permissions;

/// What the instance asks for; `None` or empty means "as the template".
#[derive(Debug, Default, Clone)]
pub struct InstanceSpec {
    pub memory: Option<u64>,
    pub vcpus: Option<u32>,
    /// A boot image path chosen for the instance (vm.conf `boot`).
    pub boot: Option<String>,
    /// A boot image handed over by vmctl `-b` (already opened by the user).
    pub kernel_given: bool,
    pub cmdline: Option<String>,
    pub initrd: Option<String>,
    pub cdrom: Option<String>,
    pub disks: Vec<DiskSpec>,
    /// The instance's own interfaces, first in guest order.
    pub interfaces: Vec<Interface>,
    /// An explicit interface count (vm.conf `interfaces N`, or vmctl's
    /// interface options).
    pub interface_count: Option<usize>,
    pub boot_device: Option<BootDevice>,
    /// A group asked for in vm.conf `owner`.
    pub owner_gid: Option<u32>,
    /// A user asked for in vm.conf `owner` (root only).
    pub owner_uid: Option<u32>,
    /// The instance carries an `allow instance` of its own.
    pub has_own_allow: bool,
}

/// The template as the registry knows it.
pub struct Template<'a> {
    pub params: &'a VmParams,
    pub owner: Owner,
    /// Its `allow instance`; `None` = only root may make instances.
    pub allow: Option<&'a InstancePermissions>,
}

/// A resolved instance.
#[derive(Debug)]
pub struct Instance {
    pub params: VmParams,
    pub owner: Owner,
    /// What instances of this instance may do (only if the template
    /// allowed instances of instances).
    pub allow: Option<InstancePermissions>,
}

/// Why an instance was refused: the code for vmctl and the text for the log.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: String,
}

fn refuse(code: ErrorCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// Why a file the requester chose cannot be used: EPERM when they may
/// not open it, else `missing` (the code of the kind of file), with the
/// path and the reason.
fn unusable(path: &str, err: &std::io::Error, missing: ErrorCode) -> Refusal {
    let code = match err.kind() {
        std::io::ErrorKind::PermissionDenied => ErrorCode::EPERM,
        std::io::ErrorKind::InvalidInput if missing == ErrorCode::CDROM_MISSING => {
            ErrorCode::CDROM_INVALID
        }
        _ => missing,
    };
    refuse(code, format!("{path}: {}", proto::error::error_text(err)))
}

/// May `uid` create instances of a template with these permissions?
fn may_create(uid: u32, allow: Option<&InstancePermissions>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(allow) = allow else {
        return false;
    };
    // An unset instance owner means root only.
    allow.owner.uid == Some(uid)
        || allow
            .owner
            .gid
            .is_some_and(|gid| permissions::user_in_group(uid, gid))
}

/// Applies the rules of vm.conf(5), "Instances" for `requester` (0 for vm.conf).
/// `may_access(path, write)` tries a user-chosen file as the requester
/// would open it, and says why it cannot be used; the
/// requester's rights.
pub fn derive(
    template: &Template,
    spec: &InstanceSpec,
    requester: u32,
    may_access: &dyn Fn(&str, bool, Expect) -> std::io::Result<()>,
) -> Result<Instance, Refusal> {
    let root = requester == 0;
    let allow = template.allow.cloned().unwrap_or_default();
    let allowed = |flag: bool| root || flag;
    if !may_create(requester, template.allow) {
        return Err(refuse(ErrorCode::EPERM, "not allowed to create instances"));
    }
    if spec.has_own_allow {
        return Err(refuse(
            ErrorCode::EPERM,
            "an instance cannot set its own instance permissions",
        ));
    }
    let parent = template.params;

    let memory = spec.memory.unwrap_or(parent.memory);
    if memory != parent.memory && !allowed(allow.memory) {
        return Err(refuse(ErrorCode::EPERM, "memory size may not be changed"));
    }
    let vcpus = spec.vcpus.unwrap_or(parent.vcpus);
    if vcpus != parent.vcpus && !allowed(allow.cpus) {
        return Err(refuse(ErrorCode::EPERM, "cpu count may not be changed"));
    }

    // Disks are never inherited.
    if !spec.disks.is_empty() && !allowed(allow.disk) {
        return Err(refuse(ErrorCode::EPERM, "disks may not be chosen"));
    }
    for disk in &spec.disks {
        if parent.disks.iter().any(|p| p.path == disk.path) {
            return Err(refuse(
                ErrorCode::EBUSY,
                format!("disk {} cannot be reused", disk.path),
            ));
        }
        if !root {
            may_access(&disk.path, true, Expect::Image)
                .map_err(|e| unusable(&disk.path, &e, ErrorCode::DISK_MISSING))?;
        }
    }

    let boot = match &spec.boot {
        Some(path) => {
            if !allowed(allow.boot) {
                return Err(refuse(ErrorCode::EPERM, "boot image may not be chosen"));
            }
            if !root {
                may_access(path, false, Expect::RegularFile)
                    .map_err(|e| unusable(path, &e, ErrorCode::BIOS_MISSING))?;
            }
            Some(path.clone())
        }
        None => parent.boot.clone(),
    };
    if spec.kernel_given && !allowed(allow.boot) {
        return Err(refuse(ErrorCode::EPERM, "boot image may not be chosen"));
    }
    // The initrd and the command line belong to the boot choice: a user
    // who may not choose the kernel may not choose what it is given.
    if spec.initrd.is_some() && !allowed(allow.boot) {
        return Err(refuse(ErrorCode::EPERM, "initrd may not be chosen"));
    }
    if spec.cmdline.is_some() && !allowed(allow.boot) {
        return Err(refuse(
            ErrorCode::EPERM,
            "kernel command line may not be chosen",
        ));
    }
    if let Some(initrd) = &spec.initrd
        && !root
    {
        may_access(initrd, false, Expect::RegularFile)
            .map_err(|e| unusable(initrd, &e, ErrorCode::INITRD_MISSING))?;
    }

    let cdrom = match &spec.cdrom {
        Some(path) => {
            if !allowed(allow.cdrom) {
                return Err(refuse(ErrorCode::EPERM, "cd-rom may not be chosen"));
            }
            if !root {
                may_access(path, false, Expect::RegularFile)
                    .map_err(|e| unusable(path, &e, ErrorCode::CDROM_MISSING))?;
            }
            Some(path.clone())
        }
        None => parent.cdrom.clone(),
    };

    let parent_count = parent.nics.len();
    let count = spec
        .interface_count
        .unwrap_or(parent_count)
        .max(spec.interfaces.len());
    if count != parent_count && !allowed(allow.interface) {
        return Err(refuse(
            ErrorCode::EPERM,
            "interface configuration may not be changed",
        ));
    }
    let mut interfaces: Vec<Interface> = spec.interfaces.clone();
    for inherited in parent
        .nics
        .iter()
        .skip(interfaces.len())
        .take(count.saturating_sub(interfaces.len()))
    {
        // Inherited interfaces get a MAC of their own.
        interfaces.push(Interface {
            lladdr: None,
            ..inherited.iface.clone()
        });
    }
    while interfaces.len() < count {
        interfaces.push(Interface::default());
    }
    for iface in &interfaces {
        if let Tap::Named(tap) = &iface.tap
            && parent
                .nics
                .iter()
                .any(|p| matches!(&p.iface.tap, Tap::Named(t) if t == tap))
        {
            return Err(refuse(ErrorCode::EBUSY, format!("{tap} cannot be reused")));
        }
        if let Some(MacAddr(mac)) = iface.lladdr
            && parent.nics.iter().any(|p| p.mac == mac)
        {
            return Err(refuse(ErrorCode::EBUSY, "lladdr cannot be reused"));
        }
    }
    if spec.owner_gid.is_some() && spec.owner_gid != template.owner.gid {
        return Err(refuse(ErrorCode::EPERM, "owner group may not be changed"));
    }
    if spec.owner_uid.is_some() && !root {
        return Err(refuse(ErrorCode::EPERM, "owner may not be changed"));
    }
    let owner = Owner {
        uid: if root {
            spec.owner_uid.unwrap_or(template.owner.uid)
        } else {
            requester
        },
        gid: template.owner.gid,
    };

    Ok(Instance {
        params: VmParams {
            memory,
            vcpus,
            boot,
            cmdline: spec.cmdline.clone().or_else(|| parent.cmdline.clone()),
            initrd: spec.initrd.clone().or_else(|| parent.initrd.clone()),
            disks: spec.disks.clone(),
            cdrom,
            nics: config::nics(&interfaces),
            boot_device: spec.boot_device.or(parent.boot_device),
        },
        owner,
        allow: allow.instance.then_some(allow),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::control::DiskFormat;

    fn template_params() -> VmParams {
        VmParams {
            memory: 1 << 30,
            vcpus: 1,
            boot: Some("/bsd".into()),
            cmdline: None,
            initrd: None,
            disks: vec![DiskSpec {
                path: "/var/vm/base.img".into(),
                format: DiskFormat::Raw,
            }],
            cdrom: None,
            nics: config::nics(&[
                Interface {
                    switch: Some("lan".into()),
                    ..Interface::default()
                },
                Interface {
                    tap: Tap::Named("tap7".into()),
                    ..Interface::default()
                },
            ]),
            boot_device: None,
        }
    }

    fn allow(owner_uid: u32) -> InstancePermissions {
        InstancePermissions {
            memory: true,
            owner: conf::model::Owner {
                uid: Some(owner_uid),
                gid: None,
            },
            ..InstancePermissions::default()
        }
    }

    fn any_access(_: &str, _: bool, _: Expect) -> std::io::Result<()> {
        Ok(())
    }

    #[test]
    fn root_inherits_everything_but_disks_and_macs() {
        let params = template_params();
        let t = Template {
            params: &params,
            owner: Owner {
                uid: 1000,
                gid: Some(50),
            },
            allow: None,
        };
        let spec = InstanceSpec {
            interfaces: vec![Interface {
                local: true,
                ..Interface::default()
            }],
            ..InstanceSpec::default()
        };
        let err = derive(&t, &spec, 0, &any_access).unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::EBUSY,
            "tap7 of the template is exclusive"
        );

        let spec = InstanceSpec::default();
        let mut params2 = template_params();
        params2.nics.truncate(1);
        let t = Template {
            params: &params2,
            ..t
        };
        let i = derive(&t, &spec, 0, &any_access).unwrap();
        assert_eq!(i.params.memory, 1 << 30);
        assert_eq!(i.params.boot.as_deref(), Some("/bsd"));
        assert!(i.params.disks.is_empty(), "disks are never inherited");
        assert_eq!(i.params.nics.len(), 1);
        assert_eq!(i.params.nics[0].iface.switch.as_deref(), Some("lan"));
        assert_ne!(i.params.nics[0].mac, params2.nics[0].mac, "fresh MAC");
        assert_eq!(
            i.owner,
            Owner {
                uid: 1000,
                gid: Some(50)
            }
        );
        assert!(i.allow.is_none());
    }

    #[test]
    fn users_need_the_template_permissions() {
        let mut params = template_params();
        params.nics.truncate(1);
        let permissions = allow(1000);
        let t = Template {
            params: &params,
            owner: Owner { uid: 0, gid: None },
            allow: Some(&permissions),
        };
        // Another user may not create instances at all.
        let err = derive(&t, &InstanceSpec::default(), 1001, &any_access).unwrap_err();
        assert_eq!(err.code, ErrorCode::EPERM);
        // The allowed user gets an instance owned by them.
        let i = derive(&t, &InstanceSpec::default(), 1000, &any_access).unwrap();
        assert_eq!(i.owner.uid, 1000);
        // memory is allowed, cpus and disks are not.
        let spec = InstanceSpec {
            memory: Some(2 << 30),
            ..InstanceSpec::default()
        };
        assert_eq!(
            derive(&t, &spec, 1000, &any_access).unwrap().params.memory,
            2 << 30
        );
        let spec = InstanceSpec {
            vcpus: Some(2),
            ..InstanceSpec::default()
        };
        assert_eq!(
            derive(&t, &spec, 1000, &any_access).unwrap_err().code,
            ErrorCode::EPERM
        );
        let spec = InstanceSpec {
            disks: vec![DiskSpec {
                path: "/home/u/d.img".into(),
                format: DiskFormat::Raw,
            }],
            ..InstanceSpec::default()
        };
        assert_eq!(
            derive(&t, &spec, 1000, &any_access).unwrap_err().code,
            ErrorCode::EPERM
        );
        // Reusing the template's disk is refused even for root.
        let spec = InstanceSpec {
            disks: params.disks.clone(),
            ..InstanceSpec::default()
        };
        assert_eq!(
            derive(&t, &spec, 0, &any_access).unwrap_err().code,
            ErrorCode::EBUSY
        );
        // A different interface count needs `interface`.
        let spec = InstanceSpec {
            interface_count: Some(3),
            ..InstanceSpec::default()
        };
        assert_eq!(
            derive(&t, &spec, 1000, &any_access).unwrap_err().code,
            ErrorCode::EPERM
        );
        // Its own allow instance is refused.
        let spec = InstanceSpec {
            has_own_allow: true,
            ..InstanceSpec::default()
        };
        assert_eq!(
            derive(&t, &spec, 0, &any_access).unwrap_err().code,
            ErrorCode::EPERM
        );
    }

    #[test]
    fn initrd_and_command_line_need_the_boot_permission() {
        let mut params = template_params();
        params.nics.truncate(1);
        let without_boot = allow(1000);
        let with_boot = InstancePermissions {
            boot: true,
            ..allow(1000)
        };
        let specs = [
            InstanceSpec {
                initrd: Some("/home/u/initrd.img".into()),
                ..InstanceSpec::default()
            },
            InstanceSpec {
                cmdline: Some("init=/bin/sh".into()),
                ..InstanceSpec::default()
            },
        ];
        for spec in &specs {
            let t = Template {
                params: &params,
                owner: Owner { uid: 0, gid: None },
                allow: Some(&without_boot),
            };
            let err = derive(&t, spec, 1000, &any_access).unwrap_err();
            assert_eq!(err.code, ErrorCode::EPERM, "{spec:?}");
            // Root needs no permission.
            assert!(derive(&t, spec, 0, &any_access).is_ok());
            let t = Template {
                allow: Some(&with_boot),
                ..t
            };
            assert!(derive(&t, spec, 1000, &any_access).is_ok(), "{spec:?}");
        }
    }

    #[test]
    fn user_chosen_files_need_access() {
        let mut params = template_params();
        params.nics.truncate(1);
        let permissions = InstancePermissions {
            boot: true,
            cdrom: true,
            ..allow(1000)
        };
        let t = Template {
            params: &params,
            owner: Owner { uid: 0, gid: None },
            allow: Some(&permissions),
        };
        let spec = InstanceSpec {
            cdrom: Some("/secret.iso".into()),
            ..InstanceSpec::default()
        };
        let no_access =
            |_: &str, _: bool, _: Expect| Err(std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(
            derive(&t, &spec, 1000, &no_access).unwrap_err(),
            refuse(ErrorCode::EPERM, "/secret.iso: Permission denied")
        );
        // Not a permission problem: the kind of file's own code.
        let fifo = |_: &str, _: bool, _: Expect| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a FIFO, not a regular file",
            ))
        };
        assert_eq!(
            derive(&t, &spec, 1000, &fifo).unwrap_err(),
            refuse(
                ErrorCode::CDROM_INVALID,
                "/secret.iso: a FIFO, not a regular file"
            )
        );
        assert!(derive(&t, &spec, 1000, &any_access).is_ok());
        assert!(
            derive(&t, &spec, 0, &no_access).is_ok(),
            "root is not checked"
        );
    }
}
