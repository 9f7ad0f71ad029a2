//! The stream's framing (docs/send-stream.md): a preamble with the magic
//! and the version, then frames, each a four-letter tag, a length, the
//! payload and a CRC-32 over all three, in a fixed order ending with a
//! trailer whose checksum covers every frame's CRC.
//!
//! [`FrameWriter`] and [`FrameReader`] know nothing of what the payloads
//! mean; they check what can be checked without that: the magic, the
//! version, each frame's checksum and length limit, the trailer against
//! every frame before it, and that nothing follows it. The order of the
//! frames is the restorer's to check ([`super::restore`]).

use std::io::{self, IoSlice, Read, Write};

use super::error::StreamError;

/// The first bytes of every stream.
pub const MAGIC: [u8; 8] = *b"VMDSTATE";
/// The version this code writes and the only one it reads.
pub const VERSION: u32 = 2;
/// Magic, version and a flags word that must be zero.
pub const PREAMBLE_LEN: usize = 16;
/// Tag and length before a payload.
pub const FRAME_HEAD_LEN: usize = 8;

/// The kinds of frame, in the order a stream has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// The VM's description and the guest's CPUID; exactly one, first.
    Header,
    /// One per vCPU, in index order.
    Vcpu,
    /// The in-kernel interrupt controllers, PIT and clock; exactly one.
    Kvm,
    /// One per device, in the order the header lists them.
    Device,
    /// Runs of guest memory; zero pages are left out.
    Memory,
    /// Counts and the checksum chain; last.
    Trailer,
}

impl Tag {
    pub fn bytes(self) -> [u8; 4] {
        *match self {
            Tag::Header => b"HEAD",
            Tag::Vcpu => b"VCPU",
            Tag::Kvm => b"KVMS",
            Tag::Device => b"DEVC",
            Tag::Memory => b"MEMR",
            Tag::Trailer => b"TAIL",
        }
    }

    fn from_bytes(bytes: [u8; 4]) -> Option<Tag> {
        [
            Tag::Header,
            Tag::Vcpu,
            Tag::Kvm,
            Tag::Device,
            Tag::Memory,
            Tag::Trailer,
        ]
        .into_iter()
        .find(|t| t.bytes() == bytes)
    }

    /// The largest payload a frame of this kind may have. Device records
    /// are large when fw_cfg holds a kernel and initrd for the firmware.
    pub fn max_len(self) -> u32 {
        match self {
            Tag::Header | Tag::Vcpu => 1 << 20,
            Tag::Kvm => 64 << 10,
            Tag::Device => 1 << 30,
            Tag::Memory => MAX_MEMORY_FRAME,
            Tag::Trailer => TRAILER_LEN as u32,
        }
    }
}

/// Largest memory frame: bounds what a reader buffers for run headers and
/// what a corrupt length can make it wait for.
pub const MAX_MEMORY_FRAME: u32 = 64 << 20;
/// Frames before the trailer (u64), memory pages (u64), chain (u32).
pub const TRAILER_LEN: usize = 20;

fn preamble() -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&VERSION.to_le_bytes());
    p
}

/// Checks a preamble: the magic first (a file that is no stream at all is
/// corrupt), then the version.
pub fn check_preamble(p: &[u8; PREAMBLE_LEN]) -> Result<(), StreamError> {
    if p[..8] != MAGIC {
        return Err(StreamError::corrupt("not a vm state stream (bad magic)"));
    }
    let version = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
    if version != VERSION {
        return Err(StreamError::Version(version));
    }
    if p[12..16] != [0; 4] {
        return Err(StreamError::corrupt("unknown flags in the preamble"));
    }
    Ok(())
}

/// The running account both sides keep: frames so far and the checksum
/// over their CRCs, which the trailer must match.
#[derive(Debug, Clone)]
struct Chain {
    frames: u64,
    hasher: crc32fast::Hasher,
}

impl Chain {
    fn new() -> Chain {
        Chain {
            frames: 0,
            hasher: crc32fast::Hasher::new(),
        }
    }

    fn add(&mut self, crc: u32) {
        self.frames += 1;
        self.hasher.update(&crc.to_le_bytes());
    }

    fn value(&self) -> u32 {
        self.hasher.clone().finalize()
    }
}

