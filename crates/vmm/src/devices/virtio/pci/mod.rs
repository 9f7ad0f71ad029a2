//! The modern virtio-pci transport: one [`VirtioDevice`] as a PCI
//! function with vmd's identity, BAR0 registers and an MSI-X BAR.
//!
//! Register accesses (common configuration, ISR, device configuration)
//! arrive on the vCPU threads through the buses. Queue notifications never
//! do when KVM takes them: an ioeventfd per queue at BAR0+0x100, moved
//! whenever the BAR moves, wakes the device's I/O thread directly.

pub mod common_config;
pub mod interrupt;
pub mod layout;
mod persist;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use kvm_ioctls::{IoEventAddress, VmFd};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use self::common_config::{CommonConfig, Effect, NEEDS_RESET};
use self::interrupt::PciInterrupt;
use self::layout::Capabilities;
use super::device::{Interrupt, MAX_QUEUE_SIZE, VirtioDevice, has_feature};
use super::worker::{Activation, QueuePosition, Worker, WorkerEvents};
use crate::devices::pci::bars::BarRange;
use crate::devices::pci::config_space::{
    self, COMMAND, COMMAND_INTX_DISABLE, STATUS, STATUS_INTERRUPT,
};
use crate::devices::pci::msix::{self, Msix};
use crate::devices::pci::root::PciDevice;
use crate::devices::pci::{ConfigSpace, Identity};
use crate::irq_routing::GsiRouter;
use crate::lifecycle::Lifecycle;
use crate::memory::GuestMemoryMmap;

/// vmd's subsystem vendor (docs/machine.md, "PCI devices").
pub const SUBSYSTEM_VENDOR: u16 = 0x0b5d;
const VIRTIO_VENDOR: u16 = 0x1af4;
const MODERN_DEVICE_ID_BASE: u16 = 0x1040;

/// The PCI identity of a modern virtio device of `device_type`.
pub fn identity(device_type: u16, class: u8, subclass: u8, subsystem: u16) -> Identity {
    Identity {
        vendor: VIRTIO_VENDOR,
        device: MODERN_DEVICE_ID_BASE + device_type,
        class,
        subclass,
        prog_if: 0,
        revision: 1,
        subsystem_vendor: SUBSYSTEM_VENDOR,
        subsystem,
    }
}

/// What every virtio-pci device of a VM shares.
#[derive(Clone)]
pub struct TransportContext {
    pub vm: Arc<VmFd>,
    pub router: Arc<GsiRouter>,
    pub mem: GuestMemoryMmap,
    pub lifecycle: Arc<Lifecycle>,
}

fn same_address(a: &IoEventAddress, b: &IoEventAddress) -> bool {
    match (a, b) {
        (IoEventAddress::Pio(x), IoEventAddress::Pio(y)) => x == y,
        (IoEventAddress::Mmio(x), IoEventAddress::Mmio(y)) => x == y,
        _ => false,
    }
}

pub struct VirtioPciDevice {
    name: String,
    config: ConfigSpace,
    caps: Capabilities,
    common: CommonConfig,
    device: Box<dyn VirtioDevice>,
    interrupt: Arc<PciInterrupt>,
    notifiers: Vec<EventFd>,
    notify_at: Option<IoEventAddress>,
    worker: Worker,
    ctx: TransportContext,
    /// The option ROM firmware finds behind the expansion ROM BAR.
    rom: Option<Vec<u8>>,
}

fn io_error(e: kvm_ioctls::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno())
}

