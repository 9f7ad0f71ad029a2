//! virtio-blk (docs/machine.md, "virtio devices", with the features this project
//! adds): a disk image from the `disk` crate as a block
//! device.
//!
//! * [`device`]: identity, features, configuration space, activation.
//! * [`request`]: parsing a descriptor chain into a request: the only code
//!   that reads guest-controlled bytes, and the fuzz target.
//! * [`handler`]: the I/O thread's side: runs requests on the backend and
//!   writes the status.
//! * [`driver`]: a driver without a guest, for tests, benchmark and fuzzing.

pub mod device;
// Test drivers: the crate's own tests, its integration tests, examples and
// fuzz targets enable `test-drivers`; the production library leaves them out.
#[cfg(any(test, feature = "test-drivers"))]
pub mod driver;
pub mod handler;
mod persist;
pub mod request;

pub use device::Blk;

/// Bytes per sector in every request.
pub const SECTOR_SIZE: u64 = 512;
/// The largest queue a driver may choose. 256 rather than vmd's 128: a
/// chain may not be longer than the queue, even through an indirect table
/// (virtio 1.x, 2.7.5.3.1), so the queue size bounds [`SEG_MAX`].
pub const QUEUE_SIZE: u16 = 256;
/// Data buffers per request: the queue size minus header and status.
/// Linux sends a buffer per 4 KiB page it cannot merge, so a 1 MiB direct
/// read or write of scattered pages (256 of them) takes two requests with
/// 254, where 126 took three and cost a third more exits and completions.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Bytes in one data buffer. Linux makes this its largest segment; its
/// segments are pages or runs of contiguous pages, far below 4 MiB, so
/// the limit only bounds what one buffer may ask of the backend.
pub const SIZE_MAX: u32 = 4 << 20;
/// Ranges per discard or write-zeroes request, and sectors per range.
pub const MAX_RANGES: u32 = 32;
pub const MAX_RANGE_SECTORS: u32 = 1 << 22;
/// The 20-byte serial number answered to GET_ID.
pub const ID_BYTES: usize = 20;

/// PCI class 01/00 (mass storage, SCSI) and subsystem 0002 (docs/machine.md, "PCI devices").
pub fn pci_identity() -> crate::devices::pci::Identity {
    crate::devices::virtio::pci::identity(DEVICE_TYPE, 0x01, 0x00, 0x0002)
}

/// The virtio device type of a block device.
pub const DEVICE_TYPE: u16 = 2;
