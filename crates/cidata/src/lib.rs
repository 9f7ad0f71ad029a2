//! The cloud-init data source vmd gives a VM (docs/cloud-init.md): the
//! checks of the user's user-data and SSH key files, which vmctl and vmd
//! share, and the small read-only volume that carries them to the guest.
//!
//! cloud-init's NoCloud data source looks for a vfat or iso9660 filesystem
//! labelled `CIDATA` and reads three files from it: `meta-data` (the
//! instance id and host name), `user-data` and `network-config`. The
//! volume is built in memory: [`build`] formats a FAT image into a buffer
//! and writes the files with the `fatfs` crate, and [`sealed_memfd`] puts
//! it into a sealed memfd that vmd hands to the VM process as a raw,
//! read-only disk.
//!
//! Why `fatfs` and not a FAT writer of our own: the image must be a
//! filesystem a Linux guest's kernel mounts and `fsck.fat` accepts (boot
//! sector, both FATs, the root directory with its volume-label entry, long
//! file names for `network-config`); a maintained library that formats
//! and writes FAT is less code to get wrong than one more hand-made
//! on-disk format. Nothing here parses anything a guest wrote: the guest
//! only reads the volume, and vmd never reads it back.
//!
//! The same VM gets the same bytes on every boot: the files carry no
//! timestamps (see [`Epoch`]) and the volume's serial number comes from
//! the instance id.

use std::fs::File;
use std::io::{self, Cursor, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

/// The label NoCloud looks for (blkid reports it for both the boot
/// sector and the root directory's label entry, which are both written).
pub const LABEL: &str = "CIDATA";

/// Largest user-data accepted, in bytes. Its contents travel inside one
/// control message, whose frame holds at most 128 KiB.
pub const MAX_USER_DATA: usize = 64 * 1024;

/// Largest SSH public key file accepted, in bytes (a 16384-bit RSA key
/// is under 3 KiB).
pub const MAX_SSH_KEY: usize = 8 * 1024;

/// Size of the volume: the largest user-data, the generated files and
/// FAT12's own structures fit with room to spare.
pub const VOLUME_SIZE: usize = 1 << 20;

/// The key types an `--ssh-key` file may start with (OpenSSH's public
/// key formats).
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// What the user gave for a VM's cloud-init, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seed {
    /// The user-data file as given.
    pub user_data: Option<String>,
    /// One OpenSSH public key line, without its line end.
    pub ssh_key: Option<String>,
}

impl Seed {
    /// A seed with something in it, after the combination check.
    pub fn new(user_data: Option<String>, ssh_key: Option<String>) -> Result<Seed, String> {
        if let (Some(data), Some(_)) = (&user_data, &ssh_key)
            && is_mime(data)
        {
            return Err(MIME_WITH_KEY.to_string());
        }
        Ok(Seed { user_data, ssh_key })
    }

    pub fn is_empty(&self) -> bool {
        self.user_data.is_none() && self.ssh_key.is_none()
    }
}

/// Why a MIME user-data and a key are refused together.
pub const MIME_WITH_KEY: &str =
    "a MIME multi-part archive cannot also take an SSH key: put the key in the archive";

/// Reads at most `limit` bytes of `file`; `Err(None)` when it holds more.
/// Reading stops one byte past the limit, so a huge file costs nothing.
pub fn read_bounded(file: &mut File, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() <= limit).then_some(bytes))
}