impl VirtioPciDevice {
    /// The transport for `device`, raising `irq` for INTx. Spawns the
    /// device's I/O thread.
    pub fn new(
        name: &str,
        device: Box<dyn VirtioDevice>,
        identity: Identity,
        irq: u8,
        ctx: TransportContext,
    ) -> std::io::Result<VirtioPciDevice> {
        let queue_count = device.queue_sizes().len();
        // One vector per queue and one for configuration changes.
        let vectors = queue_count as u16 + 1;
        assert!(msix::table_size(vectors) <= layout::MSIX_PBA_OFFSET);
        let mut config = ConfigSpace::new(identity);
        config.set_interrupt(irq);
        let config_len = device_config_len(device.as_ref());
        let caps = layout::declare(&mut config, config_len, vectors);

        let intx = EventFd::new(libc::EFD_NONBLOCK)?;
        let resample = EventFd::new(libc::EFD_NONBLOCK)?;
        ctx.vm
            .register_irqfd_with_resample(&intx, &resample, u32::from(irq))
            .map_err(io_error)?;
        let msix = Msix::new(vectors, ctx.router.clone())?;
        // The driver maps vectors in the common configuration; the
        // interrupt path reads them.
        let vector_map = Arc::new(interrupt::Vectors::new(queue_count));
        let interrupt = Arc::new(PciInterrupt::new(intx, msix, vector_map.clone()));
        let common =
            CommonConfig::new(device.features(), device.queue_sizes(), vector_map, vectors);

        let notifiers = (0..queue_count)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        let events = WorkerEvents {
            notifiers: notifiers
                .iter()
                .map(EventFd::try_clone)
                .collect::<std::io::Result<Vec<_>>>()?,
            resample: Some((resample, {
                let interrupt = interrupt.clone();
                Box::new(move || interrupt.resample())
            })),
            interrupt: interrupt.clone(),
            sources: device.event_sources(),
            flusher: device.flusher(),
            on_broken: {
                let status = common.status_cell();
                let interrupt = interrupt.clone();
                let name = name.to_string();
                Box::new(move |e| mark_needs_reset(&name, &status, interrupt.as_ref(), e))
            },
            lifecycle: ctx.lifecycle.clone(),
        };
        let worker = Worker::spawn(name, events)?;
        Ok(VirtioPciDevice {
            name: name.to_string(),
            config,
            caps,
            common,
            device,
            interrupt,
            notifiers,
            notify_at: None,
            worker,
            ctx,
            rom: None,
        })
    }

    /// Gives the device an option ROM (iPXE for a network boot), offered
    /// through its expansion ROM BAR. Before the device joins the bus.
    pub fn with_option_rom(mut self, rom: Vec<u8>) -> VirtioPciDevice {
        let size = (rom.len() as u64).next_power_of_two().max(2048);
        self.config.add_rom(size);
        self.rom = Some(rom);
        self
    }

    /// The device status register (for tests and logs).
    pub fn status(&self) -> u8 {
        self.common.status()
    }

    fn reset(&mut self) {
        self.worker.reset();
        self.device.reset();
        self.common.reset();
        self.interrupt.clear_isr();
    }

    /// DRIVER_OK: builds the rust-vmm queues from the driver's setup and
    /// hands them to the I/O thread. A setup that cannot work (size not a
    /// power of two, rings misaligned or outside memory) marks the device
    /// NEEDS_RESET instead.
    fn activate(&mut self) {
        if let Err(e) = self.start_queues(None) {
            mark_needs_reset(
                &self.name,
                &self.common.status_cell(),
                self.interrupt.as_ref(),
                &e,
            );
        }
    }

