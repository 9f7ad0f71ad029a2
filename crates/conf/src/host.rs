//! What the parser needs from the machine: files, path resolution, the
//! qcow2 check and the user and group databases. Behind a trait so that
//! tests and the fuzzer run without touching the host.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};

use proto::control::QCOW2_MAGIC;

/// The host facilities the parser uses.
pub trait Host {
    /// Reads a whole configuration file (the main file or an include).
    fn read_file(&self, path: &str) -> io::Result<Vec<u8>>;
    /// realpath(3): the canonical absolute path of an existing file.
    fn canonicalize(&self, path: &str) -> io::Result<String>;
    /// Whether the file starts with the qcow2 magic (`QFI\xfb`); false if
    /// it cannot be read.
    fn has_qcow2_magic(&self, path: &str) -> bool;
    /// uid of the user called `name`.
    fn user_id(&self, name: &str) -> Option<u32>;
    /// gid of the group called `name`.
    fn group_id(&self, name: &str) -> Option<u32>;
}

/// The real machine: the file system and the passwd/group databases
/// (through NSS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    fn read_file(&self, path: &str) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn canonicalize(&self, path: &str) -> io::Result<String> {
        let resolved = std::fs::canonicalize(path)?;
        Ok(resolved.to_string_lossy().into_owned())
    }

    fn has_qcow2_magic(&self, path: &str) -> bool {
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && magic == QCOW2_MAGIC
    }

    fn user_id(&self, name: &str) -> Option<u32> {
        let user = nix::unistd::User::from_name(name).ok().flatten()?;
        Some(user.uid.as_raw())
    }

    fn group_id(&self, name: &str) -> Option<u32> {
        let group = nix::unistd::Group::from_name(name).ok().flatten()?;
        Some(group.gid.as_raw())
    }
}

/// An imaginary machine for tests and fuzzing: files live in a map, every
/// stored path is its own canonical path, users and groups are whatever was
/// added.
#[derive(Debug, Clone, Default)]
pub struct MemoryHost {
    files: HashMap<String, Vec<u8>>,
    /// Paths that exist but cannot be read (EACCES).
    unreadable: HashSet<String>,
    users: HashMap<String, u32>,
    groups: HashMap<String, u32>,
}

impl MemoryHost {
    pub fn new() -> MemoryHost {
        MemoryHost::default()
    }

    /// Adds a file (a configuration file, or an image `boot`/`disk` name).
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>) -> MemoryHost {
        self.files.insert(path.to_string(), contents.into());
        self
    }

    /// Adds a file that exists but that reading fails on with EACCES.
    pub fn unreadable_file(mut self, path: &str) -> MemoryHost {
        self.unreadable.insert(path.to_string());
        self
    }

    pub fn user(mut self, name: &str, uid: u32) -> MemoryHost {
        self.users.insert(name.to_string(), uid);
        self
    }

    pub fn group(mut self, name: &str, gid: u32) -> MemoryHost {
        self.groups.insert(name.to_string(), gid);
        self
    }
}

impl Host for MemoryHost {
    fn read_file(&self, path: &str) -> io::Result<Vec<u8>> {
        if self.unreadable.contains(path) {
            return Err(io::Error::from_raw_os_error(libc_eacces()));
        }
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc_enoent()))
    }

    fn canonicalize(&self, path: &str) -> io::Result<String> {
        if self.files.contains_key(path) || self.unreadable.contains(path) {
            Ok(path.to_string())
        } else {
            Err(io::Error::from_raw_os_error(libc_enoent()))
        }
    }

    fn has_qcow2_magic(&self, path: &str) -> bool {
        self.files
            .get(path)
            .is_some_and(|contents| contents.starts_with(&QCOW2_MAGIC))
    }

    fn user_id(&self, name: &str) -> Option<u32> {
        self.users.get(name).copied()
    }

    fn group_id(&self, name: &str) -> Option<u32> {
        self.groups.get(name).copied()
    }
}

// Spelled out to keep libc out of this crate's dependencies.
const fn libc_enoent() -> i32 {
    2
}
const fn libc_eacces() -> i32 {
    13
}

/// strerror(3) text of an I/O error, without Rust's `(os error N)` suffix.
pub(crate) fn error_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => proto::error::strerror(errno),
        None => err.to_string(),
    }
}

/// Whether an error means "no such file" (a missing main file is a warning
/// or nothing, not an error).
pub(crate) fn is_not_found(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_host_reads_the_real_machine() {
        let host = SystemHost;
        assert_eq!(host.user_id("root"), Some(0));
        assert_eq!(host.group_id("root"), Some(0));
        assert_eq!(host.user_id("no-such-user-hopefully"), None);
        assert_eq!(host.canonicalize("/").unwrap(), "/");
        let err = host.canonicalize("/nonexistent/x").unwrap_err();
        assert_eq!(error_text(&err), "No such file or directory");
        assert!(is_not_found(&err));

        let dir = std::env::temp_dir().join(format!("conf-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let qcow = dir.join("a.img");
        std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03").unwrap();
        let raw = dir.join("b.qcow2");
        std::fs::write(&raw, b"not a qcow2").unwrap();
        assert!(host.has_qcow2_magic(qcow.to_str().unwrap()));
        // The extension does not matter in vm.conf: only the magic.
        assert!(!host.has_qcow2_magic(raw.to_str().unwrap()));
        assert!(!host.has_qcow2_magic("/nonexistent/x"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memory_host() {
        let host = MemoryHost::new()
            .file("/a", "x")
            .file("/q", b"QFI\xfbrest".to_vec())
            .unreadable_file("/secret")
            .user("alice", 1000)
            .group("vmusers", 500);
        assert_eq!(host.read_file("/a").unwrap(), b"x");
        assert_eq!(
            error_text(&host.read_file("/b").unwrap_err()),
            "No such file or directory"
        );
        assert_eq!(
            error_text(&host.read_file("/secret").unwrap_err()),
            "Permission denied"
        );
        assert_eq!(host.canonicalize("/secret").unwrap(), "/secret");
        assert!(host.has_qcow2_magic("/q") && !host.has_qcow2_magic("/a"));
        assert_eq!(host.user_id("alice"), Some(1000));
        assert_eq!(host.group_id("vmusers"), Some(500));
        assert_eq!(host.group_id("alice"), None);
    }
}
