//! Wiring a VM: the KVM VM and its memory, the PC devices, the PCI
//! devices with their transports, the port bus, the boot image loaded for
//! the machine so built, and the vCPUs. A boot ([`super::Vm::build`]) and
//! a restore ([`super::Vm::restore`]) build the same machine through
//! [`Assembly`]; nothing here runs it.

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use disk::lock::HeldLocks;
use kvm_bindings::{CpuId, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use proto::ErrorCode;
use proto::control::BootDevice;
use proto::vmchannel::{LaunchDisk, VmLaunch};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{BootImage, Entry};
use crate::bus::{Bus, shared};
use crate::console::Console;
use crate::cpuid;
use crate::devices::acpi_pm::{self, Pm1};
use crate::devices::cmos::{self, Cmos};
use crate::devices::debug_port::{DEBUG_PORT, DebugPort};
use crate::devices::fw_cfg::{self, FwCfg, FwCfgDma, FwCfgPorts};
use crate::devices::i8042::{I8042_COMMAND_PORT, I8042Reset};
use crate::devices::level_irq::LevelIrq;
use crate::devices::pci::host_bridge::HostBridge;
use crate::devices::pci::irq_lines::{self, IrqLines};
use crate::devices::pci::root::{CONFIG_PORTS_BASE, CONFIG_PORTS_LEN};
use crate::devices::pci::{PciConfigPorts, PciRoot};
use crate::devices::serial::{self, Serial};
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio::blk::{self, Blk};
use crate::devices::virtio::net::{self as vionet, Net, NetConfig};
use crate::devices::virtio::pci::{TransportContext, VirtioPciDevice};
use crate::devices::virtio::rng::{self, Rng};
use crate::devices::virtio::scsi::{self, Scsi};
use crate::devices::vmmci::{Vmmci, VmmciHandle};
use crate::irq_routing::GsiRouter;
use crate::lifecycle::Lifecycle;
use crate::memory::{self, GuestRam, Layout};
use crate::platform::Platform;
use crate::smbios;
use crate::snapshot::SavedDevice;
use crate::vcpu::{self, SharedVcpu};
use guestnet::dhcp::Lease;
use proto::vmchannel::ExitReason;

use super::error::LaunchError;
use super::files::{NicFiles, read_image};

/// What a boot and a restore build alike: the KVM VM, its memory, and
/// every device, before any vCPU exists.
pub(super) struct Assembly {
    pub(super) kvm: Kvm,
    pub(super) vm_fd: Arc<VmFd>,
    pub(super) ram: GuestRam,
    pub(super) console: Arc<Console>,
    pub(super) legacy: LegacyDevices,
    pub(super) pio: Arc<Bus>,
    pub(super) mmio: Arc<Bus>,
    pub(super) pci: PciDevices,
    pub(super) saved_devices: Vec<SavedDevice>,
    pub(super) disk_sizes: Vec<u64>,
    pub(super) cdrom_size: Option<u64>,
}

impl Assembly {
    pub(super) fn new(
        launch: &VmLaunch,
        (disks, nics, cdrom): (Vec<OpenDisk>, Vec<OpenNic>, Option<OpenCdrom>),
        kvm_fd: OwnedFd,
        layout: Layout,
        lifecycle: &Arc<Lifecycle>,
    ) -> Result<Assembly, LaunchError> {
        let disk_sizes = disks.iter().map(|d| d.backend.size()).collect();
        let cdrom_size = cdrom.as_ref().map(|cd| cd.backend.size());
        let (kvm, vm_fd) = create_kvm_vm(kvm_fd, &launch.name)?;
        let vm_fd = Arc::new(vm_fd);
        let ram = map_memory(&vm_fd, layout, &launch.name)?;
        let console =
            Console::new(&launch.console_history).map_err(|e| LaunchError::io("console", &e))?;
        let legacy = legacy_devices(
            &vm_fd,
            &ram,
            launch.vcpus.max(1),
            console.clone(),
            lifecycle,
        )?;
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let transport = TransportContext {
            vm: vm_fd.clone(),
            router: Arc::new(GsiRouter::new(vm_fd.clone())),
            mem: ram.mem.clone(),
            lifecycle: lifecycle.clone(),
        };
        let pci = pci_devices(&pio, &mmio, &transport, nics, (disks, cdrom), &launch.name)?;
        let pci_ports = attach_port_devices(&pio, &legacy, pci.root.clone(), launch, lifecycle)?;
        let mut saved_devices = vec![
            SavedDevice::port("com1", legacy.serial.clone()),
            SavedDevice::port("rtc", legacy.cmos.clone()),
            SavedDevice::port("fw_cfg", legacy.fw_cfg.clone()),
            SavedDevice::port("pm1", legacy.pm.clone()),
            SavedDevice::port("pci-config", pci_ports),
        ];
        let functions = pci.root.lock().unwrap_or_else(|e| e.into_inner()).devices();
        saved_devices.extend(
            functions
                .into_iter()
                .zip(&pci.labels)
                .enumerate()
                .map(|(slot, (device, label))| SavedDevice::pci(slot, label, device)),
        );
        Ok(Assembly {
            kvm,
            vm_fd,
            ram,
            console,
            legacy,
            pio,
            mmio,
            pci,
            saved_devices,
            disk_sizes,
            cdrom_size,
        })
    }
}

/// The platform as built (CPUs, PCI interrupts) and the boot image loaded
/// for it: tables in memory for a kernel, through fw_cfg for firmware.
pub(super) fn load_boot_image(
    boot: BootImage,
    ram: &GuestRam,
    legacy: &LegacyDevices,
    pci: &Arc<Mutex<PciRoot>>,
    cpuid: &CpuId,
    vcpu_count: u32,
    name: &str,
) -> Result<Entry, LaunchError> {
    let platform = Platform::new(
        vcpu_count,
        &cpuid::guest_cpuid(cpuid, 0, vcpu_count),
        &pci.lock().unwrap_or_else(|e| e.into_inner()),
    );
    let mut fw_cfg = legacy.fw_cfg.lock().unwrap_or_else(|e| e.into_inner());
    let loaded = boot
        .load(ram, &platform, &mut fw_cfg)
        .map_err(LaunchError::from)?;
    if let Some(initrd) = loaded.initrd {
        tracing::info!("{name}: initrd at {:#x}-{:#x}", initrd.addr, initrd.last());
    }
    Ok(loaded.entry)
}

/// A KVM VM with the in-kernel interrupt controllers and PIT.
fn create_kvm_vm(kvm_fd: OwnedFd, name: &str) -> Result<(Kvm, VmFd), LaunchError> {
    // SAFETY: vmd opened /dev/kvm for us and handed over ownership, which
    // `Kvm` takes from here on.
    let kvm = unsafe { Kvm::from_raw_fd(kvm_fd.into_raw_fd()) };
    let vm_fd = kvm
        .create_vm()
        .map_err(|e| LaunchError::kvm("KVM_CREATE_VM", e))?;
    // Intel needs these in guest-physical space that is not RAM; elsewhere
    // they may be refused, which is harmless.
    if let Err(e) = vm_fd.set_identity_map_address(memory::KVM_IDENTITY_MAP_ADDR) {
        tracing::debug!("{name}: KVM_SET_IDENTITY_MAP_ADDR: {e}");
    }
    if let Err(e) = vm_fd.set_tss_address(memory::KVM_TSS_ADDR as usize) {
        tracing::debug!("{name}: KVM_SET_TSS_ADDR: {e}");
    }
    vm_fd
        .create_irq_chip()
        .map_err(|e| LaunchError::kvm("KVM_CREATE_IRQCHIP", e))?;
    vm_fd
        .create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(|e| LaunchError::kvm("KVM_CREATE_PIT2", e))?;
    Ok((kvm, vm_fd))
}

/// Allocates guest memory and gives every backed region to KVM.
fn map_memory(vm_fd: &VmFd, layout: Layout, name: &str) -> Result<GuestRam, LaunchError> {
    let ram = GuestRam::new(layout, name).map_err(|e| {
        LaunchError::new(
            ErrorCode::ENOMEM,
            format!("could not allocate guest memory: {e}"),
        )
    })?;
    for (slot, region) in ram.layout.regions.iter().enumerate() {
        let host = ram
            .mem
            .find_region(vm_memory::GuestAddress(region.guest_addr))
            .ok_or_else(|| LaunchError::new(ErrorCode::ENOMEM, "guest memory region missing"))?
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| LaunchError::new(ErrorCode::ENOMEM, e.to_string()))?;
        let mapping = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.guest_addr,
            memory_size: region.size,
            userspace_addr: host as u64,
        };
        // SAFETY: the host range is a live mapping of `region.size` bytes
        // owned by `ram`, which outlives the VM.
        unsafe { vm_fd.set_user_memory_region(mapping) }
            .map_err(|e| LaunchError::kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(ram)
}

/// An eventfd that raises `gsi` in the in-kernel interrupt controller.
fn irqfd(vm_fd: &VmFd, gsi: u32) -> Result<EventFd, LaunchError> {
    let evt = EventFd::new(0).map_err(|e| LaunchError::io("eventfd", &e))?;
    vm_fd
        .register_irqfd(&evt, gsi)
        .map_err(|e| LaunchError::kvm("KVM_IRQFD", e))?;
    Ok(evt)
}

/// The PC devices every VM has besides PCI.
pub(super) struct LegacyDevices {
    pub(super) serial: Arc<Mutex<Serial>>,
    pub(super) cmos: Arc<Mutex<Cmos>>,
    pub(super) fw_cfg: Arc<Mutex<FwCfg>>,
    /// The ACPI fixed hardware the FADT describes.
    pub(super) pm: Arc<Mutex<Pm1>>,
}

fn legacy_devices(
    vm_fd: &VmFd,
    ram: &GuestRam,
    vcpu_count: u32,
    console: Arc<Console>,
    lifecycle: &Arc<Lifecycle>,
) -> Result<LegacyDevices, LaunchError> {
    let serial = shared(Serial::new(irqfd(vm_fd, serial::COM1_IRQ)?, console));
    let cmos = shared(Cmos::new(
        &ram.layout,
        vcpu_count,
        irqfd(vm_fd, cmos::RTC_IRQ)?,
    ));
    let mut fw_cfg = FwCfg::new(ram.mem.clone(), &ram.layout, vcpu_count as u16);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("etc/e820", fw_cfg::e820_file(&ram.layout)),
        // Stock SeaBIOS talks on COM1 only when told to.
        (
            "etc/sercon-port",
            (serial::COM1_BASE as u16).to_le_bytes().to_vec(),
        ),
        ("etc/screen-and-debug", 0u64.to_le_bytes().to_vec()),
    ];
    for (name, data) in files {
        fw_cfg
            .add_file(name, data)
            .map_err(|e| LaunchError::new(ErrorCode::EINVAL, e.to_string()))?;
    }
    let power_off = {
        let lifecycle = lifecycle.clone();
        move || lifecycle.request_exit(ExitReason::PowerOff)
    };
    let pm = shared(Pm1::new(Box::new(power_off)));
    let sci = {
        let pm = pm.clone();
        LevelIrq::new(
            vm_fd,
            u32::from(acpi_pm::SCI_IRQ),
            "sci",
            lifecycle.clone(),
            move || pm.lock().unwrap_or_else(|e| e.into_inner()).sci_pending(),
        )
        .map_err(|e| LaunchError::io("sci", &e))?
    };
    pm.lock()
        .unwrap_or_else(|e| e.into_inner())
        .connect_sci(sci);
    Ok(LegacyDevices {
        serial,
        cmos,
        fw_cfg: Arc::new(Mutex::new(fw_cfg)),
        pm,
    })
}