fn trailer_payload(frames: u64, pages: u64, chain: u32) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..8].copy_from_slice(&frames.to_le_bytes());
    t[8..16].copy_from_slice(&pages.to_le_bytes());
    t[16..].copy_from_slice(&chain.to_le_bytes());
    t
}

/// Writes `parts` completely with as few system calls as the kernel
/// allows (a memory frame is one `writev` of the guest's own pages).
pub fn write_all_vectored(out: &mut impl Write, parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut parts = parts;
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        match out.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes a stream: the preamble at creation, then frames, then
/// [`FrameWriter::finish`].
pub struct FrameWriter<W: Write> {
    out: W,
    chain: Chain,
    pages: u64,
    bytes: u64,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(mut out: W) -> Result<FrameWriter<W>, StreamError> {
        out.write_all(&preamble())?;
        Ok(FrameWriter {
            out,
            chain: Chain::new(),
            pages: 0,
            bytes: PREAMBLE_LEN as u64,
        })
    }

    /// Writes one frame whose payload is the concatenation of `parts`.
    pub fn frame(&mut self, tag: Tag, parts: &[&[u8]]) -> Result<(), StreamError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len)
            .ok()
            .filter(|&l| l <= tag.max_len())
            .ok_or_else(|| StreamError::Save(format!("{tag:?} frame too large ({len} bytes)")))?;
        let mut head = [0u8; FRAME_HEAD_LEN];
        head[..4].copy_from_slice(&tag.bytes());
        head[4..].copy_from_slice(&len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        for part in parts {
            crc.update(part);
        }
        let crc = crc.finalize().to_le_bytes();
        let mut slices = Vec::with_capacity(parts.len() + 2);
        slices.push(IoSlice::new(&head));
        slices.extend(parts.iter().map(|p| IoSlice::new(p)));
        slices.push(IoSlice::new(&crc));
        write_all_vectored(&mut self.out, &mut slices)?;
        self.chain.add(u32::from_le_bytes(crc));
        self.bytes += (FRAME_HEAD_LEN + len as usize + 4) as u64;
        Ok(())
    }

    /// Counts guest pages written in memory frames, for the trailer.
    pub fn count_pages(&mut self, pages: u64) {
        self.pages += pages;
    }

    /// Writes the trailer; returns the stream's length in bytes.
    pub fn finish(mut self) -> Result<u64, StreamError> {
        let payload = trailer_payload(self.chain.frames, self.pages, self.chain.value());
        self.frame(Tag::Trailer, &[&payload])?;
        self.out.flush()?;
        Ok(self.bytes)
    }
}

/// One frame as read: its tag and payload, checksum verified.
#[derive(Debug)]
pub struct Frame {
    pub tag: Tag,
    pub payload: Vec<u8>,
}

/// Reads a stream frame by frame, checking each against its checksum and
/// the trailer against everything before it.
pub struct FrameReader<R: Read> {
    input: R,
    chain: Chain,
    pages: u64,
}

/// Reads exactly `buf.len()` bytes; an early end is a truncated stream.
pub fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), StreamError> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            StreamError::Truncated
        } else {
            StreamError::Io(e)
        }
    })
}

/// Reads a frame's tag and length and checks them.
fn read_frame_head(input: &mut impl Read) -> Result<(Tag, [u8; FRAME_HEAD_LEN]), StreamError> {
    let mut head = [0u8; FRAME_HEAD_LEN];
    read_exact(input, &mut head)?;
    let tag = Tag::from_bytes([head[0], head[1], head[2], head[3]]).ok_or_else(|| {
        StreamError::corrupt(format!(
            "unknown frame {:?}",
            String::from_utf8_lossy(&head[..4])
        ))
    })?;
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > tag.max_len() {
        return Err(StreamError::corrupt(format!(
            "{tag:?} frame of {len} bytes is too large"
        )));
    }
    Ok((tag, head))
}

fn check_crc(tag: Tag, crc: u32, input: &mut impl Read) -> Result<u32, StreamError> {
    let mut stored = [0u8; 4];
    read_exact(input, &mut stored)?;
    if u32::from_le_bytes(stored) != crc {
        return Err(StreamError::corrupt(format!(
            "{tag:?} frame checksum mismatch"
        )));
    }
    Ok(crc)
}