/// Checks a user-data file's contents: UTF-8 text (cloud-config, a
/// script, …) no larger than [`MAX_USER_DATA`]. The error is a cause, to
/// follow the file's name.
pub fn check_user_data(bytes: Vec<u8>) -> Result<String, String> {
    if bytes.len() > MAX_USER_DATA {
        return Err(format!("larger than {MAX_USER_DATA} bytes"));
    }
    if bytes.contains(&0) {
        return Err("not text: it holds a NUL byte".into());
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// Checks an SSH public key file: one line `type base64 [comment]` with a
/// known key type. Returns the line without its end.
pub fn check_ssh_key(bytes: Vec<u8>) -> Result<String, String> {
    if bytes.len() > MAX_SSH_KEY {
        return Err(format!("larger than {MAX_SSH_KEY} bytes"));
    }
    let text = String::from_utf8(bytes).map_err(|_| "not an SSH public key".to_string())?;
    if text.starts_with("-----BEGIN") {
        return Err("a private key: give the public key (the .pub file)".into());
    }
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let line = match lines.as_slice() {
        [] => return Err("empty: no SSH public key in it".into()),
        [line] => line.trim(),
        _ => return Err("more than one line: give one SSH public key".into()),
    };
    let mut words = line.split_ascii_whitespace();
    let kind = words.next().unwrap_or("");
    let blob = words.next().unwrap_or("");
    let base64 = |b: &str| {
        !b.is_empty()
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    };
    if !KEY_TYPES.contains(&kind) || !base64(blob) {
        return Err(format!(
            "not an SSH public key: expected a line like \"ssh-ed25519 AAAA... comment\" \
             with a key type of {}",
            KEY_TYPES.join(", ")
        ));
    }
    if line.chars().any(char::is_control) {
        return Err("not an SSH public key: it holds control characters".into());
    }
    Ok(line.to_string())
}

/// A user-data that is a MIME multi-part archive (cloud-init reads it by
/// its first header).
fn is_mime(user_data: &str) -> bool {
    let first = user_data.lines().next().unwrap_or("");
    first
        .get(..13)
        .is_some_and(|h| h.eq_ignore_ascii_case("content-type:"))
        || first
            .get(..13)
            .is_some_and(|h| h.eq_ignore_ascii_case("mime-version:"))
}

/// One network interface as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nic {
    pub mac: [u8; 6],
    /// A local interface (`-L`): vmd's own DHCP server answers on it. On
    /// other interfaces whether anything answers depends on the host's
    /// network, so the guest's boot does not wait for them.
    pub local: bool,
}

/// The instance id: `iid-vmd-` and a hash of the VM's name and what the
/// user gave. It stays the same across the VM's reboots and vmd's
/// restarts, so cloud-init provisions a disk once; it changes when the
/// name, the user-data or the key changes, so a disk started as another
/// VM, or with new data, is provisioned again. (A new disk has no
/// cloud-init state and is provisioned whatever the id.)
pub fn instance_id(name: &str, seed: &Seed) -> String {
    let mut hash = Fnv::new();
    hash.field(name.as_bytes());
    hash.optional(seed.user_data.as_deref());
    hash.optional(seed.ssh_key.as_deref());
    format!("iid-vmd-{:016x}", hash.0)
}

/// FNV-1a, 64 bits: stable across Rust releases and vmd versions, which
/// the standard library's hasher is not.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Length first, so that fields cannot run into each other.
    fn field(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }

    fn optional(&mut self, field: Option<&str>) {
        match field {
            None => self.bytes(&[0]),
            Some(text) => {
                self.bytes(&[1]);
                self.field(text.as_bytes());
            }
        }
    }
}

/// `meta-data`: the instance id and the host name (the VM's name). Both
/// are double-quoted: a VM name such as `1e3` or `yes` would otherwise
/// be read as a number or a boolean, and VM names hold only letters,
/// digits, `.`, `-` and `_`.
pub fn meta_data(name: &str, seed: &Seed) -> String {
    format!(
        "instance-id: \"{}\"\nlocal-hostname: \"{}\"\n",
        instance_id(name, seed),
        yaml_escape(name)
    )
}

/// `user-data`: the user's file as given; with only a key, a cloud-config
/// giving it to the image's default user; with both, a MIME multi-part
/// archive of the user's file and that cloud-config, which cloud-init
/// merges appending the key to any `ssh_authorized_keys` the user's file
/// has.
pub fn user_data(seed: &Seed) -> String {
    match (&seed.user_data, &seed.ssh_key) {
        (Some(data), None) => data.clone(),
        (None, Some(key)) => key_config(key, false),
        (Some(data), Some(key)) => {
            let boundary = boundary_for(data);
            let user_type = if data.starts_with("#cloud-config") {
                "text/cloud-config"
            } else if data.starts_with("#!") {
                "text/x-shellscript"
            } else {
                // cloud-init types a text/plain part by its first line
                // (#include, #cloud-boothook, …).
                "text/plain"
            };
            let mut out = String::new();
            out.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n"
            ));
            for (kind, name, body) in [
                (user_type, "user-data", data.clone()),
                ("text/cloud-config", "ssh-key", key_config(key, true)),
            ] {
                out.push_str(&format!(
                    "--{boundary}\nContent-Type: {kind}; charset=\"utf-8\"\n\
                     MIME-Version: 1.0\nContent-Transfer-Encoding: 8bit\n\
                     Content-Disposition: attachment; filename=\"{name}\"\n\n{body}"
                ));
                if !body.ends_with('\n') {
                    out.push('\n');
                }
            }
            out.push_str(&format!("--{boundary}--\n"));
            out
        }
        (None, None) => String::new(),
    }
}