/// Hands SMBIOS tables to the firmware.
pub(super) fn add_smbios(
    fw_cfg: &Mutex<FwCfg>,
    launch: &VmLaunch,
    layout: &Layout,
    vcpus: u32,
) -> Result<(), LaunchError> {
    let mut uuid = [0u8; 16];
    // SAFETY: getrandom writes at most 16 bytes into `uuid`.
    unsafe { libc::getrandom(uuid.as_mut_ptr().cast(), uuid.len(), 0) };
    uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4 (random)
    uuid[8] = (uuid[8] & 0x3f) | 0x80; // RFC 4122 variant
    let (tables, anchor) = smbios::build(&smbios::SmbiosInfo {
        vm_name: &launch.name,
        vm_id: launch.id,
        vcpus,
        layout,
        uuid,
    });
    let mut fw_cfg = fw_cfg.lock().unwrap_or_else(|e| e.into_inner());
    for (name, data) in [
        ("etc/smbios/smbios-tables", tables),
        ("etc/smbios/smbios-anchor", anchor),
    ] {
        fw_cfg
            .add_file(name, data)
            .map_err(|e| LaunchError::new(ErrorCode::EINVAL, e.to_string()))?;
    }
    Ok(())
}

/// One opened disk, ready for its device.
pub(super) struct OpenDisk {
    pub(super) backend: Arc<dyn disk::BlockBackend>,
    pub(super) path: String,
}

