//! Message framing over `AF_UNIX` `SOCK_SEQPACKET` sockets.
//!
//! One packet carries one message: a postcard-encoded value, plus any file
//! descriptors as `SCM_RIGHTS`. Seqpacket keeps message boundaries, so a
//! descriptor can never be attached to the wrong message and a truncated or
//! oversized packet is detected (`MSG_TRUNC`) instead of desynchronising the
//! stream. This plays the role imsg(3) plays in OpenBSD's vmd.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest message accepted on any channel. Console replays and the VM
/// description are the largest regular messages and stay far below it.
pub const MAX_MESSAGE: usize = 128 * 1024;

/// Most descriptors one message may carry. A VM launch is the largest:
/// /dev/kvm, the pty pair, the boot image and initrd, four disks of up to
/// four chained images each, four taps and a CD-ROM.
pub const MAX_FDS: usize = 32;

/// A decoded message and the descriptors that came with it.
#[derive(Debug)]
pub struct Received<T> {
    pub message: T,
    pub fds: Vec<OwnedFd>,
}

/// Encodes `message` and sends it, with `fds`, as one packet.
pub fn send<T: Serialize>(sock: BorrowedFd<'_>, message: &T, fds: &[RawFd]) -> io::Result<()> {
    let bytes =
        postcard::to_stdvec(message).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    send_bytes(sock, &bytes, fds)
}

/// Sends an already encoded packet.
pub fn send_bytes(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if bytes.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message too large",
        ));
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(_) => return Err(io::Error::new(io::ErrorKind::WriteZero, "short send")),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one packet. `Ok(None)` means the peer closed the connection.
/// A packet that does not decode, was truncated, or carries more descriptors
/// than allowed is an `InvalidData` error; the caller closes that peer.
pub fn recv<T: DeserializeOwned>(sock: BorrowedFd<'_>) -> io::Result<Option<Received<T>>> {
    let Some((bytes, fds)) = recv_bytes(sock)? else {
        return Ok(None);
    };
    let message =
        postcard::from_bytes(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some(Received { message, fds }))
}

/// Receives one raw packet and its descriptors.
pub fn recv_bytes(sock: BorrowedFd<'_>) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these descriptors in our
                // table for us; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let flags = msg.flags;
        let len = msg.bytes;
        if flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many descriptors in message",
            ));
        }
        if flags.contains(MsgFlags::MSG_TRUNC) || len > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message too large",
            ));
        }
        if len == 0 && fds.is_empty() {
            return Ok(None);
        }
        buf.truncate(len);
        return Ok(Some((buf, fds)));
    }
}

/// A connected seqpacket socket with typed send and receive.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    pub fn new(fd: OwnedFd) -> Self {
        Channel { fd }
    }

    /// A connected pair, for a parent and the child it is about to spawn.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel::new(a), Channel::new(b)))
    }

    pub fn send<T: Serialize>(&self, message: &T) -> io::Result<()> {
        send(self.fd.as_fd(), message, &[])
    }

    pub fn send_with_fds<T: Serialize>(&self, message: &T, fds: &[RawFd]) -> io::Result<()> {
        send(self.fd.as_fd(), message, fds)
    }

    pub fn recv<T: DeserializeOwned>(&self) -> io::Result<Option<Received<T>>> {
        recv(self.fd.as_fd())
    }

    pub fn try_clone(&self) -> io::Result<Channel> {
        Ok(Channel::new(self.fd.try_clone()?))
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Hello(String),
        Number(u64),
    }

    #[test]
    fn round_trip_with_descriptor() {
        let (a, b) = Channel::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        a.send_with_fds(&Msg::Hello("x".into()), &[file.as_raw_fd()])
            .unwrap();
        a.send(&Msg::Number(7)).unwrap();
        let got: Received<Msg> = b.recv().unwrap().unwrap();
        assert_eq!(got.message, Msg::Hello("x".into()));
        assert_eq!(got.fds.len(), 1);
        let got: Received<Msg> = b.recv().unwrap().unwrap();
        assert_eq!(got.message, Msg::Number(7));
        assert!(got.fds.is_empty());
        drop(a);
        assert!(b.recv::<Msg>().unwrap().is_none());
    }

    #[test]
    fn garbage_is_invalid_data() {
        let (a, b) = Channel::pair().unwrap();
        send_bytes(a.as_fd(), &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], &[]).unwrap();
        let err = b.recv::<Msg>().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn oversized_is_refused() {
        let (a, _b) = Channel::pair().unwrap();
        let big = vec![0u8; MAX_MESSAGE + 1];
        assert!(send_bytes(a.as_fd(), &big, &[]).is_err());
    }
}
