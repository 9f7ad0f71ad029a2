//! vmmci, the VMM control interface (docs/machine.md, "vmmci"): how vmd asks an OpenBSD
//! guest to shut down or reboot, how such a guest announces its own
//! power-off, and how it learns that the host clock jumped.
//!
//! A legacy (0.9) virtio register layout in one 4 KiB I/O BAR, with no
//! virtqueues. Requests run on timers: a guest has 3 s to acknowledge a
//! request and then 120 s to finish; a guest that announces its own
//! power-off is given 3 s. A timer that runs out ends the VM.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use proto::vmchannel::ExitReason;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::pci::bars::BarKind;
use crate::devices::pci::bars::BarRange;
use crate::devices::pci::root::PciDevice;
use crate::devices::pci::{ConfigSpace, Identity};
use crate::lifecycle::{Lifecycle, VmEvent};

mod persist;

pub const BAR_SIZE: u64 = 0x1000;

/// Feature bits, all offered.
pub const FEATURE_TIMESYNC: u32 = 1 << 0;
pub const FEATURE_ACK: u32 = 1 << 1;
pub const FEATURE_SYNCRTC: u32 = 1 << 2;
const FEATURES: u32 = FEATURE_TIMESYNC | FEATURE_ACK | FEATURE_SYNCRTC;

/// Commands in the command register.
pub const CMD_NONE: u32 = 0;
pub const CMD_SHUTDOWN: u32 = 1;
pub const CMD_REBOOT: u32 = 2;
pub const CMD_SYNCRTC: u32 = 3;

/// Virtio device status: the driver is ready.
const STATUS_DRIVER_OK: u8 = 4;
/// ISR bit: configuration change (a new command).
const ISR_CONFIG: u8 = 2;

const REG_DEVICE_FEATURES: u64 = 0x00;
const REG_GUEST_FEATURES: u64 = 0x04;
const REG_QUEUE_PFN: u64 = 0x08;
const REG_QUEUE_SIZE: u64 = 0x0c;
const REG_QUEUE_SELECT: u64 = 0x0e;
const REG_QUEUE_NOTIFY: u64 = 0x10;
const REG_STATUS: u64 = 0x12;
const REG_ISR: u64 = 0x13;
const REG_COMMAND: u64 = 0x14;
const REG_TIME_SEC_LOW: u64 = 0x18;
const REG_TIME_SEC_HIGH: u64 = 0x1c;
const REG_TIME_USEC_LOW: u64 = 0x20;
const REG_TIME_USEC_HIGH: u64 = 0x24;

/// How long a guest has to acknowledge a request.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an acknowledging guest has to finish shutting down.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);
/// A guest announcing its own power-off is ended this much later.
pub const POWEROFF_DELAY: Duration = Duration::from_secs(3);
/// A host clock jump larger than this asks the guest to resync its RTC.
const RTC_JUMP: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Registers {
    guest_features: u32,
    queue_pfn: u32,
    queue_select: u16,
    status: u8,
    isr: u8,
    command: u32,
    /// When the running timer ends the VM, and how.
    deadline: Option<Instant>,
    /// A guest that announced a reboot is reset when its timer runs out;
    /// every other timer ends the VM.
    reboot_on_timeout: bool,
    /// Host seconds and microseconds sampled by the last seconds read.
    sampled: (u64, u32),
}

