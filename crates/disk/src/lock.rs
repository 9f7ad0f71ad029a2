//! Image locks: `flock(2)` on the open file description.
//!
//! A top image opened for writing is locked exclusively; an image only read
//! (a backing file, a conversion source) is locked shared. So a second VM
//! on a disk in use, a VM on a base image that overlays are reading, or a
//! conversion of a disk a VM is writing are all refused, while any number
//! of readers may share a base image.
//!
//! The lock belongs to the open file description, so it travels with the
//! descriptor to the VM process and ends when the last descriptor closes.
//! The daemon therefore never releases it: an unlock there after handing
//! the descriptor over would unlock the VM's image too. Only the VM
//! process lets go early ([`HeldLocks`]), when its VM has been sent away
//! and the receiver may take the images before this process has ended.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Which lock to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Only this holder may have the file open (a writer).
    Exclusive,
    /// Other readers may share the file; no writer may.
    Shared,
}

/// Takes the lock without waiting. `Err` with `WouldBlock` means another
/// holder has a conflicting lock.
pub fn lock_image(file: &File, mode: LockMode) -> io::Result<()> {
    let operation = match mode {
        LockMode::Exclusive => libc::LOCK_EX,
        LockMode::Shared => libc::LOCK_SH,
    } | libc::LOCK_NB;
    flock(file, operation)
}

/// flock(2), again when a signal interrupts it.
fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock takes a descriptor we own and integer flags.
        let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Descriptors sharing the open file descriptions of images this process
/// holds locked, so that it can release the locks while the images' own
/// descriptors are still in use elsewhere (a device's backend).
#[derive(Debug, Default)]
pub struct HeldLocks(Vec<File>);

impl HeldLocks {
    /// Keeps a way to release `file`'s lock.
    pub fn keep(&mut self, file: &File) -> io::Result<()> {
        self.0.push(file.try_clone()?);
        Ok(())
    }

    /// Releases every lock kept: other processes may lock the images now,
    /// though this one still has them open.
    pub fn release(&self) {
        for file in &self.0 {
            // Unlocking an open descriptor does not fail, and a lock that
            // stayed would end with the process anyway.
            let _ = flock(file, libc::LOCK_UN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_shared_shares() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, b"x").unwrap();
        let open = || File::open(&path).unwrap();

        let writer = open();
        lock_image(&writer, LockMode::Exclusive).unwrap();
        let err = lock_image(&open(), LockMode::Shared).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let err = lock_image(&open(), LockMode::Exclusive).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(writer);

        let (reader1, reader2) = (open(), open());
        lock_image(&reader1, LockMode::Shared).unwrap();
        lock_image(&reader2, LockMode::Shared).unwrap();
        let err = lock_image(&open(), LockMode::Exclusive).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

        // The lock follows the descriptor: a duplicate keeps it after the
        // original closes.
        let dup = reader1.try_clone().unwrap();
        drop(reader1);
        drop(reader2);
        assert!(lock_image(&open(), LockMode::Exclusive).is_err());
        drop(dup);
        lock_image(&open(), LockMode::Exclusive).unwrap();
    }

    #[test]
    fn held_locks_release_while_the_image_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let (top, base) = (dir.path().join("top"), dir.path().join("base"));
        std::fs::write(&top, b"x").unwrap();
        std::fs::write(&base, b"x").unwrap();
        let open = |path: &std::path::Path| File::open(path).unwrap();
        let held_files = (open(&top), open(&base));
        lock_image(&held_files.0, LockMode::Exclusive).unwrap();
        lock_image(&held_files.1, LockMode::Shared).unwrap();
        let mut held = HeldLocks::default();
        held.keep(&held_files.0).unwrap();
        held.keep(&held_files.1).unwrap();
        assert!(lock_image(&open(&top), LockMode::Shared).is_err());
        assert!(lock_image(&open(&base), LockMode::Exclusive).is_err());
        held.release();
        // Both descriptors are still open; neither holds a lock.
        lock_image(&open(&top), LockMode::Exclusive).unwrap();
        lock_image(&open(&base), LockMode::Exclusive).unwrap();
        drop(held_files);
    }
}
