//! Sending a file with XMODEM (`~X`): 128-byte blocks, with the 16-bit CRC
//! when the receiver asks for it (`C`) and the 8-bit sum when it sends NAK.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

const SOH: u8 = 0x01;
const EOT: u8 = 0x04;
const ACK: u8 = 0x06;
const NAK: u8 = 0x15;
const CAN: u8 = 0x18;
const CRC_REQUEST: u8 = b'C';
const PAD: u8 = 0x1a;
const BLOCK: usize = 128;

/// How long the receiver may take to start, and to answer one block.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub start: Duration,
    pub reply: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start: Duration::from_secs(60),
            reply: Duration::from_secs(10),
        }
    }
}

/// Attempts per block (and for the final EOT) before giving up.
const RETRIES: usize = 10;

#[derive(Debug)]
pub enum XmodemError {
    /// The receiver never asked for the transfer.
    NoReceiver,
    /// The receiver cancelled (CAN).
    Cancelled,
    /// A block (or the end) was not acknowledged after all retries.
    TooManyRetries,
    Io(io::Error),
}

impl std::fmt::Display for XmodemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XmodemError::NoReceiver => f.write_str("no response from receiver"),
            XmodemError::Cancelled => f.write_str("cancelled by receiver"),
            XmodemError::TooManyRetries => f.write_str("too many retries"),
            XmodemError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl From<io::Error> for XmodemError {
    fn from(err: io::Error) -> Self {
        XmodemError::Io(err)
    }
}