    /// Starts serving the queues the driver set up, at `positions` (a
    /// restored device) or at the start of the rings.
    fn start_queues(
        &mut self,
        positions: Option<&[Option<QueuePosition>]>,
    ) -> Result<(), super::DeviceBroken> {
        let features = self.common.negotiated();
        let event_idx = has_feature(
            features,
            virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX,
        );
        let mut queues = Vec::new();
        for (index, regs) in self.common.queues().iter().enumerate() {
            if !regs.enabled {
                queues.push(None);
                continue;
            }
            let broken = |what: String| super::DeviceBroken(format!("queue {index}: {what}"));
            let mut queue = build_queue(regs, event_idx, &self.ctx.mem).map_err(broken)?;
            if let Some(positions) = positions {
                let at = positions
                    .get(index)
                    .copied()
                    .flatten()
                    .ok_or_else(|| broken("no saved position".into()))?;
                queue.set_next_avail(at.next_avail);
                queue.set_next_used(at.next_used);
            }
            queues.push(Some(queue));
        }
        let handler = self.device.activate(features);
        self.worker.activate(Activation {
            queues,
            handler,
            mem: self.ctx.mem.clone(),
        });
        Ok(())
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Reset => self.reset(),
            Effect::Activate => self.activate(),
        }
    }

    fn registers_read(&mut self, offset: u64, data: &mut [u8]) {
        use layout::*;
        data.fill(0);
        match offset {
            o if o < NOTIFY_OFFSET => self.common.read(o - COMMON_OFFSET, data),
            o if o == ISR_OFFSET => data[0] = self.interrupt.take_isr(),
            o if o >= DEVICE_CONFIG_OFFSET => {
                self.device.read_config(o - DEVICE_CONFIG_OFFSET, data)
            }
            _ => {}
        }
    }

    fn registers_write(&mut self, offset: u64, data: &[u8]) {
        use layout::*;
        match offset {
            o if o < NOTIFY_OFFSET => {
                let effect = self.common.write(o - COMMON_OFFSET, data);
                self.apply(effect);
            }
            // A notification KVM did not take (another width, or before
            // the ioeventfds exist): pass it on by hand.
            o if o == NOTIFY_OFFSET && data.len() >= 2 => {
                let queue = u16::from_le_bytes([data[0], data[1]]);
                if let Some(fd) = self.notifiers.get(usize::from(queue)) {
                    let _ = fd.write(1);
                }
            }
            o if o >= DEVICE_CONFIG_OFFSET => {
                self.device.write_config(o - DEVICE_CONFIG_OFFSET, data)
            }
            _ => {}
        }
    }

    fn msix_read(&mut self, offset: u64, data: &mut [u8]) {
        use layout::*;
        let msix = self.interrupt.msix();
        if offset >= MSIX_PBA_OFFSET {
            msix.pba_read(offset - MSIX_PBA_OFFSET, data);
        } else {
            msix.table_read(offset - MSIX_TABLE_OFFSET, data);
        }
    }

    fn msix_write(&mut self, offset: u64, data: &[u8]) {
        use layout::*;
        if offset < MSIX_PBA_OFFSET {
            self.interrupt
                .msix()
                .table_write(offset - MSIX_TABLE_OFFSET, data);
        }
    }

    /// The VIRTIO_PCI_CAP_PCI_CFG window's target: BAR, offset, length.
    fn pci_cfg_target(&self) -> (u8, u64, usize) {
        let bar = self.config.u8(self.caps.pci_cfg_bar());
        let offset = u64::from(self.config.u32(self.caps.pci_cfg_offset()));
        let length = (self.config.u32(self.caps.pci_cfg_length()) as usize).min(4);
        (bar, offset, length)
    }

    /// Moves the notify ioeventfds to `at` (or removes them).
    fn move_notifiers(&mut self, at: Option<IoEventAddress>) {
        if let Some(old) = self.notify_at.take() {
            for (index, fd) in self.notifiers.iter().enumerate() {
                if let Err(e) = self.ctx.vm.unregister_ioevent(fd, &old, index as u16) {
                    tracing::warn!("{}: KVM_IOEVENTFD (remove): {e}", self.name);
                }
            }
        }
        let Some(new) = at else { return };
        for (index, fd) in self.notifiers.iter().enumerate() {
            if let Err(e) = self.ctx.vm.register_ioevent(fd, &new, index as u16) {
                // Notifications still arrive through the register path.
                tracing::warn!("{}: KVM_IOEVENTFD: {e}", self.name);
                return;
            }
        }
        self.notify_at = Some(new);
    }
}

/// Bytes of device configuration the device-config capability covers.
fn device_config_len(device: &dyn VirtioDevice) -> u64 {
    device.config_len().min(layout::DEVICE_CONFIG_MAX)
}

fn mark_needs_reset(
    name: &str,
    status: &AtomicU8,
    interrupt: &dyn Interrupt,
    e: &super::DeviceBroken,
) {
    tracing::warn!("{name}: device needs reset: {e}");
    status.fetch_or(NEEDS_RESET, Ordering::SeqCst);
    interrupt.signal_config();
}

