//! Building one VM on KVM from a launch description, and running it.
//!
//! The steps of a boot ([`Vm::build`]) and of a restore ([`Vm::restore`])
//! are here, and the VM's runtime control (start, pause, resume, shutdown,
//! send). The descriptors of the launch message are unpacked in `files`,
//! the machine is wired in `wiring`, and [`LaunchError`] is what either
//! reports; none of them uses this module.

use std::fs::File;
use std::sync::{Arc, Mutex};

use disk::lock::HeldLocks;
use kvm_bindings::CpuId;
use kvm_ioctls::{Kvm, VmFd};
use proto::ErrorCode;
use proto::control::BootDevice;
use proto::vmchannel::{ExitReason, VmDescription, VmLaunch};

use crate::boot::{BootImage, BootRequest};
use crate::bus::Bus;
use crate::console::{self, Console};
use crate::devices::acpi_pm::Pm1;
use crate::devices::cmos::{self, Cmos};
use crate::devices::serial::Serial;
use crate::devices::vmmci::VmmciHandle;
use crate::lifecycle::Lifecycle;
use crate::memory::{GuestRam, Layout};
use crate::sandbox::{self, ThreadKind};
use crate::snapshot::format::FrameReader;
use crate::snapshot::save::{self, Sent};
use crate::snapshot::{Header, Machine, SavedDevice, StreamError, restore};
use crate::vcpu::{self, SharedVcpu, VcpuContext};

mod error;
mod files;
mod wiring;

pub use error::LaunchError;
use files::read_image;
pub use files::{LaunchFiles, NicFiles};
use wiring::{
    Assembly, add_smbios, boot_order, create_vcpu, create_vcpus, load_boot_image, open_devices,
    supported_cpuid,
};

/// How long a guest that took the ACPI power button may take to power
/// off before the VM is ended anyway (the same as vmmci allows after an
/// acknowledgement).
pub const ACPI_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A built VM, ready to run.
pub struct Vm {
    pub name: String,
    pub ram: GuestRam,
    pub lifecycle: Arc<Lifecycle>,
    pub console: Arc<Console>,
    pub serial: Arc<Mutex<Serial>>,
    cmos: Arc<Mutex<Cmos>>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    vcpus: Vec<SharedVcpu>,
    /// The CPUID each vCPU was given.
    cpuids: Vec<CpuId>,
    pty_master: File,
    pub pty_slave: File,
    /// The KVM VM; also keeps its memory regions and irqfds alive.
    vm_fd: Arc<VmFd>,
    /// kvmclock as it was when the VM was paused.
    paused_clock: Mutex<Option<kvm_bindings::kvm_clock_data>>,
    /// The guest's shutdown channels: vmmci and the ACPI power button.
    vmmci: VmmciHandle,
    pm: Arc<Mutex<Pm1>>,
    /// The devices whose state a send carries, in build order.
    saved_devices: Vec<SavedDevice>,
    /// Virtual size of each disk.
    disk_sizes: Vec<u64>,
    /// Size of the CD-ROM's image.
    cdrom_size: Option<u64>,
    /// The locks vmd took on the disk and CD images, released once the
    /// VM has been sent away.
    image_locks: HeldLocks,
    kvm: Kvm,
}

impl Vm {
    /// The VM, with its vCPUs.
    fn from_assembly(
        parts: Assembly,
        launch: &VmLaunch,
        vcpus: Vec<(SharedVcpu, CpuId)>,
        pty: (File, File),
        lifecycle: Arc<Lifecycle>,
        image_locks: HeldLocks,
    ) -> Vm {
        let (vcpus, cpuids) = vcpus.into_iter().unzip();
        Vm {
            name: launch.name.clone(),
            ram: parts.ram,
            lifecycle,
            console: parts.console,
            serial: parts.legacy.serial,
            cmos: parts.legacy.cmos,
            pio: parts.pio,
            mmio: parts.mmio,
            vcpus,
            cpuids,
            pty_master: pty.0,
            pty_slave: pty.1,
            vm_fd: parts.vm_fd,
            paused_clock: Mutex::new(None),
            vmmci: parts.pci.vmmci,
            pm: parts.legacy.pm,
            saved_devices: parts.saved_devices,
            disk_sizes: parts.disk_sizes,
            cdrom_size: parts.cdrom_size,
            image_locks,
            kvm: parts.kvm,
        }
    }

