//! The real-guest harness: a stock Linux kernel (Debian's cloud kernel)
//! runs under vmd and its own drivers use every device — virtio-blk on
//! raw and qcow2, virtio-scsi CD, virtio-rng, virtio-net with DHCP, a
//! switch, SMP, kvm-clock, ACPI power button, reboot, send and receive.
//! docs/real-guests.md says how it runs and how to read its report.
//!
//! * [`scenarios`] runs the scenarios against a vmd of its own and prints
//!   each verdict as a [`report`] line; [`guest`] and [`console`] are how
//!   it starts VMs and types into their serial consoles.
//! * On a host with hardware KVM that runs right there; elsewhere
//!   [`outer`] boots it inside QEMU's emulator, whose emulated SVM gives
//!   the outer guest a KVM that runs whole kernels.
//! * [`host_checks`] then reads back, on the host, what the guests wrote.

pub mod bench;
pub mod console;
pub mod guest;
pub mod host_checks;
pub mod outer;
pub mod report;
pub mod scenarios;
