//! The send/receive stream parser on arbitrary bytes, as `vmctl receive`
//! could hand it to vmd and a VM process: the preamble and header as vmd
//! checks them (the CPU check against a fixed host), then every frame as
//! the VM process reads it, guest memory going into a small guest's RAM,
//! and the same bytes as the saved state of each port device and of the
//! virtio models that keep one of their own (the SCSI host with its
//! CD-ROM, the entropy device). Nothing may panic, allocate without bound
//! or write outside guest memory.

#![no_main]

use std::sync::Arc;

use kvm_bindings::kvm_cpuid_entry2;
use libfuzzer_sys::fuzz_target;
use vmm::console::Console;
use vmm::devices::acpi_pm::Pm1;
use vmm::devices::cmos::Cmos;
use vmm::devices::fw_cfg::FwCfg;
use vmm::devices::persist::Persist;
use vmm::devices::serial::Serial;
use vmm::devices::virtio::driver::memory_image;
use vmm::devices::virtio::rng::Rng;
use vmm::devices::virtio::scsi::Scsi;
use vmm::memory::{GuestRam, Layout, MIB};
use vmm::snapshot::format::{FrameReader, read_header_bytes};
use vmm::snapshot::{Header, cpu_compat, restore};
use vmm_sys_util::eventfd::EventFd;

struct Target {
    ram: GuestRam,
    serial: Serial,
    cmos: Cmos,
    fw_cfg: FwCfg,
    pm: Pm1,
    scsi: Scsi,
    rng: Rng,
    host: Vec<kvm_cpuid_entry2>,
}

fn target() -> Target {
    let ram = GuestRam::new(Layout::new(8 * MIB), "fuzz").expect("guest memory");
    let irq = || EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
    let console: Arc<Console> = Console::new(&Default::default()).expect("console");
    let entry = |function, ebx, ecx, edx| kvm_cpuid_entry2 {
        function,
        eax: 0xd,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    Target {
        serial: Serial::new(irq(), console),
        cmos: Cmos::new(&ram.layout, 1, irq()),
        fw_cfg: FwCfg::new(ram.mem.clone(), &ram.layout, 1),
        pm: Pm1::new(Box::new(|| {})),
        // Four blocks of 2048 bytes.
        scsi: Scsi::new(memory_image(&[0u8; 8192]), "fuzz"),
        rng: Rng::new(),
        // "GenuineIntel" with a few features.
        host: vec![
            entry(0, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            entry(1, 0, 0x8000_0201, 0x0789_fbff),
        ],
        ram,
    }
}

thread_local! {
    static TARGET: std::cell::RefCell<Target> = std::cell::RefCell::new(target());
}

fuzz_target!(|data: &[u8]| {
    TARGET.with(|t| {
        let t = &mut *t.borrow_mut();
        let mut input = data;
        if let Ok((raw, payload)) = read_header_bytes(&mut input)
            && let Ok(header) = Header::decode(&payload)
        {
            let guest: Vec<kvm_cpuid_entry2> = header.cpuid.iter().map(|e| e.0).collect();
            let _ = cpu_compat::check(&guest, &t.host);
            let _ = header.layout();
            if let Ok((reader, _)) = FrameReader::resume(&raw, input) {
                let _ = restore::read_stream(reader, &header, &t.ram);
            }
        }
        let _ = t.serial.restore(data);
        let _ = t.cmos.restore(data);
        let _ = t.fw_cfg.restore(data);
        let _ = t.pm.restore(data);
        let _ = t.scsi.restore(data);
        let _ = t.rng.restore(data);
    });
});