/// A rust-vmm queue from the registers the driver wrote.
fn build_queue(
    regs: &common_config::QueueRegisters,
    event_idx: bool,
    mem: &GuestMemoryMmap,
) -> Result<Queue, String> {
    let mut q = Queue::new(MAX_QUEUE_SIZE).map_err(|e| e.to_string())?;
    q.try_set_size(regs.size).map_err(|e| e.to_string())?;
    q.try_set_desc_table_address(GuestAddress(regs.desc_table))
        .map_err(|e| e.to_string())?;
    q.try_set_avail_ring_address(GuestAddress(regs.avail_ring))
        .map_err(|e| e.to_string())?;
    q.try_set_used_ring_address(GuestAddress(regs.used_ring))
        .map_err(|e| e.to_string())?;
    q.set_event_idx(event_idx);
    q.set_ready(true);
    if !q.is_valid(mem) {
        return Err("rings outside guest memory".into());
    }
    Ok(q)
}

fn overlaps(offset: usize, len: usize, register: usize, register_len: usize) -> bool {
    offset < register + register_len && register < offset + len
}

impl PciDevice for VirtioPciDevice {
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        let data_reg = self.caps.pci_cfg_data();
        if overlaps(offset, data.len(), data_reg, 4) {
            // Fill the window's data register from the BAR first.
            let (bar, bar_offset, length) = self.pci_cfg_target();
            let mut window = [0u8; 4];
            self.bar_read(bar, bar_offset, &mut window[..length]);
            for (i, b) in window.iter().enumerate() {
                self.config.set_u8(data_reg + i, *b);
            }
        }
        self.config.read(offset, data);
        // PCI status bit 3 mirrors the ISR while INTx is in use.
        if overlaps(offset, data.len(), STATUS, 1) && self.interrupt.isr() != 0 {
            data[STATUS - offset] |= STATUS_INTERRUPT as u8;
        }
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
        if overlaps(offset, data.len(), COMMAND, 2) {
            let disabled = self.config.command() & COMMAND_INTX_DISABLE != 0;
            self.interrupt.set_intx_disabled(disabled);
        }
        if overlaps(offset, data.len(), self.caps.msix_control(), 2) {
            let control = self.config.u16(self.caps.msix_control());
            self.interrupt.msix().set_control(control);
        }
        if overlaps(offset, data.len(), self.caps.pci_cfg_data(), 4) {
            let (bar, bar_offset, length) = self.pci_cfg_target();
            let value = self.config.u32(self.caps.pci_cfg_data()).to_le_bytes();
            self.bar_write(bar, bar_offset, &value[..length]);
        }
    }

    fn bars(&self) -> Vec<BarRange> {
        self.config.bars()
    }

    fn set_bar_address(&mut self, index: u8, base: u64) {
        self.config.set_bar_address(usize::from(index), base);
        // Decode from the start, as firmware would leave it, so direct
        // kernel boots find the device working.
        let command =
            self.config.command() | config_space::COMMAND_IO | config_space::COMMAND_MEMORY;
        self.config.set_u16(COMMAND, command);
    }

    fn decoded_bars(&self) -> Vec<BarRange> {
        self.config.decoded_bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        match bar {
            layout::REGISTERS_BAR => self.registers_read(offset, data),
            layout::MSIX_BAR => self.msix_read(offset, data),
            config_space::ROM_BAR => {
                let rom = self.rom.as_deref().unwrap_or(&[]);
                for (i, b) in data.iter_mut().enumerate() {
                    *b = usize::try_from(offset)
                        .ok()
                        .and_then(|o| rom.get(o + i))
                        .copied()
                        .unwrap_or(0xff);
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        match bar {
            layout::REGISTERS_BAR => self.registers_write(offset, data),
            layout::MSIX_BAR => self.msix_write(offset, data),
            _ => {}
        }
    }

    fn bar_mapped(&mut self, bar: BarRange, mapped: bool) {
        if bar.index != layout::REGISTERS_BAR {
            return;
        }
        let at = bar.base + layout::NOTIFY_OFFSET;
        let address = if bar.kind.is_io() {
            IoEventAddress::Pio(at)
        } else {
            IoEventAddress::Mmio(at)
        };
        if mapped {
            self.move_notifiers(Some(address));
        } else if self
            .notify_at
            .as_ref()
            .is_some_and(|a| same_address(a, &address))
        {
            self.move_notifiers(None);
        }
    }
}
