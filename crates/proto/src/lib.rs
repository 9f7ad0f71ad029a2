//! The messages vmd's programs exchange, and how they travel.
//!
//! * [`control`]: vmctl ⇄ vmd over the control socket.
//! * [`vmchannel`]: vmd ⇄ one VM process over its private socketpair.
//! * [`frame`]: one message per `SOCK_SEQPACKET` packet, descriptors as
//!   `SCM_RIGHTS`.

pub mod client;
pub mod control;
pub mod error;
pub mod frame;
pub mod names;
pub mod vmchannel;

pub use control::{Request, Response, VmRef};
pub use error::ErrorCode;