/// The disks, NICs and CD-ROM of a launch, opened from what vmd handed
/// over, and a way to release the locks on the images.
type OpenedDevices = (Vec<OpenDisk>, Vec<OpenNic>, Option<OpenCdrom>, HeldLocks);

/// Opens the devices a boot and a restore alike are built with.
pub(super) fn open_devices(
    launch: &VmLaunch,
    (disks, nics, cdrom): (Vec<Vec<File>>, Vec<NicFiles>, Option<File>),
) -> Result<OpenedDevices, LaunchError> {
    let mut locks = HeldLocks::default();
    let disks = open_disks(&launch.disks, disks, &mut locks)?;
    let nics = open_nics(launch, nics)?;
    let cdrom = cdrom.map(|file| open_cdrom(file, &mut locks)).transpose()?;
    Ok((disks, nics, cdrom, locks))
}

/// Adopts the images vmd opened (and locked) for each disk.
fn open_disks(
    disks: &[LaunchDisk],
    files: Vec<Vec<File>>,
    locks: &mut HeldLocks,
) -> Result<Vec<OpenDisk>, LaunchError> {
    let mut out = Vec::new();
    for (disk, files) in disks.iter().zip(files) {
        for file in &files {
            locks
                .keep(file)
                .map_err(|e| LaunchError::io(&disk.path, &e))?;
        }
        let access = if disk.read_only {
            disk::Access::ReadOnly
        } else {
            disk::Access::ReadWrite
        };
        let backend = disk::ImageChain::from_files(&disk.path, disk.format, access, files)
            .and_then(disk::ImageChain::into_backend)
            .map_err(|e| LaunchError::new(ErrorCode::DISK_MISSING, e.to_string()))?;
        out.push(OpenDisk {
            backend: Arc::from(backend),
            path: disk.path.clone(),
        });
    }
    Ok(out)
}

