//! From vm.conf to the daemon's registry (vm.conf(5); docs/lifecycle.md, "Registration", "Reload, load and reset"):
//! where the file comes from, and what a configured VM is made of.

use conf::model::{Interface, MacAddr, Vm};
use conf::{Define, LoadOptions, Loaded, Origin, Rejected};

use crate::params::{NicParams, Owner, VmParams};

/// Which file the daemon reads, and with which `-D` macros.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: String,
    /// The default path may be missing; a `-f` file is expected to exist.
    pub origin: Origin,
    pub defines: Vec<Define>,
}

impl ConfigSource {
    pub fn options(&self, first_switch_id: u32) -> LoadOptions {
        LoadOptions {
            defines: self.defines.clone(),
            origin: self.origin,
            first_switch_id,
        }
    }

    /// Reads the main file.
    pub fn load(&self, first_switch_id: u32) -> Result<Loaded, Rejected> {
        conf::load(&self.path, &self.options(first_switch_id))
    }
}

/// Logs what the parser had to say.
pub fn log_warnings(loaded_warnings: &[conf::Warning]) {
    for warning in loaded_warnings {
        if warning.is_debug() {
            tracing::debug!("{warning}");
        } else {
            tracing::warn!("{warning}");
        }
    }
}

/// A VM's interfaces with their MACs: configured, or random in vmd's
/// format.
pub fn nics(interfaces: &[Interface]) -> Vec<NicParams> {
    interfaces
        .iter()
        .enumerate()
        .map(|(index, iface)| NicParams {
            mac: iface
                .lladdr
                .unwrap_or_else(|| MacAddr::random_for_interface(index, random_pair()))
                .0,
            iface: iface.clone(),
        })
        .collect()
}

fn random_pair() -> [u8; 2] {
    let mut random = [0u8; 2];
    // SAFETY: writes at most two bytes into `random`.
    unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    random
}

/// The parameters of a configured VM.
pub fn vm_params(vm: &Vm) -> VmParams {
    VmParams {
        memory: vm.memory_bytes(),
        vcpus: vm.vcpu_count(),
        boot: vm.boot.clone(),
        cmdline: vm.cmdline.clone(),
        initrd: vm.initrd.clone(),
        disks: vm.disks.clone(),
        cdrom: vm.cdrom.clone(),
        nics: nics(&vm.interfaces),
        boot_device: vm.boot_device,
    }
}

pub fn owner(vm: &Vm) -> Owner {
    Owner {
        uid: vm.owner.uid_or_root(),
        gid: vm.owner.gid,
    }
}
