//! The descriptors a launch message carries, unpacked by role.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;

use proto::ErrorCode;
use proto::vmchannel::VmLaunch;

use super::error::LaunchError;

/// The descriptors that came with the launch message, by role.
pub struct LaunchFiles {
    pub kvm: OwnedFd,
    pub pty_master: File,
    pub pty_slave: File,
    pub boot_image: Option<File>,
    /// Per disk, the images of its chain, top first.
    pub disks: Vec<Vec<File>>,
    pub initrd: Option<File>,
    /// The default firmware, sent along with a kernel.
    pub firmware: Option<File>,
    /// A received VM's stream, after its header.
    pub incoming: Option<File>,
    /// Per NIC, its tap and option ROM.
    pub nics: Vec<NicFiles>,
    /// The ISO image of the CD-ROM.
    pub cdrom: Option<File>,
}

/// A NIC's descriptors.
pub struct NicFiles {
    pub tap: File,
    /// The PXE ROM the firmware runs for it (network boot only).
    pub boot_rom: Option<File>,
}

impl LaunchFiles {
    /// Picks the descriptors `launch.fds` names out of the message's list.
    pub fn take(launch: &VmLaunch, fds: Vec<OwnedFd>) -> Result<LaunchFiles, LaunchError> {
        let mut slots: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        let mut take = |index: u8, what: &str| {
            slots
                .get_mut(usize::from(index))
                .and_then(Option::take)
                .ok_or_else(|| LaunchError::new(ErrorCode::EINVAL, format!("launch lacks {what}")))
        };
        let kvm = take(launch.fds.kvm, "/dev/kvm")?;
        let pty_master = File::from(take(launch.fds.pty_master, "the pty master")?);
        let pty_slave = File::from(take(launch.fds.pty_slave, "the pty slave")?);
        let boot_image = match launch.fds.boot_image {
            Some(index) => Some(File::from(take(index, "the boot image")?)),
            None => None,
        };
        let mut disks = Vec::new();
        for disk in &launch.disks {
            let chain = disk
                .fds
                .iter()
                .map(|&index| take(index, "a disk image").map(File::from))
                .collect::<Result<Vec<_>, _>>()?;
            disks.push(chain);
        }
        let mut nics = Vec::new();
        for nic in &launch.nics {
            nics.push(NicFiles {
                tap: File::from(take(nic.tap, "a tap")?),
                boot_rom: match nic.boot_rom {
                    Some(index) => Some(File::from(take(index, "an option ROM")?)),
                    None => None,
                },
            });
        }
        let cdrom = launch
            .cdrom
            .map(|index| take(index, "the cd-rom image").map(File::from))
            .transpose()?;
        Ok(LaunchFiles {
            kvm,
            pty_master,
            pty_slave,
            boot_image,
            disks,
            initrd: match launch.fds.initrd {
                Some(index) => Some(File::from(take(index, "the initrd")?)),
                None => None,
            },
            firmware: match launch.fds.firmware {
                Some(index) => Some(File::from(take(index, "the firmware")?)),
                None => None,
            },
            incoming: match &launch.incoming {
                Some(incoming) => Some(File::from(take(incoming.stream, "the stream")?)),
                None => None,
            },
            nics,
            cdrom,
        })
    }
}

/// The whole of a boot image or an option ROM, refused when it is larger
/// than any this VMM loads.
pub(super) fn read_image(mut file: &File) -> Result<Vec<u8>, LaunchError> {
    let len = file
        .metadata()
        .map_err(|e| LaunchError::io("boot image", &e))?
        .len();
    if len > crate::boot::MAX_IMAGE {
        return Err(LaunchError::new(ErrorCode::EINVAL, "boot image too large"));
    }
    let mut image = Vec::with_capacity(len as usize);
    file.read_to_end(&mut image)
        .map_err(|e| LaunchError::io("boot image", &e))?;
    Ok(image)
}
