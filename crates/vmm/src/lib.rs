//! One virtual machine on KVM: guest memory, vCPU threads, the port and
//! MMIO buses, the devices, and firmware boot. A VM process (see
//! [`process`]) builds one of these from what vmd sends it.

pub mod acpi;
pub mod boot;
pub mod bus;
pub mod console;
pub mod cpuid;
pub mod devices;
pub mod irq_routing;
pub mod lifecycle;
pub mod memory;
pub mod mptable;
pub mod platform;
pub mod process;
pub mod sandbox;
pub mod smbios;
pub mod snapshot;
pub mod vcpu;
pub mod vm;
