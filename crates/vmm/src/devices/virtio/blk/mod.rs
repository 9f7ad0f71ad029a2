//! virtio-blk (vmd.md §8.7 "vioblk", with the features linux-mapping.md
//! §10 item 10 asks for): a disk image from the `disk` crate as a block
//! device.
//!
//! * [`device`]: identity, features, configuration space, activation.
//! * [`request`]: parsing a descriptor chain into a request: the only code
//!   that reads guest-controlled bytes, and the fuzz target.
//! * [`handler`]: the I/O thread's side: runs requests on the backend and
//!   writes the status.
//! * [`driver`]: a driver without a guest, for tests, benchmark and fuzzing.

pub mod device;
pub mod driver;
pub mod handler;
mod persist;
pub mod request;

pub use device::Blk;

/// Bytes per sector in every request.
pub const SECTOR_SIZE: u64 = 512;
/// vmd's queue size for vioblk; drivers may choose up to 1024.
pub const QUEUE_SIZE: u16 = 128;
/// Data buffers per request (vmd's value: the queue size minus header and
/// status).
pub const SEG_MAX: u32 = 126;
/// Bytes in one data buffer.
pub const SIZE_MAX: u32 = 4 << 20;
/// Ranges per discard or write-zeroes request, and sectors per range.
pub const MAX_RANGES: u32 = 32;
pub const MAX_RANGE_SECTORS: u32 = 1 << 22;
/// The 20-byte serial number answered to GET_ID.
pub const ID_BYTES: usize = 20;

/// PCI class 01/00 (mass storage, SCSI) and subsystem 0002 (vmd.md §8.5).
pub fn pci_identity() -> crate::devices::pci::Identity {
    crate::devices::virtio::pci::identity(DEVICE_TYPE, 0x01, 0x00, 0x0002)
}

/// The virtio device type of a block device.
pub const DEVICE_TYPE: u16 = 2;