struct Shared {
    registers: Mutex<Registers>,
    /// irqfd (with resample) on the device's IRQ.
    intx: EventFd,
    /// Wakes the timer thread when a deadline changes.
    wake: EventFd,
    lifecycle: Arc<Lifecycle>,
    name: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Registers> {
        self.registers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn raise(&self) {
        let _ = self.intx.write(1);
    }

    fn arm(&self, regs: &mut Registers, after: Duration) {
        regs.deadline = Some(Instant::now() + after);
        regs.reboot_on_timeout = false;
        let _ = self.wake.write(1);
    }

    /// Posts `command` to the guest with a configuration interrupt.
    fn post(&self, regs: &mut Registers, command: u32) {
        regs.command = command;
        regs.isr |= ISR_CONFIG;
        self.raise();
    }
}

/// The PCI function.
pub struct Vmmci {
    config: ConfigSpace,
    shared: Arc<Shared>,
}

/// What the rest of the VM process holds to talk to the device.
#[derive(Clone)]
pub struct VmmciHandle {
    shared: Arc<Shared>,
}

/// The device's PCI identity (docs/machine.md, "vmmci").
pub fn identity() -> Identity {
    Identity {
        vendor: 0x0b5d,
        device: 0x0777,
        class: 0x07,
        subclass: 0x80,
        prog_if: 0,
        revision: 0,
        subsystem_vendor: 0x0b5d,
        subsystem: 0xffff,
    }
}

impl Vmmci {
    /// The device on `irq`: `intx` is an irqfd registered with `resample`.
    pub fn new(
        name: &str,
        irq: u8,
        intx: EventFd,
        resample: EventFd,
        lifecycle: Arc<Lifecycle>,
    ) -> std::io::Result<(Vmmci, VmmciHandle)> {
        let mut config = ConfigSpace::new(identity());
        config.set_interrupt(irq);
        config.add_bar(0, BarKind::Io, BAR_SIZE);
        let shared = Arc::new(Shared {
            registers: Mutex::new(Registers::default()),
            intx,
            wake: EventFd::new(libc::EFD_NONBLOCK)?,
            lifecycle,
            name: name.to_string(),
        });
        let timer = shared.clone();
        crate::sandbox::spawn(
            crate::sandbox::ThreadKind::Device,
            "vmmci".into(),
            move || run_timers(&timer, &resample),
        )?;
        Ok((
            Vmmci {
                config,
                shared: shared.clone(),
            },
            VmmciHandle { shared },
        ))
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        let shared = &self.shared;
        let mut regs = shared.lock();
        match offset {
            REG_DEVICE_FEATURES => FEATURES,
            REG_GUEST_FEATURES => regs.guest_features,
            REG_QUEUE_PFN => regs.queue_pfn,
            REG_QUEUE_SIZE => 0,
            REG_QUEUE_SELECT => u32::from(regs.queue_select),
            REG_QUEUE_NOTIFY => 0,
            REG_STATUS => u32::from(regs.status),
            REG_ISR => {
                // Read-to-clear; the line drops at the next resample.
                let isr = regs.isr;
                regs.isr = 0;
                u32::from(isr)
            }
            REG_COMMAND => regs.command,
            REG_TIME_SEC_LOW | REG_TIME_SEC_HIGH | REG_TIME_USEC_LOW | REG_TIME_USEC_HIGH => {
                if offset == REG_TIME_SEC_LOW {
                    // Reading the seconds samples the host clock; the other
                    // fields then describe the same instant.
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    regs.sampled = (now.as_secs(), now.subsec_micros());
                }
                match offset {
                    REG_TIME_SEC_LOW => regs.sampled.0 as u32,
                    REG_TIME_SEC_HIGH => (regs.sampled.0 >> 32) as u32,
                    REG_TIME_USEC_LOW => regs.sampled.1,
                    _ => 0,
                }
            }
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        let shared = self.shared.clone();
        let mut regs = shared.lock();
        match offset {
            REG_GUEST_FEATURES => regs.guest_features = value & FEATURES,
            REG_QUEUE_PFN => regs.queue_pfn = value,
            REG_QUEUE_SELECT => regs.queue_select = value as u16,
            REG_STATUS => {
                regs.status = value as u8;
                if value == 0 {
                    // Reset: forget any request in flight.
                    regs.command = CMD_NONE;
                    regs.isr = 0;
                    regs.deadline = None;
                }
            }
            REG_COMMAND => self.command_written(&mut regs, value),
            _ => {}
        }
    }

    /// The guest acknowledges a request, or announces an event.
    fn command_written(&self, regs: &mut Registers, value: u32) {
        let shared = &self.shared;
        match value {
            v if v == regs.command && v != CMD_NONE => {
                if v == CMD_SYNCRTC {
                    regs.command = CMD_NONE;
                } else {
                    // Acknowledged: the guest now runs its shutdown.
                    tracing::info!("{}: vmmci: guest acknowledged", shared.name);
                    shared.arm(regs, SHUTDOWN_TIMEOUT);
                }
            }
            CMD_SHUTDOWN if regs.command == CMD_NONE => {
                tracing::info!("{}: vmmci: guest is powering off", shared.name);
                shared.lifecycle.announce(VmEvent::GuestShuttingDown);
                shared.arm(regs, POWEROFF_DELAY);
            }
            CMD_REBOOT if regs.command == CMD_NONE => {
                // The guest should reset itself; if it has not after the
                // grace period, vmd resets it.
                tracing::info!("{}: vmmci: guest is rebooting", shared.name);
                shared.arm(regs, POWEROFF_DELAY);
                regs.reboot_on_timeout = true;
            }
            _ => {}
        }
    }
}

impl VmmciHandle {
    /// Asks the guest to shut down. vmd has no power-off to offer, so the
    /// guest is asked to reboot, and vmd ends the VM when it does. Returns
    /// false when the guest's driver is not running.
    pub fn request_shutdown(&self) -> bool {
        let shared = &self.shared;
        let mut regs = shared.lock();
        if regs.status & STATUS_DRIVER_OK == 0 {
            return false;
        }
        if regs.command != CMD_REBOOT {
            shared.post(&mut regs, CMD_REBOOT);
            shared.arm(&mut regs, ACK_TIMEOUT);
        }
        true
    }