    /// Creates the KVM VM, its memory and devices, loads the boot image and
    /// prepares the vCPUs. Nothing runs yet.
    pub fn build(
        launch: &VmLaunch,
        files: LaunchFiles,
        lifecycle: Arc<Lifecycle>,
    ) -> Result<Vm, LaunchError> {
        let boot = prepare_boot(launch, &files)?;
        let (disks, nics, cdrom, locks) =
            open_devices(launch, (files.disks, files.nics, files.cdrom))?;
        let layout = Layout::with_bios_size(launch.memory, boot.firmware_size());
        let parts = Assembly::new(launch, (disks, nics, cdrom), files.kvm, layout, &lifecycle)?;
        let vcpu_count = launch.vcpus.max(1);
        add_smbios(&parts.legacy.fw_cfg, launch, &parts.ram.layout, vcpu_count)?;
        if let Some(order) = boot_order(launch.boot_device, &parts.pci) {
            parts
                .legacy
                .fw_cfg
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add_file("bootorder", order.into_bytes())
                .map_err(|e| LaunchError::new(ErrorCode::EINVAL, e.to_string()))?;
        }
        let cpuid = supported_cpuid(&parts.kvm)?;
        let entry = load_boot_image(
            boot,
            &parts.ram,
            &parts.legacy,
            &parts.pci.root,
            &cpuid,
            vcpu_count,
            &launch.name,
        )?;
        let vcpus = create_vcpus(&parts.vm_fd, &cpuid, vcpu_count, &entry)?;
        Ok(Vm::from_assembly(
            parts,
            launch,
            vcpus,
            (files.pty_master, files.pty_slave),
            lifecycle,
            locks,
        ))
    }

    /// Builds a received VM (`launch.incoming`) from its stream: the same
    /// machine as [`Vm::build`] makes from the stream's description, with
    /// memory, devices and vCPUs as the sender left them instead of a
    /// boot. The VM is left paused (see [`Vm::resume`]); nothing of a
    /// stream that does not check out completely reaches a vCPU.
    pub fn restore(
        launch: &VmLaunch,
        files: LaunchFiles,
        lifecycle: Arc<Lifecycle>,
    ) -> Result<Vm, LaunchError> {
        let started = std::time::Instant::now();
        let stream_error = |e: StreamError| LaunchError::new(e.code(), e.to_string());
        let (incoming, stream) = launch
            .incoming
            .as_ref()
            .zip(files.incoming)
            .ok_or_else(|| LaunchError::new(ErrorCode::EINVAL, "launch lacks the stream"))?;
        let (reader, payload) = FrameReader::resume(
            &incoming.header,
            std::io::BufReader::with_capacity(1 << 20, stream),
        )
        .map_err(stream_error)?;
        let header = Header::decode(&payload).map_err(stream_error)?;
        check_description(launch, &header)?;
        let (disks, nics, cdrom, locks) =
            open_devices(launch, (files.disks, files.nics, files.cdrom))?;
        let sizes: Vec<u64> = disks.iter().map(|d| d.backend.size()).collect();
        if sizes != header.disk_sizes {
            return Err(stream_error(StreamError::DiskChanged(format!(
                "disk sizes {sizes:?} where the guest had {:?}",
                header.disk_sizes
            ))));
        }
        let cdrom_size = cdrom.as_ref().map(|cd| cd.backend.size());
        if cdrom_size != header.cdrom_size {
            return Err(stream_error(StreamError::DiskChanged(format!(
                "a cd-rom image of {cdrom_size:?} bytes where the guest had {:?}",
                header.cdrom_size
            ))));
        }
        let parts = Assembly::new(
            launch,
            (disks, nics, cdrom),
            files.kvm,
            header.layout(),
            &lifecycle,
        )?;
        let names: Vec<&str> = parts
            .saved_devices
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        if names != header.devices {
            return Err(stream_error(StreamError::corrupt(format!(
                "devices {:?} where this machine has {names:?}",
                header.devices
            ))));
        }
        // Devices restored below start their I/O threads, which must not
        // touch guest memory before the vCPUs run.
        lifecycle.hold();
        let received = restore::read_stream(reader, &header, &parts.ram).map_err(stream_error)?;
        let mut vcpus = Vec::new();
        for state in &received.vcpus {
            let cpuid = state
                .cpuid()
                .map_err(|e| stream_error(StreamError::corrupt(e)))?;
            vcpus.push(create_vcpu(&parts.vm_fd, state.index, cpuid)?);
        }
        let pci_root = parts.pci.root.clone();
        let vm = Vm::from_assembly(
            parts,
            launch,
            vcpus,
            (files.pty_master, files.pty_slave),
            lifecycle,
            locks,
        );
        restore::apply(&vm.machine(), &received).map_err(stream_error)?;
        pci_root
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync_all_bars();
        // The clock starts again where the sender's stopped when the VM
        // resumes.
        *vm.paused_clock.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(received.in_kernel.clock.0);
        tracing::info!(
            "{}: restored vm {} ({} pages of memory) in {:?}",
            launch.name,
            header.name,
            received.pages,
            started.elapsed()
        );
        Ok(vm)
    }

