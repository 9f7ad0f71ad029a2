//! virtio-scsi with one read-only CD-ROM (docs/machine.md, "virtio devices"): the
//! VM's ISO image as an MMC drive at target 0, LUN 0.
//!
//! * [`device`]: identity, configuration space, activation.
//! * [`request`]: the virtio-scsi framing of the three queues (command
//!   requests, task management and asynchronous notification on the
//!   control queue): the code that reads a chain's header bytes.
//! * [`cdb`]: the command descriptor block: every SCSI command byte the
//!   guest sends is read there (the fuzz target).
//! * [`unit`](mod@unit): the CD-ROM logical unit: its state (tray, removal
//!   prevention, media events) and the outcome of each command.
//! * [`spc`] and [`mmc`]: the data the primary (SPC-4) and multimedia
//!   (MMC-6) commands return.
//! * [`sense`]: sense data.
//! * [`handler`]: the I/O thread's side.
//! * [`persist`]: the state a send carries.
//! * [`driver`]: a driver without a guest, for tests and fuzzing.
//!
//! Only target 0, LUN 0 exists, and the configuration says so. A command
//! for any other address is answered BAD_TARGET, as vmd does (docs/machine.md,
//! "virtio devices"); task management for another LUN of target 0 INCORRECT_LUN.
//! What the unit does not implement ends in CHECK CONDITION with ILLEGAL
//! REQUEST sense (INVALID COMMAND OPERATION CODE, or INVALID FIELD IN CDB
//! pointing at the field), where vmd completes it without data.

pub mod cdb;
pub mod device;
// Test drivers: the crate's own tests, its integration tests, examples and
// fuzz targets enable `test-drivers`; the production library leaves them out.
#[cfg(any(test, feature = "test-drivers"))]
pub mod driver;
pub mod handler;
pub mod mmc;
pub mod persist;
pub mod request;
pub mod sense;
pub mod spc;
pub mod unit;

pub use device::Scsi;

/// The virtio device type of a SCSI host.
pub const DEVICE_TYPE: u16 = 8;
/// vmd's queue size for vioscsi; drivers may choose up to 1024.
pub const QUEUE_SIZE: u16 = 128;
/// The queues, in the order the spec gives them.
pub const CONTROL_QUEUE: usize = 0;
pub const EVENT_QUEUE: usize = 1;
pub const REQUEST_QUEUE: usize = 2;
/// Bytes per logical block of a CD (MMC-6 §4.2.2, mode 1 user data).
pub const BLOCK_SIZE: u64 = 2048;
/// Data buffers per request the driver may use (as for the block
/// device: the queue size minus the two headers).
pub const SEG_MAX: u32 = 126;
/// Most blocks one READ may transfer (32 MiB): a bound on the work one
/// request makes. Larger transfer lengths are refused with INVALID FIELD
/// IN CDB, as SBC-3 asks of a transfer above the maximum.
pub const MAX_TRANSFER_BLOCKS: u32 = 16384;

/// PCI class 01/00 (mass storage, SCSI) and subsystem 0008 (docs/machine.md, "PCI devices").
pub fn pci_identity() -> crate::devices::pci::Identity {
    crate::devices::virtio::pci::identity(DEVICE_TYPE, 0x01, 0x00, 0x0008)
}
