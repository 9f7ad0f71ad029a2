//! The cloud-init data vmd gives a VM's guest (docs/cloud-init.md): the
//! user-data and SSH key a start request carries or vm.conf names, and
//! the read-only disk that carries them as cloud-init's NoCloud volume.

use std::os::fd::OwnedFd;
use std::path::Path;

use cidata::Seed;
use proto::ErrorCode;
use proto::control::{DiskFormat, StartRequest};
use proto::error::{Failed, error_text};
use proto::vmchannel::LaunchDisk;

use crate::open_as::OpenAs;
use crate::params::{CloudInitFiles, NicParams};
use crate::vmproc::LaunchDescriptors;

/// The name the volume goes by in messages and as its disk's serial.
pub const DISK_NAME: &str = "cidata";

/// What a start request gives the guest, checked again: vmctl checked the
/// files it read, but any client may send a request. `None` when it
/// gives nothing.
pub fn from_request(request: &StartRequest) -> Result<Option<Seed>, Failed> {
    if request.user_data.is_none() && request.ssh_key.is_none() {
        return Ok(None);
    }
    let invalid =
        |what: &str, cause: String| Failed::because(ErrorCode::EINVAL, format!("{what}: {cause}"));
    let user_data = request
        .user_data
        .clone()
        .map(|text| cidata::check_user_data(text.into_bytes()))
        .transpose()
        .map_err(|cause| invalid("user data", cause))?;
    let ssh_key = request
        .ssh_key
        .clone()
        .map(|text| cidata::check_ssh_key(text.into_bytes()))
        .transpose()
        .map_err(|cause| invalid("ssh key", cause))?;
    Seed::new(user_data, ssh_key)
        .map(Some)
        .map_err(|cause| invalid("user data", cause))
}

/// Reads vm.conf's files as root (root chose them), each without
/// blocking, a regular file, and no larger than its bound.
pub fn read_files(files: &CloudInitFiles) -> Result<Seed, Failed> {
    let read =
        |path: &str, what: &str, limit: usize, check: fn(Vec<u8>) -> Result<String, String>| {
            let fail = |code, cause: String| {
                tracing::warn!("{what} {path}: {cause}");
                Failed::because(code, format!("{what} {path}: {cause}"))
            };
            // A file of the wrong kind is refused without an errno.
            let code = |e: &std::io::Error| match e.raw_os_error() {
                Some(_) => ErrorCode::from_io(e),
                None => ErrorCode::EINVAL,
            };
            let mut file = OpenAs::Root
                .open(Path::new(path), false, disk::Expect::RegularFile)
                .map_err(|e| fail(code(&e), error_text(&e)))?;
            let bytes = cidata::read_bounded(&mut file, limit)
                .map_err(|e| fail(code(&e), error_text(&e)))?
                .ok_or_else(|| fail(ErrorCode::EINVAL, format!("larger than {limit} bytes")))?;
            check(bytes).map_err(|cause| fail(ErrorCode::EINVAL, cause))
        };
    let user_data = files
        .user_data
        .as_deref()
        .map(|path| {
            read(
                path,
                "user data",
                cidata::MAX_USER_DATA,
                cidata::check_user_data,
            )
        })
        .transpose()?;
    let ssh_key = files
        .ssh_key
        .as_deref()
        .map(|path| read(path, "ssh key", cidata::MAX_SSH_KEY, cidata::check_ssh_key))
        .transpose()?;
    Seed::new(user_data, ssh_key).map_err(|cause| {
        let path = files.user_data.as_deref().unwrap_or_default();
        Failed::because(ErrorCode::EINVAL, format!("user data {path}: {cause}"))
    })
}

