//! `vmctl send` and `vmctl receive` on the daemon's side
//! (docs/send-stream.md).
//!
//! Send: the VM process gets vmctl's descriptor and writes the stream to
//! it itself; vmd only relays the outcome. When the stream is complete the
//! process ends, and vmd answers vmctl once the VM is cleaned up (removed,
//! or stopped if configured) so that its disks are free for a receiver.
//!
//! Receive: a thread reads the stream's header and checks all of it,
//! against this host's KVM too, before anything is created; then the VM is
//! registered under its new name and id like an ad-hoc `vmctl start`,
//! with its disks opened at the recorded paths and a new tty, and its
//! process restores the rest of the stream instead of booting.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use conf::model::{Interface, MacAddr, Tap};
use proto::ErrorCode;
use proto::control::{Response, VmRef, state};
use proto::error::Failed;
use proto::names::validate_vm_name;
use proto::vmchannel::{LocalAddrs, NicDescription, ToVm, VmDescription};
use vmm::snapshot::{Header, StreamError};

use super::Daemon;
use crate::client::Client;
use crate::events::Event;
use crate::incoming::Incoming;
use crate::params::{MAX_DISKS, MAX_NICS, MAX_VCPUS, NicParams, Owner, VmParams};
use crate::registry::VmRecord;

/// Largest guest vmctl accepts (docs/machine.md, "Limits").
const MAX_MEMORY: u64 = 128 << 30;

/// What a VM is made of, as the stream tells the receiving vmd; `local`
/// holds the addresses its local interfaces have in this run.
pub fn describe(params: &VmParams, local: &[Option<LocalAddrs>]) -> VmDescription {
    VmDescription {
        memory: params.memory,
        vcpus: params.vcpus,
        disks: params.disks.clone(),
        cdrom: params.cdrom.clone(),
        nics: params
            .nics
            .iter()
            .enumerate()
            .map(|(index, nic)| NicDescription {
                mac: nic.mac,
                local: nic.iface.local,
                local_addrs: local.get(index).copied().flatten(),
                switch: nic.iface.switch.clone(),
                group: nic.iface.group.clone(),
                locked: nic.iface.locked,
                rdomain: nic.iface.rdomain,
                up: nic.iface.up,
            })
            .collect(),
    }
}

/// What a received VM's local interfaces had on the sending host, per
/// NIC (docs/networking.md).
fn kept_local(description: &VmDescription) -> Vec<Option<LocalAddrs>> {
    description
        .nics
        .iter()
        .map(|nic| nic.local_addrs.filter(|_| nic.local))
        .collect()
}

/// The parameters of a received VM: its description, with new taps; it
/// boots the default firmware should the guest ever reset. A VM beyond
/// this host's limits is refused, saying which.
fn params_of(description: &VmDescription) -> Result<VmParams, Failed> {
    let d = description;
    let beyond = [
        (
            u64::from(d.vcpus) > u64::from(MAX_VCPUS),
            "vcpus",
            u64::from(d.vcpus),
            u64::from(MAX_VCPUS),
        ),
        (
            d.disks.len() > MAX_DISKS,
            "disks",
            d.disks.len() as u64,
            MAX_DISKS as u64,
        ),
        (
            d.nics.len() > MAX_NICS,
            "interfaces",
            d.nics.len() as u64,
            MAX_NICS as u64,
        ),
        (d.memory > MAX_MEMORY, "memory bytes", d.memory, MAX_MEMORY),
    ];
    if let Some((_, what, has, max)) = beyond.into_iter().find(|(over, ..)| *over) {
        return Err(Failed::because(
            ErrorCode::EINVAL,
            format!("the stream's vm has {has} {what}, this host allows {max}"),
        ));
    }
    Ok(VmParams {
        memory: d.memory,
        vcpus: d.vcpus,
        boot: None,
        cmdline: None,
        initrd: None,
        disks: d.disks.clone(),
        cdrom: d.cdrom.clone(),
        nics: d
            .nics
            .iter()
            .map(|nic| NicParams {
                iface: Interface {
                    tap: Tap::NextFree,
                    local: nic.local,
                    switch: nic.switch.clone(),
                    group: nic.group.clone(),
                    lladdr: Some(MacAddr(nic.mac)),
                    locked: nic.locked,
                    rdomain: nic.rdomain,
                    up: nic.up,
                },
                mac: nic.mac,
            })
            .collect(),
        boot_device: None,
    })
}