/// Reads the preamble and the header frame and nothing more: what vmd
/// looks at before it starts anything. Returns their bytes (for
/// [`FrameReader::resume`]) and the header's payload.
pub fn read_header_bytes(input: &mut impl Read) -> Result<(Vec<u8>, Vec<u8>), StreamError> {
    let mut preamble = [0u8; PREAMBLE_LEN];
    read_exact(input, &mut preamble)?;
    check_preamble(&preamble)?;
    let (tag, head) = read_frame_head(input)?;
    if tag != Tag::Header {
        return Err(StreamError::corrupt(
            "the stream does not start with its header",
        ));
    }
    let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; len];
    read_exact(input, &mut payload)?;
    let mut crc_bytes = [0u8; 4];
    read_exact(input, &mut crc_bytes)?;
    let mut raw = Vec::with_capacity(PREAMBLE_LEN + FRAME_HEAD_LEN + len + 4);
    raw.extend_from_slice(&preamble);
    raw.extend_from_slice(&head);
    raw.extend_from_slice(&payload);
    raw.extend_from_slice(&crc_bytes);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(&payload);
    check_crc(tag, crc.finalize(), &mut &crc_bytes[..])?;
    Ok((raw, payload))
}

impl<R: Read> FrameReader<R> {
    /// Continues after a preamble and header that were read (and checked)
    /// elsewhere: `raw` is what [`read_header_bytes`] returned, `input`
    /// the rest of the stream. Returns the reader and the header payload.
    pub fn resume(raw: &[u8], input: R) -> Result<(FrameReader<R>, Vec<u8>), StreamError> {
        let mut cursor = raw;
        let (again, payload) = read_header_bytes(&mut cursor)?;
        if !cursor.is_empty() || again.len() != raw.len() {
            return Err(StreamError::corrupt("bytes after the header"));
        }
        let crc_at = raw.len() - 4;
        let crc = u32::from_le_bytes([
            raw[crc_at],
            raw[crc_at + 1],
            raw[crc_at + 2],
            raw[crc_at + 3],
        ]);
        let mut chain = Chain::new();
        chain.add(crc);
        Ok((
            FrameReader {
                input,
                chain,
                pages: 0,
            },
            payload,
        ))
    }

    /// The next frame, read whole. Memory frames are better read with
    /// [`FrameReader::next_head`] and [`MemoryFrame`], straight into guest
    /// memory.
    pub fn next_frame(&mut self) -> Result<Frame, StreamError> {
        let (tag, head) = self.next_head()?;
        self.rest_of(tag, head)
    }

    /// Reads the payload and checksum of a frame whose head was read with
    /// [`FrameReader::next_head`].
    pub fn rest_of(&mut self, tag: Tag, head: [u8; FRAME_HEAD_LEN]) -> Result<Frame, StreamError> {
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let mut payload = Vec::new();
        // Grows with what arrives, so a corrupt length costs no more
        // memory than the stream really holds.
        let got = (&mut self.input)
            .take(len as u64)
            .read_to_end(&mut payload)
            .map_err(StreamError::Io)?;
        if got < len {
            return Err(StreamError::Truncated);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(&payload);
        let crc = check_crc(tag, crc.finalize(), &mut self.input)?;
        if tag == Tag::Trailer {
            self.check_trailer(&payload)?;
        }
        self.chain.add(crc);
        Ok(Frame { tag, payload })
    }

    /// The next frame's tag and its head bytes, without its payload.
    pub fn next_head(&mut self) -> Result<(Tag, [u8; FRAME_HEAD_LEN]), StreamError> {
        read_frame_head(&mut self.input)
    }

    /// Starts reading a memory frame's payload whose head was just read.
    pub fn memory_frame(&mut self, head: [u8; FRAME_HEAD_LEN]) -> MemoryFrame<'_, R> {
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        MemoryFrame {
            reader: self,
            left: len,
            crc,
        }
    }

    fn check_trailer(&self, payload: &[u8]) -> Result<(), StreamError> {
        let expected = trailer_payload(self.chain.frames, self.pages, self.chain.value());
        if payload != expected {
            return Err(StreamError::corrupt(
                "the trailer does not match the frames before it",
            ));
        }
        Ok(())
    }

