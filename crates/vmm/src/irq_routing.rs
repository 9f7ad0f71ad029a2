//! KVM's GSI routing table: the in-kernel PIC/IOAPIC pins every VM has,
//! plus one MSI route per MSI-X vector a guest programs.
//!
//! `KVM_SET_GSI_ROUTING` replaces the whole table, so this keeps the
//! complete table and re-submits it on every change. MSI-X vectors get
//! their GSIs once at device creation; only their routes change later.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KvmIrqRouting, kvm_irq_routing_entry,
};
use kvm_ioctls::VmFd;

/// GSIs 0–23 are the IOAPIC's pins (0–15 also the PICs').
const IOAPIC_PINS: u32 = 24;
const PIC_PINS: u32 = 16;

/// Where an MSI goes: the address/data pair of an MSI-X table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

pub struct GsiRouter {
    vm: Arc<VmFd>,
    state: Mutex<RouterState>,
}

struct RouterState {
    next_gsi: u32,
    msi_routes: BTreeMap<u32, MsiMessage>,
}

fn irqchip_entry(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    entry.u.irqchip.irqchip = chip;
    entry.u.irqchip.pin = pin;
    entry
}

/// The routes KVM sets up by itself for an in-kernel irqchip.
fn default_entries() -> Vec<kvm_irq_routing_entry> {
    let mut entries = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        if gsi < PIC_PINS {
            let chip = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            entries.push(irqchip_entry(gsi, chip, gsi % 8));
        }
        entries.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    entries
}

impl GsiRouter {
    pub fn new(vm: Arc<VmFd>) -> GsiRouter {
        GsiRouter {
            vm,
            state: Mutex::new(RouterState {
                next_gsi: IOAPIC_PINS,
                msi_routes: BTreeMap::new(),
            }),
        }
    }

    pub fn vm(&self) -> &Arc<VmFd> {
        &self.vm
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A GSI of its own for one MSI vector; it routes nowhere until
    /// [`GsiRouter::set_msi`].
    pub fn allocate(&self) -> u32 {
        let mut state = self.lock();
        let gsi = state.next_gsi;
        state.next_gsi += 1;
        gsi
    }

    /// Routes `gsi` to `message`, or removes its route (`None`).
    pub fn set_msi(&self, gsi: u32, message: Option<MsiMessage>) -> Result<(), kvm_ioctls::Error> {
        let mut state = self.lock();
        let changed = match message {
            Some(m) => state.msi_routes.insert(gsi, m) != Some(m),
            None => state.msi_routes.remove(&gsi).is_some(),
        };
        if !changed {
            return Ok(());
        }
        let mut entries = default_entries();
        for (&gsi, message) in &state.msi_routes {
            let mut entry = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            entry.u.msi.address_lo = message.address as u32;
            entry.u.msi.address_hi = (message.address >> 32) as u32;
            entry.u.msi.data = message.data;
            entries.push(entry);
        }
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|_| kvm_ioctls::Error::new(libc::E2BIG))?;
        self.vm.set_gsi_routing(&table)
    }
}