/// A NIC ready to become a virtio-net device.
pub(super) struct OpenNic {
    pub(super) config: NetConfig,
    /// iPXE, for a network boot.
    pub(super) boot_rom: Option<Vec<u8>>,
}

/// The NICs of the launch description with their taps (docs/networking.md): the
/// DHCP responder of a local interface leases the guest its address.
fn open_nics(launch: &VmLaunch, files: Vec<NicFiles>) -> Result<Vec<OpenNic>, LaunchError> {
    let net_boot = launch.boot_device == Some(BootDevice::Net);
    let mut out = Vec::new();
    for (index, (nic, files)) in launch.nics.iter().zip(files).enumerate() {
        let lease = nic.local.map(|local| Lease {
            vm_mac: nic.guest_mac,
            host_mac: nic.host_mac,
            host: local.host.into(),
            guest: local.guest.into(),
            net_boot,
            vm_name: launch.name.clone(),
        });
        let boot_rom = match files.boot_rom {
            Some(rom) => Some(read_image(&rom)?),
            None => None,
        };
        out.push(OpenNic {
            config: NetConfig {
                name: format!("{}-vionet{index}", launch.name),
                tap: files.tap,
                guest_mac: nic.guest_mac,
                locked: nic.locked,
                lease,
            },
            boot_rom,
        });
    }
    Ok(out)
}