    /// After the trailer: the stream must end here.
    pub fn expect_end(&mut self) -> Result<(), StreamError> {
        let mut byte = [0u8; 1];
        loop {
            match self.input.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(StreamError::corrupt("data after the trailer")),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StreamError::Io(e)),
            }
        }
    }
}

/// The payload of one memory frame being read: the caller takes run
/// headers and page data from it in order, then [`MemoryFrame::finish`]
/// checks its checksum.
pub struct MemoryFrame<'a, R: Read> {
    reader: &'a mut FrameReader<R>,
    left: u32,
    crc: crc32fast::Hasher,
}

impl<R: Read> MemoryFrame<'_, R> {
    /// Bytes of the payload not read yet.
    pub fn left(&self) -> u32 {
        self.left
    }

    /// Reads the next `buf.len()` payload bytes.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<(), StreamError> {
        let n = u32::try_from(buf.len())
            .ok()
            .filter(|&n| n <= self.left)
            .ok_or_else(|| StreamError::corrupt("memory run overruns its frame"))?;
        read_exact(&mut self.reader.input, buf)?;
        self.crc.update(buf);
        self.left -= n;
        Ok(())
    }

    /// Ends the frame: all of it read, `pages` pages in it, checksum
    /// right.
    pub fn finish(self, pages: u64) -> Result<(), StreamError> {
        if self.left != 0 {
            return Err(StreamError::corrupt("memory frame with a partial run"));
        }
        let crc = check_crc(Tag::Memory, self.crc.finalize(), &mut self.reader.input)?;
        self.reader.chain.add(crc);
        self.reader.pages += pages;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(frames: &[(Tag, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = FrameWriter::new(&mut out).unwrap();
        for (tag, payload) in frames {
            w.frame(*tag, &[payload]).unwrap();
        }
        w.finish().unwrap();
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(Tag, Vec<u8>)>, StreamError> {
        let mut input = bytes;
        let (raw, header) = read_header_bytes(&mut input)?;
        let (mut r, again) = FrameReader::resume(&raw, input)?;
        assert_eq!(header, again);
        let mut out = vec![(Tag::Header, header)];
        loop {
            let f = r.next_frame()?;
            let end = f.tag == Tag::Trailer;
            out.push((f.tag, f.payload));
            if end {
                r.expect_end()?;
                return Ok(out);
            }
        }
    }

    #[test]
    fn round_trip() {
        let s = stream(&[(Tag::Header, b"hdr"), (Tag::Device, b"dev")]);
        let frames = read_all(&s).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1], (Tag::Device, b"dev".to_vec()));
    }

    #[test]
    fn every_flipped_bit_and_every_cut_is_refused() {
        let s = stream(&[(Tag::Header, b"hdr"), (Tag::Device, b"device state")]);
        for i in 0..s.len() {
            for bit in 0..8 {
                let mut bad = s.clone();
                bad[i] ^= 1 << bit;
                assert!(read_all(&bad).is_err(), "bit {bit} of byte {i}");
            }
        }
        for cut in 0..s.len() {
            assert!(
                matches!(read_all(&s[..cut]), Err(StreamError::Truncated)),
                "cut at {cut}: {:?}",
                read_all(&s[..cut])
            );
        }
    }

    #[test]
    fn versions_magic_extra_and_dropped_frames() {
        let s = stream(&[(Tag::Header, b"hdr"), (Tag::Device, b"a")]);
        let mut v3 = s.clone();
        v3[8] = 3;
        assert!(matches!(read_all(&v3), Err(StreamError::Version(3))));
        let mut v1 = s.clone();
        v1[8] = 1;
        assert!(matches!(read_all(&v1), Err(StreamError::Version(1))));
        let mut other = s.clone();
        other[0] = b'X';
        assert!(matches!(read_all(&other), Err(StreamError::Corrupt(_))));
        let mut longer = s.clone();
        longer.push(0);
        assert!(matches!(read_all(&longer), Err(StreamError::Corrupt(_))));
        // A whole frame left out (its own checksum intact) breaks the chain.
        let header_end = PREAMBLE_LEN + FRAME_HEAD_LEN + 3 + 4;
        let device_end = header_end + FRAME_HEAD_LEN + 1 + 4;
        let mut dropped = s[..header_end].to_vec();
        dropped.extend_from_slice(&s[device_end..]);
        assert!(matches!(read_all(&dropped), Err(StreamError::Corrupt(_))));
    }
}
