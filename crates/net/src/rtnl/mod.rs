//! Route netlink through `neli`: one blocking socket, one request at a
//! time, every request acknowledged, so a call returns only once the
//! kernel has done it (or said why not, as an `io::Error` with its errno).
//!
//! [`link`] has the link operations (look-up, alias, state, master,
//! group, creation and deletion of bridges and VRFs); [`addr`] the
//! address operations.

pub mod addr;
pub mod link;

use std::cell::Cell;
use std::fmt::Debug;
use std::io::{self, Cursor};

use neli::consts::nl::{NlType, NlmF, Nlmsg};
use neli::consts::socket::NlFamily;
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::Buffer;
use neli::utils::Groups;
use neli::{FromBytesWithInput, Size, ToBytes};

pub use addr::Address;
pub use link::Link;

/// A route netlink socket in the network namespace of the thread that
/// opened it.
pub struct Rtnl {
    socket: NlSocketHandle,
    seq: Cell<u32>,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        let socket = NlSocketHandle::connect(NlFamily::Route, None, Groups::empty())
            .map_err(|e| io::Error::other(format!("netlink socket: {e}")))?;
        Ok(Rtnl {
            socket,
            seq: Cell::new(1),
        })
    }

    /// Sends one request and collects what comes back until the kernel's
    /// acknowledgement (or the end of a dump). A negative acknowledgement
    /// becomes the error it carries.
    fn request<T, P, R>(&self, kind: T, flags: NlmF, payload: P) -> io::Result<Vec<R>>
    where
        T: NlType + Debug + Copy,
        P: Size + ToBytes + Debug,
        R: Size + FromBytesWithInput<Input = usize> + Debug,
    {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let msg = NlmsghdrBuilder::default()
            .nl_type(kind)
            .nl_flags(flags | NlmF::REQUEST | NlmF::ACK)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(payload))
            .build()
            .map_err(other)?;
        self.socket.send(&msg).map_err(other)?;
        let mut replies = Vec::new();
        loop {
            // Raw payloads: an error echoes the request, whatever its type.
            let (messages, _) = self.socket.recv::<u16, Buffer>().map_err(other)?;
            for message in messages {
                let message: Nlmsghdr<u16, Buffer> = message.map_err(other)?;
                if *message.nl_seq() != seq {
                    continue; // a late answer to an earlier request
                }
                let done = *message.nl_type() == u16::from(Nlmsg::Done);
                match message.nl_payload() {
                    NlPayload::Err(e) => {
                        return Err(io::Error::from_raw_os_error(-*e.error()));
                    }
                    NlPayload::Ack(_) | NlPayload::DumpExtAck(_) => return Ok(replies),
                    _ if done => return Ok(replies),
                    NlPayload::Payload(raw) => {
                        let bytes = raw.as_ref();
                        let parsed = R::from_bytes_with_input(&mut Cursor::new(bytes), bytes.len())
                            .map_err(other)?;
                        replies.push(parsed);
                    }
                    NlPayload::Empty => {}
                }
            }
        }
    }
}