/// Adopts the ISO image vmd opened read-only: a raw image, whatever it
/// holds. Its serial number names the file (device and inode), so the
/// guest tells images apart without learning host paths.
fn open_cdrom(file: File, locks: &mut HeldLocks) -> Result<OpenCdrom, LaunchError> {
    use std::os::unix::fs::MetadataExt;
    let missing = |e: String| LaunchError::new(ErrorCode::CDROM_MISSING, e);
    locks.keep(&file).map_err(|e| missing(e.to_string()))?;
    let meta = file.metadata().map_err(|e| missing(e.to_string()))?;
    let backend =
        disk::ImageChain::raw_read_only("cdrom", file).map_err(|e| missing(e.to_string()))?;
    Ok(OpenCdrom {
        backend: Arc::from(backend),
        serial: format!("{:X}-{:X}", meta.dev(), meta.ino()),
    })
}

/// The opened ISO image and the serial number its drive reports.
pub(super) struct OpenCdrom {
    pub(super) backend: Arc<dyn disk::BlockBackend>,
    pub(super) serial: String,
}

/// The PCI bus as built, and where the boot devices ended up.
pub(super) struct PciDevices {
    pub(super) root: Arc<Mutex<PciRoot>>,
    /// What is in each slot (`host`, `viornd`, `vionet0`, …, `vmmci`): a
    /// sent VM's device records are named after them, so a receiver
    /// whose slots differ refuses the stream before restoring any.
    pub(super) labels: Vec<String>,
    pub(super) first_nic_slot: Option<usize>,
    pub(super) first_disk_slot: Option<usize>,
    pub(super) vmmci: VmmciHandle,
    pub(super) cdrom_slot: Option<usize>,
}