/// The VM's NoCloud volume as one more disk, raw and read-only, after its
/// own: built in memory and handed over as a sealed memfd, so that it
/// takes no file on the host and no slot the user's disks or CD-ROM use.
pub fn launch_disk(
    name: &str,
    seed: &Seed,
    nics: &[NicParams],
    fds: &mut LaunchDescriptors,
) -> Result<LaunchDisk, Failed> {
    let nics: Vec<cidata::Nic> = nics
        .iter()
        .map(|nic| cidata::Nic {
            mac: nic.mac,
            local: nic.iface.local,
        })
        .collect();
    let memfd = cidata::build(name, seed, &nics)
        .and_then(|image| cidata::sealed_memfd(&image))
        .map_err(|e| {
            tracing::warn!("{name}: cannot build its cloud-init volume: {e}");
            Failed::because(
                ErrorCode::from_io(&e),
                format!("cannot build the cloud-init volume: {e}"),
            )
        })?;
    Ok(LaunchDisk {
        path: DISK_NAME.to_string(),
        format: DiskFormat::Raw,
        fds: vec![fds.push(OwnedFd::from(memfd))],
        read_only: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@host";

    #[test]
    fn requests_are_checked_again() {
        assert_eq!(from_request(&StartRequest::default()), Ok(None));
        let request = StartRequest {
            user_data: Some("#cloud-config\n".into()),
            ssh_key: Some(format!("{KEY}\n")),
            ..StartRequest::default()
        };
        assert_eq!(
            from_request(&request),
            Ok(Some(Seed {
                user_data: Some("#cloud-config\n".into()),
                ssh_key: Some(KEY.into()),
            }))
        );
        let bad = |user_data: Option<&str>, ssh_key: Option<&str>| {
            from_request(&StartRequest {
                user_data: user_data.map(String::from),
                ssh_key: ssh_key.map(String::from),
                ..StartRequest::default()
            })
            .unwrap_err()
        };
        assert_eq!(
            bad(Some(&"#".repeat(cidata::MAX_USER_DATA + 1)), None),
            Failed::because(ErrorCode::EINVAL, "user data: larger than 65536 bytes")
        );
        assert_eq!(
            bad(None, Some("hello")),
            Failed::because(
                ErrorCode::EINVAL,
                format!(
                    "ssh key: {}",
                    cidata::check_ssh_key(b"hello".to_vec()).unwrap_err()
                )
            )
        );
        assert_eq!(
            bad(Some("MIME-Version: 1.0\n"), Some(KEY)),
            Failed::because(
                ErrorCode::EINVAL,
                format!("user data: {}", cidata::MIME_WITH_KEY)
            )
        );
    }

    #[test]
    fn files_are_read_bounded_and_checked() {
        let dir = std::env::temp_dir().join(format!("vmd-cloud-init-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
        std::fs::write(path("user-data"), "#cloud-config\n").unwrap();
        std::fs::write(path("key.pub"), format!("{KEY}\n")).unwrap();
        std::fs::write(path("big"), vec![b'#'; cidata::MAX_USER_DATA + 1]).unwrap();
        let files = |user_data: Option<String>, ssh_key: Option<String>| CloudInitFiles {
            user_data,
            ssh_key,
        };
        assert_eq!(
            read_files(&files(Some(path("user-data")), Some(path("key.pub")))),
            Ok(Seed {
                user_data: Some("#cloud-config\n".into()),
                ssh_key: Some(KEY.into()),
            })
        );
        assert_eq!(
            read_files(&files(Some(path("big")), None)),
            Err(Failed::because(
                ErrorCode::EINVAL,
                format!("user data {}: larger than 65536 bytes", path("big"))
            ))
        );
        assert_eq!(
            read_files(&files(None, Some(path("missing")))),
            Err(Failed::because(
                ErrorCode::ENOENT,
                format!("ssh key {}: No such file or directory", path("missing"))
            ))
        );
        let dir_path = dir.to_str().unwrap().to_string();
        assert_eq!(
            read_files(&files(Some(dir_path.clone()), None)),
            Err(Failed::because(
                ErrorCode::EINVAL,
                format!("user data {dir_path}: a directory, not a regular file")
            ))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