    /// Whether the guest's driver is running.
    pub fn driver_active(&self) -> bool {
        self.shared.lock().status & STATUS_DRIVER_OK != 0
    }

    /// The host clock jumped: a guest that negotiated SYNCRTC resyncs.
    pub fn clock_jumped(&self) {
        clock_jumped(&self.shared);
    }
}

/// Runs the request timers, re-raises the level interrupt after the
/// guest's EOI while the ISR is still set, and watches the host clock.
fn run_timers(shared: &Shared, resample: &EventFd) {
    let tick = Duration::from_secs(1);
    let mut last_wall = SystemTime::now();
    let mut last_mono = Instant::now();
    loop {
        if shared.lifecycle.exit_requested() {
            return;
        }
        let wait = {
            let regs = shared.lock();
            regs.deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(tick)
                .min(tick)
        };
        let timeout = PollTimeout::try_from(wait.as_millis() as i32).unwrap_or(PollTimeout::NONE);
        // SAFETY: the eventfd lives with the caller for the whole loop.
        let resample_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(resample.as_raw_fd()) };
        // SAFETY: the eventfd lives in `shared` for the whole loop.
        let wake_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(shared.wake.as_raw_fd()) };
        let mut fds = [
            PollFd::new(resample_fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake_fd.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, timeout);
        if fds[0].any().unwrap_or(false) {
            let _ = resample.read();
            if shared.lock().isr != 0 {
                shared.raise();
            }
        }
        if fds[1].any().unwrap_or(false) {
            let _ = shared.wake.read();
        }

        if shared.lifecycle.is_paused() {
            // Timers stand still while the VM is paused.
            let mut regs = shared.lock();
            if let Some(deadline) = regs.deadline.as_mut() {
                *deadline += wait;
            }
            continue;
        }
        let expired = {
            let mut regs = shared.lock();
            match regs.deadline {
                Some(d) if Instant::now() >= d => {
                    regs.deadline = None;
                    Some(regs.reboot_on_timeout)
                }
                _ => None,
            }
        };
        match expired {
            Some(true) => {
                tracing::info!("{}: vmmci: resetting the rebooting guest", shared.name);
                shared.lifecycle.request_exit(ExitReason::Reboot);
                return;
            }
            Some(false) => {
                tracing::info!("{}: vmmci: timeout, ending the vm", shared.name);
                shared.lifecycle.request_exit(ExitReason::PowerOff);
                return;
            }
            None => {}
        }

        // A host clock jump (suspend, settimeofday) shows as wall-clock
        // time running away from monotonic time.
        let (wall, mono) = (SystemTime::now(), Instant::now());
        let wall_step = wall.duration_since(last_wall).unwrap_or(Duration::ZERO);
        let mono_step = mono.duration_since(last_mono);
        // A backwards step shows as a wall step shorter than the monotonic
        // one (or as an error above, counted as zero).
        let drift = wall_step.abs_diff(mono_step);
        if drift > RTC_JUMP {
            tracing::info!("{}: host clock jumped by {drift:?}", shared.name);
            clock_jumped(shared);
        }
        last_wall = wall;
        last_mono = mono;
    }
}

/// Posts SYNCRTC to a guest that negotiated it and has nothing pending.
fn clock_jumped(shared: &Shared) {
    let mut regs = shared.lock();
    if regs.status & STATUS_DRIVER_OK != 0
        && regs.guest_features & FEATURE_SYNCRTC != 0
        && regs.command == CMD_NONE
    {
        shared.post(&mut regs, CMD_SYNCRTC);
    }
}

impl PciDevice for Vmmci {
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
    }

    fn bars(&self) -> Vec<BarRange> {
        self.config.bars()
    }

    fn set_bar_address(&mut self, index: u8, base: u64) {
        self.config.set_bar_address(usize::from(index), base);
    }

    fn decoded_bars(&self) -> Vec<BarRange> {
        self.config.decoded_bars()
    }

    fn bar_read(&mut self, _bar: u8, offset: u64, data: &mut [u8]) {
        // Registers are read whole; a narrower access takes its bytes.
        let base = offset & !3;
        let register = match offset {
            REG_QUEUE_SIZE | REG_QUEUE_SELECT | REG_QUEUE_NOTIFY | REG_STATUS | REG_ISR => offset,
            _ => base,
        };
        let value = self.read_register(register).to_le_bytes();
        let skip = (offset - register) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = value.get(skip + i).copied().unwrap_or(0);
        }
    }

    fn bar_write(&mut self, _bar: u8, offset: u64, data: &[u8]) {
        let mut value = [0u8; 4];
        let n = data.len().min(4);
        value[..n].copy_from_slice(&data[..n]);
        self.write_register(offset, u32::from_le_bytes(value));
    }
}