impl From<nix::Error> for XmodemError {
    fn from(err: nix::Error) -> Self {
        XmodemError::Io(err.into())
    }
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0).
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |mut crc, &byte| {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// The next byte from the line, or `None` once `deadline` passes.
fn read_byte(line: BorrowedFd<'_>, deadline: Instant) -> Result<Option<u8>, XmodemError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(line, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(err) => return Err(err.into()),
        }
        let mut byte = [0u8; 1];
        match nix::unistd::read(line, &mut byte) {
            Ok(1) => return Ok(Some(byte[0])),
            Ok(_) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// Writes all of `data`, waiting for room when the line is full.
fn write_all(line: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), XmodemError> {
    while !data.is_empty() {
        match nix::unistd::write(line, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EAGAIN) => {
                let mut fds = [PollFd::new(line, PollFlags::POLLOUT)];
                poll(&mut fds, PollTimeout::NONE)?;
            }
            Err(nix::Error::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// One framed block: SOH, number, its complement, data, check.
pub fn frame(number: u8, data: &[u8; BLOCK], crc: bool) -> Vec<u8> {
    let mut packet = vec![SOH, number, !number];
    packet.extend_from_slice(data);
    if crc {
        packet.extend_from_slice(&crc16(data).to_be_bytes());
    } else {
        packet.push(data.iter().fold(0u8, |sum, &b| sum.wrapping_add(b)));
    }
    packet
}

/// Sends `packet` until the receiver acknowledges it.
fn send_acknowledged(
    line: BorrowedFd<'_>,
    packet: &[u8],
    timeouts: Timeouts,
) -> Result<(), XmodemError> {
    for _ in 0..RETRIES {
        write_all(line, packet)?;
        let deadline = Instant::now() + timeouts.reply;
        loop {
            match read_byte(line, deadline)? {
                Some(ACK) => return Ok(()),
                Some(CAN) => return Err(XmodemError::Cancelled),
                Some(NAK) | None => break,
                Some(_) => continue,
            }
        }
    }
    Err(XmodemError::TooManyRetries)
}

/// Sends everything `source` yields; returns the number of blocks.
pub fn send(
    line: impl AsFd,
    mut source: impl Read,
    timeouts: Timeouts,
) -> Result<usize, XmodemError> {
    let line = line.as_fd();
    let deadline = Instant::now() + timeouts.start;
    let crc = loop {
        match read_byte(line, deadline)? {
            Some(CRC_REQUEST) => break true,
            Some(NAK) => break false,
            Some(CAN) => return Err(XmodemError::Cancelled),
            Some(_) => continue,
            None => return Err(XmodemError::NoReceiver),
        }
    };
    let mut blocks = 0usize;
    loop {
        let mut data = [PAD; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            match source.read(&mut data[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        let number = (blocks + 1) as u8;
        send_acknowledged(line, &frame(number, &data, crc), timeouts)?;
        blocks += 1;
    }
    send_acknowledged(line, &[EOT], timeouts)?;
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn crc_check_value() {
        // The standard check value of CRC-16/XMODEM.
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    #[test]
    fn frames() {
        let data = [b'a'; BLOCK];
        let packet = frame(1, &data, false);
        assert_eq!(&packet[..3], &[SOH, 1, 0xfe]);
        assert_eq!(packet.len(), 3 + BLOCK + 1);
        assert_eq!(packet[131], (97u32 * 128 % 256) as u8);
        let packet = frame(255, &data, true);
        assert_eq!(&packet[..3], &[SOH, 255, 0]);
        assert_eq!(&packet[131..], &crc16(&data).to_be_bytes());
    }

    /// A receiver on the other end of a socket: asks with `start`, NAKs
    /// the first copy of block 2 once, acknowledges everything else, and
    /// returns the blocks' data.
    fn receive(peer: UnixStream, start: u8) -> Vec<u8> {
        use std::io::Write;
        let mut peer = peer;
        peer.write_all(&[start]).unwrap();
        let crc = start == CRC_REQUEST;
        let mut received = Vec::new();
        let mut nak_sent = false;
        loop {
            let mut head = [0u8; 1];
            peer.read_exact(&mut head).unwrap();
            if head[0] == EOT {
                peer.write_all(&[ACK]).unwrap();
                return received;
            }
            assert_eq!(head[0], SOH);
            let mut rest = vec![0u8; 2 + BLOCK + if crc { 2 } else { 1 }];
            peer.read_exact(&mut rest).unwrap();
            assert_eq!(rest[0], !rest[1]);
            let data: [u8; BLOCK] = rest[2..2 + BLOCK].try_into().unwrap();
            assert_eq!(frame(rest[0], &data, crc)[1..], rest[..]);
            if rest[0] == 2 && !nak_sent {
                nak_sent = true;
                peer.write_all(&[NAK]).unwrap();
                continue;
            }
            received.extend_from_slice(&data);
            peer.write_all(&[ACK]).unwrap();
        }
    }

    fn transfer(start: u8, payload: &[u8]) -> (usize, Vec<u8>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let receiver = std::thread::spawn(move || receive(theirs, start));
        let line: OwnedFd = ours.into();
        let blocks = send(&line, payload, Timeouts::default()).unwrap();
        (blocks, receiver.join().unwrap())
    }

    #[test]
    fn sends_with_checksum_and_with_crc() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        for start in [NAK, CRC_REQUEST] {
            let (blocks, received) = transfer(start, &payload);
            assert_eq!(blocks, 3);
            assert_eq!(&received[..300], &payload[..]);
            assert!(received[300..].iter().all(|&b| b == PAD));
        }
    }

    #[test]
    fn empty_file_is_just_the_end() {
        let (blocks, received) = transfer(NAK, b"");
        assert_eq!(blocks, 0);
        assert!(received.is_empty());
    }

    #[test]
    fn silent_receiver_and_cancel() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let quick = Timeouts {
            start: Duration::from_millis(50),
            reply: Duration::from_millis(50),
        };
        let line: OwnedFd = ours.into();
        assert!(matches!(
            send(&line, &b"x"[..], quick),
            Err(XmodemError::NoReceiver)
        ));
        use std::io::Write;
        (&theirs).write_all(&[CAN]).unwrap();
        assert!(matches!(
            send(&line, &b"x"[..], quick),
            Err(XmodemError::Cancelled)
        ));
        // Started, then never acknowledged.
        (&theirs).write_all(&[NAK]).unwrap();
        assert!(matches!(
            send(&line, &b"x"[..], quick),
            Err(XmodemError::TooManyRetries)
        ));
    }
}