/// Bus 0 and the devices in its slots, in vmd's order (docs/machine.md, "PCI devices"): host
/// bridge, entropy, network interfaces, disks, CD-ROM, vmmci. Each device
/// that interrupts takes the next IRQ of the PCI list.
fn pci_devices(
    pio: &Arc<Bus>,
    mmio: &Arc<Bus>,
    transport: &TransportContext,
    nics: Vec<OpenNic>,
    (disks, cdrom): (Vec<OpenDisk>, Option<OpenCdrom>),
    name: &str,
) -> Result<PciDevices, LaunchError> {
    let mut root = PciRoot::new(pio, mmio);
    let mut irqs = IrqLines::new();
    let full = || LaunchError::new(ErrorCode::EINVAL, "no room for another PCI device");
    root.add(shared(HostBridge::new())).ok_or_else(full)?;
    let mut labels = vec!["host".to_string()];
    let mut add_virtio =
        |what: &str, device: Box<dyn VirtioDevice>, identity, rom: Option<Vec<u8>>| {
            labels.push(what.to_string());
            let device = VirtioPciDevice::new(
                &format!("{name}-{what}"),
                device,
                identity,
                irqs.next_irq(),
                transport.clone(),
            )
            .map_err(|e| LaunchError::io(what, &e))?;
            let device = match rom {
                Some(rom) => device.with_option_rom(rom),
                None => device,
            };
            root.add(shared(device)).ok_or_else(full)
        };
    add_virtio("viornd", Box::<Rng>::default(), rng::pci_identity(), None)?;
    let mut first_nic_slot = None;
    for (index, nic) in nics.into_iter().enumerate() {
        let slot = add_virtio(
            &format!("vionet{index}"),
            Box::new(Net::new(nic.config)),
            vionet::pci_identity(),
            nic.boot_rom,
        )?;
        first_nic_slot.get_or_insert(slot);
    }
    let mut first_disk_slot = None;
    for (index, disk) in disks.into_iter().enumerate() {
        let slot = add_virtio(
            &format!("vioblk{index}"),
            Box::new(Blk::new(disk.backend, &disk.path)),
            blk::pci_identity(),
            None,
        )?;
        first_disk_slot.get_or_insert(slot);
    }
    let cdrom_slot = match cdrom {
        Some(cd) => Some(add_virtio(
            "vioscsi",
            Box::new(Scsi::new(cd.backend, &cd.serial)),
            scsi::pci_identity(),
            None,
        )?),
        None => None,
    };
    // vmmci always comes last; when the IRQ list runs out it shares a line
    // instead of being left out as upstream does.
    let irq = irqs.next_irq();
    let intx = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| LaunchError::io("eventfd", &e))?;
    let resample = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| LaunchError::io("eventfd", &e))?;
    transport
        .vm
        .register_irqfd_with_resample(&intx, &resample, u32::from(irq))
        .map_err(|e| LaunchError::kvm("KVM_IRQFD", e))?;
    let (vmmci, vmmci_handle) = Vmmci::new(
        &format!("{name}-vmmci"),
        irq,
        intx,
        resample,
        transport.lifecycle.clone(),
    )
    .map_err(|e| LaunchError::io("vmmci", &e))?;
    root.add(shared(vmmci)).ok_or_else(full)?;
    labels.push("vmmci".to_string());
    // PCI INTx lines and the ACPI SCI are level-triggered.
    let level: Vec<u8> = irqs
        .used()
        .iter()
        .copied()
        .chain([acpi_pm::SCI_IRQ])
        .collect();
    irq_lines::set_level_triggered(&transport.vm, &level)
        .map_err(|e| LaunchError::kvm("KVM_SET_IRQCHIP", e))?;
    Ok(PciDevices {
        root: Arc::new(Mutex::new(root)),
        labels,
        first_nic_slot,
        first_disk_slot,
        vmmci: vmmci_handle,
        cdrom_slot,
    })
}

/// fw_cfg `bootorder` for a boot device override (docs/machine.md, "Boot"): the BIOS
/// tries only the named device. SeaBIOS prints PCI slots in hex.
///
/// For the CD, SeaBIOS names target 0 by the LUN number REPORT LUNS
/// gave it, printed in hex after the comma. vmd's line has `40000100`
/// there: vmd's device reports its LUN in the virtio address format,
/// which SeaBIOS decodes to that number. This device reports LUN 0 as SAM
/// encodes it, so SeaBIOS looks for `*@0,0`; both lines are given, vmd's
/// first.
pub(super) fn boot_order(device: Option<BootDevice>, pci: &PciDevices) -> Option<String> {
    match device? {
        BootDevice::Disk => Some(format!("/pci@i0cf8/*@{:x}\nHALT", pci.first_disk_slot?)),
        // The first NIC's option ROM (iPXE) is what boots.
        BootDevice::Net => Some(format!("/pci@i0cf8/*@{:x}\nHALT", pci.first_nic_slot?)),
        BootDevice::Cdrom => {
            let controller = format!("/pci@i0cf8/*@{:x}/*@0", pci.cdrom_slot?);
            Some(format!(
                "{controller}/*@0,40000100\n{controller}/*@0,0\nHALT"
            ))
        }
    }
}