    /// The parts a stream is written from or read into.
    fn machine(&self) -> Machine<'_> {
        Machine {
            name: &self.name,
            kvm: &self.kvm,
            vm_fd: &self.vm_fd,
            ram: &self.ram,
            vcpus: &self.vcpus,
            cpuids: &self.cpuids,
            devices: &self.saved_devices,
            disk_sizes: &self.disk_sizes,
            cdrom_size: self.cdrom_size,
        }
    }

    /// Writes the VM's state to `out` (`vmctl send`) and waits for the
    /// reader's receipt. The VM must be paused ([`Vm::pause`]); the
    /// devices finish the requests they are serving and flush their disks
    /// as they save.
    pub fn send(&self, description: &VmDescription, out: &File) -> Result<Sent, StreamError> {
        if !self.lifecycle.is_paused() || self.lifecycle.exit_requested() {
            return Err(StreamError::Save("the vm is not paused".into()));
        }
        let clock = match *self.paused_clock.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(clock) => clock,
            None => self
                .vm_fd
                .get_clock()
                .map_err(|e| StreamError::Save(format!("KVM_GET_CLOCK: {e}")))?,
        };
        let sent = save::write_stream(&self.machine(), description, clock, out)?;
        save::await_receipt(out)?;
        // The VM lives on elsewhere now: its receiver may take the disks
        // before this process has finished tearing down.
        self.image_locks.release();
        Ok(sent)
    }

    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// Asks the guest to shut down (docs/lifecycle.md, "Stop, reboot and the end of a VM"): through vmmci when its
    /// driver runs (the VM then ends when the guest reboots or a vmmci
    /// timer runs out) and with the ACPI power button when the guest
    /// listens for it (the VM ends when the guest enters S5, or after
    /// [`ACPI_SHUTDOWN_TIMEOUT`]). A guest that can be asked neither way is
    /// ended at once, as vmd does.
    pub fn request_shutdown(&self) {
        let by_vmmci = self.vmmci.request_shutdown();
        let by_acpi = {
            let mut pm = self.pm.lock().unwrap_or_else(|e| e.into_inner());
            let listens = pm.power_button_enabled();
            if listens {
                pm.press_power_button();
            }
            listens
        };
        match (by_vmmci, by_acpi) {
            (false, false) => {
                tracing::info!(
                    "{}: the guest has no shutdown channel, terminating the vm",
                    self.name
                );
                self.lifecycle.request_exit(ExitReason::PowerOff);
            }
            (true, _) => {
                tracing::info!("{}: asked the guest to shut down (vmmci)", self.name);
            }
            (false, true) => {
                tracing::info!("{}: pressed the ACPI power button", self.name);
                let lifecycle = self.lifecycle.clone();
                let name = self.name.clone();
                let _ = crate::sandbox::spawn(
                    crate::sandbox::ThreadKind::Control,
                    "acpi-timeout".into(),
                    move || {
                        let deadline = std::time::Instant::now() + ACPI_SHUTDOWN_TIMEOUT;
                        while std::time::Instant::now() < deadline {
                            if lifecycle.exit_requested() {
                                return;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(200));
                        }
                        tracing::info!(
                            "{name}: no power-off after the power button, ending the vm"
                        );
                        lifecycle.request_exit(ExitReason::PowerOff);
                    },
                );
            }
        }
    }

    /// Parks every vCPU and freezes the guest clock (docs/lifecycle.md, "Pause").
    pub fn pause(&self) {
        if self.lifecycle.is_paused() {
            return;
        }
        self.lifecycle.pause(self.vcpus.len());
        match self.vm_fd.get_clock() {
            Ok(clock) => *self.paused_clock.lock().unwrap_or_else(|e| e.into_inner()) = Some(clock),
            Err(e) => tracing::debug!("{}: KVM_GET_CLOCK: {e}", self.name),
        }
    }

    /// Restarts the clock where it stopped, so the guest does not see the
    /// pause as time lost, and lets the vCPUs run again; each tells the
    /// guest's kvmclock it was stopped (KVM_KVMCLOCK_CTRL) so the guest
    /// does not report soft lockups.
    pub fn resume(&self) {
        if let Some(mut clock) = self
            .paused_clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            // Only the clock value is restored; the other fields describe
            // the host at the time it was read.
            clock.flags = 0;
            if let Err(e) = self.vm_fd.set_clock(&clock) {
                tracing::debug!("{}: KVM_SET_CLOCK: {e}", self.name);
            }
        }
        self.lifecycle.resume();
    }

    /// Starts the console relay, the RTC timer and the vCPU threads.
    pub fn start(&mut self) -> std::io::Result<()> {
        crate::lifecycle::install_kick_handler()?;

        let console = self.console.clone();
        let master = self.pty_master.try_clone()?;
        let input: Arc<Mutex<dyn console::ConsoleInput>> = self.serial.clone();
        sandbox::spawn(ThreadKind::Device, "console".into(), move || {
            console::relay(console, master, input)
        })?;

        let cmos = self.cmos.clone();
        let (stop, paused) = (self.lifecycle.clone(), self.lifecycle.clone());
        sandbox::spawn(ThreadKind::Device, "rtc".into(), move || {
            cmos::run_timer(
                cmos,
                move || stop.exit_requested(),
                move || paused.is_paused(),
            )
        })?;

        for (index, vcpu) in self.vcpus.iter().cloned().enumerate() {
            let ctx = VcpuContext {
                vm_name: self.name.clone(),
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                lifecycle: self.lifecycle.clone(),
            };
            sandbox::spawn(ThreadKind::Vcpu, format!("vcpu{index}"), move || {
                vcpu::run(vcpu, index as u32, ctx)
            })?;
        }
        Ok(())
    }
}