impl Daemon {
    /// `Request::Send`: hands vmctl's descriptor to the VM's process.
    pub(super) fn send(&mut self, client: &Arc<Client>, target: &VmRef, fds: Vec<OwnedFd>) {
        let refuse = |code| {
            client.send(&Response::SendStarted(Err(code)));
        };
        let Some(stream) = fds.into_iter().next() else {
            return refuse(ErrorCode::EINVAL);
        };
        let Some(vm) = self.registry.find_mut(target) else {
            return refuse(ErrorCode::ENOENT);
        };
        let stopping = vm.flags & state::SHUTDOWN != 0;
        let Some(run) = vm.run.as_mut() else {
            return refuse(ErrorCode::EINVAL);
        };
        let description = describe(&vm.params, &run.local);
        if run.sender.is_some() || stopping {
            return refuse(ErrorCode::EBUSY);
        }
        // The stream describes the VM without its cloud-init volume, which
        // the receiver could not rebuild: refused while the VM still runs
        // here (docs/cloud-init.md).
        if vm.cloud_init.is_some() {
            return refuse(ErrorCode::ENOTSUP);
        }
        let message = ToVm::Send(Box::new(description));
        if !run.process.send_with_fds(&message, &[stream.as_raw_fd()]) {
            return refuse(ErrorCode::EIO);
        }
        // Only the VM process holds the descriptor now: its end of the
        // stream is vmctl's end of file.
        drop(stream);
        run.sender = Some(client.clone());
        tracing::info!("{}: sending vm {}", vm.name, vm.id);
        client.send(&Response::SendStarted(Ok(vm.id)));
    }

    /// The VM process's answer to a send.
    pub(super) fn sent(&mut self, id: u32, result: Result<(), ErrorCode>) {
        let Some(vm) = self.registry.get_mut(id) else {
            return;
        };
        let Some(run) = vm.run.as_mut() else { return };
        match result {
            Ok(()) => self.sent_away(id),
            Err(code) => {
                tracing::warn!("{}: sending vm {} failed: {code}", vm.name, vm.id);
                if let Some(sender) = run.sender.take() {
                    sender.send(&Response::SendDone(Err(code)));
                }
            }
        }
    }

    /// `Request::Receive`: reads and checks the stream's header on a
    /// thread of its own (the sender may be slow to start) and comes back
    /// with [`Event::Received`].
    pub(super) fn receive(&mut self, client: &Arc<Client>, name: String, fds: Vec<OwnedFd>) {
        let refuse = |code: ErrorCode| {
            client.send(&Response::Start(Err(code.into())));
        };
        let Some(stream) = fds.into_iter().next() else {
            return refuse(ErrorCode::EINVAL);
        };
        if validate_vm_name(&name).is_err() {
            return refuse(ErrorCode::EINVAL);
        }
        if self.registry.find(&VmRef::Name(name.clone())).is_some() {
            return refuse(ErrorCode::EALREADY);
        }
        let kvm = match self.kvm.try_clone() {
            Ok(kvm) => kvm,
            Err(e) => return refuse(ErrorCode::from_io(&e)),
        };
        let events = self.events.clone();
        let client = client.clone();
        let spawned = std::thread::Builder::new()
            .name("receive".into())
            .spawn(move || {
                let mut input = File::from(stream);
                let result = vmm::snapshot::read_header(&mut input, &kvm).map(|(bytes, header)| {
                    (
                        header,
                        Incoming {
                            header_bytes: bytes,
                            stream: OwnedFd::from(input),
                        },
                    )
                });
                let _ = events.send(Event::Received {
                    client,
                    name,
                    result,
                });
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a receive: {e}");
        }
    }

    /// A received stream's header was read: registers and launches the VM,
    /// or tells vmctl why not.
    pub(super) fn received(
        &mut self,
        client: &Arc<Client>,
        name: String,
        result: Result<(Header, Incoming), StreamError>,
    ) {
        let (header, incoming) = match result {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!("receive {name}: {e}");
                client.send(&Response::Start(Err(Failed::because(
                    e.code(),
                    e.to_string(),
                ))));
                return;
            }
        };
        let params = match params_of(&header.description) {
            Ok(params) => params,
            Err(failed) => {
                tracing::warn!("receive {name}: {failed}");
                client.send(&Response::Start(Err(failed)));
                return;
            }
        };
        if self.registry.find(&VmRef::Name(name.clone())).is_some() {
            client.send(&Response::Start(Err(ErrorCode::EALREADY.into())));
            return;
        }
        tracing::info!("receiving vm {} as {name}", header.name);
        let owner = Owner {
            uid: client.uid,
            gid: None,
        };
        let Some(id) = self.registry.assign_id(&name, client.uid) else {
            client.send(&Response::Start(Err(ErrorCode::ENOMEM.into())));
            return;
        };
        let mut vm = VmRecord::new(id, name, params, owner, false);
        vm.keep_local = kept_local(&header.description);
        vm.flags |= state::RECEIVED;
        vm.incoming = Some(incoming);
        let id = self.registry.insert(vm);
        if let Err(failed) = self.launch(id, client.uid, Some(client.clone())) {
            client.send(&Response::Start(Err(failed)));
        }
    }
}