/// The cloud-config that gives `key` to the default user. In an archive
/// it asks cloud-init to append lists when merging, so the user's own
/// keys stay.
fn key_config(key: &str, merge: bool) -> String {
    let mut out = String::from("#cloud-config\n");
    if merge {
        out.push_str(
            "merge_how:\n - name: list\n   settings: [append]\n \
             - name: dict\n   settings: [no_replace, recurse_list]\n",
        );
    }
    // Single quotes: the key's comment may hold any printable character,
    // and only the quote itself needs escaping.
    out.push_str(&format!(
        "ssh_authorized_keys:\n  - '{}'\n",
        key.replace('\'', "''")
    ));
    out
}

/// A MIME boundary that does not occur in the user's data.
fn boundary_for(data: &str) -> String {
    (0u32..)
        .map(|n| format!("vmd-cidata-boundary-{n}"))
        .find(|b| !data.contains(b.as_str()))
        .expect("some boundary is absent from a finite text")
}

/// Escapes for a double-quoted YAML scalar.
fn yaml_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `network-config` (version 2): each interface matched by its MAC
/// address and configured by DHCP, which is what vmd's DHCP server hands
/// out on a local interface. Interfaces other than local ones are marked
/// optional: nothing on the host promises them a DHCP answer.
pub fn network_config(nics: &[Nic]) -> String {
    let mut out = String::from("version: 2\n");
    if nics.is_empty() {
        out.push_str("ethernets: {}\n");
        return out;
    }
    out.push_str("ethernets:\n");
    for (index, nic) in nics.iter().enumerate() {
        let m = nic.mac;
        out.push_str(&format!(
            "  nic{index}:\n    match:\n      macaddress: \"{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\"\n    dhcp4: true\n",
            m[0], m[1], m[2], m[3], m[4], m[5]
        ));
        if !nic.local {
            out.push_str("    optional: true\n");
        }
    }
    out
}

/// The timestamps of the volume's files: FAT's earliest date, always, so
/// the image does not depend on when it was built.
#[derive(Debug)]
pub struct Epoch;

impl fatfs::TimeProvider for Epoch {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static EPOCH: Epoch = Epoch;

/// The NoCloud volume of the VM `name`: a FAT filesystem of
/// [`VOLUME_SIZE`] bytes labelled [`LABEL`] holding `meta-data`,
/// `user-data` and `network-config`.
pub fn build(name: &str, seed: &Seed, nics: &[Nic]) -> io::Result<Vec<u8>> {
    let mut label = [b' '; 11];
    label[..LABEL.len()].copy_from_slice(LABEL.as_bytes());
    let serial = instance_id(name, seed);
    let serial = u32::from_str_radix(&serial[serial.len() - 8..], 16).unwrap_or(0);
    let mut image = Cursor::new(vec![0u8; VOLUME_SIZE]);
    fatfs::format_volume(
        &mut image,
        fatfs::FormatVolumeOptions::new()
            .volume_label(label)
            .volume_id(serial)
            .fat_type(fatfs::FatType::Fat12),
    )?;
    {
        let fs = fatfs::FileSystem::new(
            &mut image,
            fatfs::FsOptions::new()
                .time_provider(&EPOCH)
                .update_accessed_date(false),
        )?;
        let root = fs.root_dir();
        for (file, contents) in [
            ("meta-data", meta_data(name, seed)),
            ("user-data", user_data(seed)),
            ("network-config", network_config(nics)),
        ] {
            let mut file = root.create_file(file)?;
            file.truncate()?;
            file.write_all(contents.as_bytes())?;
            file.flush()?;
        }
        drop(root);
        fs.unmount()?;
    }
    Ok(image.into_inner())
}

/// A memfd holding `bytes`, sealed so that nobody can write, grow or
/// shrink it any more: the VM process reads it as a raw disk image (a
/// memfd is a regular file) and the guest sees exactly what was built.
pub fn sealed_memfd(bytes: &[u8]) -> io::Result<File> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags and
    // returns a new descriptor or -1.
    let fd = unsafe {
        libc::memfd_create(
            c"cidata".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on a descriptor `file` owns takes an int.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

#[cfg(test)]
mod tests;