/// Recognises the boot image and checks it with its command line and
/// initrd before anything is allocated.
fn prepare_boot(launch: &VmLaunch, files: &LaunchFiles) -> Result<BootImage, LaunchError> {
    let clone = |file: &Option<File>, what: &str| {
        file.as_ref()
            .map(File::try_clone)
            .transpose()
            .map_err(|e| LaunchError::io(what, &e))
    };
    let boot_mac = match launch.boot_device {
        Some(BootDevice::Net) => launch.nics.first().map(|nic| nic.guest_mac),
        _ => None,
    };
    BootImage::prepare(BootRequest {
        image: read_image(
            files.boot_image.as_ref().ok_or_else(|| {
                LaunchError::new(ErrorCode::EINVAL, "launch lacks the boot image")
            })?,
        )?,
        cmdline: launch.cmdline.clone(),
        initrd: clone(&files.initrd, "initrd")?,
        firmware: clone(&files.firmware, "firmware")?,
        boot_mac,
    })
    .map_err(LaunchError::from)
}

/// Refuses a launch that does not match its stream's header (vmd builds
/// the one from the other).
fn check_description(launch: &VmLaunch, header: &Header) -> Result<(), LaunchError> {
    let d = &header.description;
    let paths: Vec<&str> = launch.disks.iter().map(|l| l.path.as_str()).collect();
    let wanted: Vec<&str> = d.disks.iter().map(|s| s.path.as_str()).collect();
    if launch.memory != d.memory
        || launch.vcpus != d.vcpus
        || paths != wanted
        || launch.cdrom.is_some() != d.cdrom.is_some()
        || launch.nics.len() != d.nics.len()
    {
        return Err(LaunchError::new(
            ErrorCode::EINVAL,
            "the launch does not match the stream's description",
        ));
    }
    Ok(())
}
