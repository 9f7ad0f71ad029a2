//! Tap devices (docs/networking.md, "What vmd makes"): `/dev/net/tun` in tap mode, raw
//! Ethernet frames without the packet-information prefix, each preceded
//! by a virtio-net header so checksum and segmentation offloads pass
//! between guest and host untouched.
//!
//! The tap is never made persistent: it lives as long as a descriptor
//! does, so a VM process that dies, however it dies, takes its taps with
//! it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Linux interface names are at most 15 bytes.
pub const IFNAMSIZ: usize = 16;
/// The virtio-net header on the tap: `virtio_net_hdr_v1`, 12 bytes, the
/// layout every modern (VERSION_1) driver uses.
pub const VNET_HDR_LEN: usize = 12;

/// Offloads the tap may hand the reader (`TUNSETOFFLOAD`): frames with a
/// checksum still to compute, or segments larger than the MTU.
pub mod offload {
    pub const CSUM: u32 = libc::TUN_F_CSUM;
    pub const TSO4: u32 = libc::TUN_F_TSO4;
    pub const TSO6: u32 = libc::TUN_F_TSO6;
    pub const TSO_ECN: u32 = libc::TUN_F_TSO_ECN;
}

#[repr(C)]
struct IfreqFlags {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[repr(C)]
struct IfreqHwaddr {
    name: [u8; IFNAMSIZ],
    addr: libc::sockaddr,
    _pad: [u8; 8],
}

nix::ioctl_write_ptr_bad!(tunsetiff, libc::TUNSETIFF, IfreqFlags);
nix::ioctl_read_bad!(tungetiff, libc::TUNGETIFF, IfreqFlags);
nix::ioctl_write_int_bad!(tunsetoffload, libc::TUNSETOFFLOAD);
nix::ioctl_write_ptr_bad!(tunsetvnethdrsz, libc::TUNSETVNETHDRSZ, libc::c_int);
nix::ioctl_read_bad!(siocgifhwaddr, libc::SIOCGIFHWADDR, IfreqHwaddr);

/// A tap device and the descriptor that keeps it alive.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    /// It existed before (an administrator's persistent tap): it outlives
    /// us and must not be deleted.
    pre_existing: bool,
}

fn name_bytes(name: &str) -> io::Result<[u8; IFNAMSIZ]> {
    let mut bytes = [0u8; IFNAMSIZ];
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    Ok(bytes)
}

fn name_from(bytes: &[u8; IFNAMSIZ]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl Tap {
    /// Creates (or attaches to) the tap `name`, or the first free `tapN`
    /// when `name` is `None`. The descriptor is non-blocking and carries
    /// 12-byte virtio-net headers; no offloads are on until
    /// [`set_offloads`] asks for them. A named tap another process holds
    /// fails with `EBUSY`; a name taken by a device that is no tap fails
    /// with `EINVAL`.
    pub fn create(name: Option<&str>) -> io::Result<Tap> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfreqFlags {
            name: name_bytes(name.unwrap_or("tap%d"))?,
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _pad: [0; 22],
        };
        // SAFETY: `req` is a valid ifreq the ioctl reads.
        unsafe { tunsetiff(file.as_raw_fd(), &req) }.map_err(io::Error::from)?;
        // SAFETY: the ioctl fills `req` with the device's name and flags.
        unsafe { tungetiff(file.as_raw_fd(), &mut req) }.map_err(io::Error::from)?;
        let pre_existing = i32::from(req.flags) & libc::IFF_PERSIST != 0;
        set_vnet_header_len(file.as_fd(), VNET_HDR_LEN)?;
        Ok(Tap {
            file,
            name: name_from(&req.name),
            pre_existing,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tap was there before [`Tap::create`] (a persistent tap), so
    /// whoever made it removes it.
    pub fn pre_existing(&self) -> bool {
        self.pre_existing
    }

    /// The host side's own MAC address (the responder's "host MAC").
    pub fn mac(&self) -> io::Result<[u8; 6]> {
        mac_of(self.file.as_fd())
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Hands the descriptor over (to be sent to the VM process).
    pub fn into_fd(self) -> OwnedFd {
        self.file.into()
    }
}

/// The MAC address of the tap behind `fd`.
pub fn mac_of(fd: BorrowedFd<'_>) -> io::Result<[u8; 6]> {
    // SAFETY: an all-zero ifreq is valid.
    let mut req: IfreqHwaddr = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl fills `req`.
    unsafe { siocgifhwaddr(fd.as_raw_fd(), &mut req) }.map_err(io::Error::from)?;
    let mut mac = [0u8; 6];
    for (out, &b) in mac.iter_mut().zip(req.addr.sa_data.iter()) {
        *out = b as u8;
    }
    Ok(mac)
}

/// Sets the length of the virtio-net header on every frame.
pub fn set_vnet_header_len(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let len = len as libc::c_int;
    // SAFETY: the ioctl reads one int.
    unsafe { tunsetvnethdrsz(fd.as_raw_fd(), &len) }.map_err(io::Error::from)?;
    Ok(())
}

/// Lets the tap pass frames with the offloads of `flags` ([`offload`]):
/// the ones the guest driver said it can take.
pub fn set_offloads(fd: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    // SAFETY: the ioctl takes its argument by value.
    unsafe { tunsetoffload(fd.as_raw_fd(), flags as libc::c_int) }.map_err(io::Error::from)?;
    Ok(())
}