/// Puts the legacy devices and PCI's configuration ports on the port bus;
/// returns the latter.
fn attach_port_devices(
    pio: &Bus,
    legacy: &LegacyDevices,
    pci: Arc<Mutex<PciRoot>>,
    launch: &VmLaunch,
    lifecycle: &Arc<Lifecycle>,
) -> Result<Arc<Mutex<PciConfigPorts>>, LaunchError> {
    let reboot = {
        let lifecycle = lifecycle.clone();
        move || lifecycle.request_exit(ExitReason::Reboot)
    };
    let insert = |base: u64, len: u64, dev: crate::bus::SharedDevice| {
        pio.insert(base, len, dev)
            .map_err(|e| LaunchError::new(ErrorCode::EINVAL, e.to_string()))
    };
    insert(serial::COM1_BASE, serial::COM1_LEN, legacy.serial.clone())?;
    insert(cmos::CMOS_BASE, cmos::CMOS_LEN, legacy.cmos.clone())?;
    insert(
        fw_cfg::FW_CFG_BASE,
        fw_cfg::FW_CFG_PORTS_LEN,
        shared(FwCfgPorts(legacy.fw_cfg.clone())),
    )?;
    insert(
        fw_cfg::FW_CFG_DMA_BASE,
        fw_cfg::FW_CFG_DMA_LEN,
        shared(FwCfgDma(legacy.fw_cfg.clone())),
    )?;
    // Firmware diagnostics only when they would be logged.
    insert(
        DEBUG_PORT,
        1,
        shared(DebugPort::new(&launch.name, launch.verbose > 0)),
    )?;
    insert(acpi_pm::PM_BASE, acpi_pm::PM_LEN, legacy.pm.clone())?;
    insert(
        I8042_COMMAND_PORT,
        1,
        shared(I8042Reset::new(Box::new(reboot.clone()))),
    )?;
    let config_ports = shared(PciConfigPorts::new(pci, Box::new(reboot)));
    insert(CONFIG_PORTS_BASE, CONFIG_PORTS_LEN, config_ports.clone())?;
    Ok(config_ports)
}

pub(super) fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, LaunchError> {
    kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| LaunchError::kvm("KVM_GET_SUPPORTED_CPUID", e))
}

/// The vCPUs with their CPUID. The first starts at the reset vector or at
/// the kernel's entry; the others wait in the in-kernel LAPIC for the
/// guest to start them with INIT/SIPI (firmware and kernels alike do).
pub(super) fn create_vcpus(
    vm_fd: &VmFd,
    supported: &CpuId,
    count: u32,
    entry: &Entry,
) -> Result<Vec<(SharedVcpu, CpuId)>, LaunchError> {
    let mut vcpus = Vec::new();
    for index in 0..count {
        let (vcpu, cpuid) = create_vcpu(vm_fd, index, cpuid::guest_cpuid(supported, index, count))?;
        if index == 0 {
            let vcpu = vcpu.lock().unwrap_or_else(|e| e.into_inner());
            match entry {
                Entry::ResetVector => vcpu::set_reset_state(&vcpu),
                Entry::Kernel(state) => state.apply(&vcpu),
            }
            .map_err(|e| LaunchError::kvm("vcpu registers", e))?;
        }
        vcpus.push((vcpu, cpuid));
    }
    Ok(vcpus)
}

/// vCPU `index` with `cpuid`, which comes back with it: what KVM reports
/// for a vCPU may differ from what it was given (KVM adds what the
/// guest's own settings imply, and some hosts rewrite more), and a send
/// carries what this VMM chose.
pub(super) fn create_vcpu(
    vm_fd: &VmFd,
    index: u32,
    cpuid: CpuId,
) -> Result<(SharedVcpu, CpuId), LaunchError> {
    let vcpu = vm_fd
        .create_vcpu(u64::from(index))
        .map_err(|e| LaunchError::kvm("KVM_CREATE_VCPU", e))?;
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| LaunchError::kvm("KVM_SET_CPUID2", e))?;
    Ok((Arc::new(Mutex::new(vcpu)), cpuid))
}
