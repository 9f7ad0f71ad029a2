//! Who may control which VM (vmd.md §4.3).

use nix::unistd::{Gid, Uid, User, getgrouplist};

/// Whether `uid` is in group `gid` according to the group database: its
/// primary group or a supplementary membership (not the caller's live
/// groups, as linux-mapping.md §4.5 requires).
pub fn user_in_group(uid: u32, gid: u32) -> bool {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    if user.gid.as_raw() == gid {
        return true;
    }
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    getgrouplist(&name, user.gid)
        .map(|groups| groups.contains(&Gid::from_raw(gid)))
        .unwrap_or(false)
}

/// Whether `uid` may read (and, with `write`, write) the regular file at
/// `path`, judged from its mode bits as vmd.md §4.4 says: the owner bits if
/// the user owns it, else the group bits if the user is in its group, else
/// the "other" bits. Root may use any regular file.
pub fn user_may_access(path: &str, uid: u32, write: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    if uid == 0 {
        return true;
    }
    let mode = meta.mode();
    let bits = if meta.uid() == uid {
        mode >> 6
    } else if user_in_group(uid, meta.gid()) {
        mode >> 3
    } else {
        mode
    };
    bits & 0o4 != 0 && (!write || bits & 0o2 != 0)
}

/// The facts about a VM the rule looks at.
pub struct VmAccess {
    pub running: bool,
    /// Who started it, while it runs.
    pub current_user: Option<u32>,
    pub owner_uid: u32,
    pub owner_gid: Option<u32>,
}

/// May `uid` start, stop, wait for, pause or unpause the VM?
pub fn may_control(uid: u32, vm: &VmAccess) -> bool {
    if uid == 0 {
        return true;
    }
    if vm.running && vm.current_user == Some(uid) {
        return true;
    }
    if !vm.running && vm.owner_uid == uid {
        return true;
    }
    vm.owner_gid.is_some_and(|gid| user_in_group(uid, gid))
}

/// May `uid` read a file with these mode bits and owners (vmd.md §4.4):
/// the "other" bits first; else the owner bits if `uid` owns the file;
/// else the group bits if `uid` is in the file's group. Root always may.
pub fn may_read_mode(uid: u32, mode: u32, owner: u32, group: u32) -> bool {
    if uid == 0 || mode & 0o004 != 0 {
        return true;
    }
    if owner == uid {
        return mode & 0o400 != 0;
    }
    user_in_group(uid, group) && mode & 0o040 != 0
}

/// [`may_read_mode`] for a file's metadata.
pub fn may_read(uid: u32, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    may_read_mode(uid, meta.mode(), meta.uid(), meta.gid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_permission_from_mode_bits() {
        let nobody = u32::MAX - 7;
        assert!(may_read_mode(0, 0o000, 5, 5), "root");
        assert!(may_read_mode(nobody, 0o604, 5, 5), "other");
        assert!(!may_read_mode(nobody, 0o640, 5, 5));
        assert!(may_read_mode(1234, 0o400, 1234, 5), "owner");
        assert!(
            !may_read_mode(1234, 0o040, 1234, 0),
            "an owner without the owner bit is not let in by the group bit"
        );
        // root's group: only its members read through the group bit.
        assert!(!may_read_mode(nobody, 0o040, 5, 0));
    }

    #[test]
    fn rules() {
        let running = VmAccess {
            running: true,
            current_user: Some(1000),
            owner_uid: 1001,
            owner_gid: None,
        };
        assert!(may_control(0, &running));
        assert!(may_control(1000, &running));
        assert!(
            !may_control(1001, &running),
            "the owner may not stop another's run"
        );
        let stopped = VmAccess {
            running: false,
            current_user: None,
            owner_uid: 1001,
            owner_gid: None,
        };
        assert!(may_control(1001, &stopped));
        assert!(!may_control(1000, &stopped));
        // root's primary group is 0 in every passwd database.
        let grouped = VmAccess {
            running: false,
            current_user: None,
            owner_uid: 5000,
            owner_gid: Some(0),
        };
        assert!(user_in_group(0, 0));
        assert!(may_control(0, &grouped));
        assert!(
            !user_in_group(u32::MAX - 7, 0),
            "unknown users are in no group"
        );
    }

    #[test]
    fn file_access_by_mode_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vmd-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("image");
        std::fs::write(&file, b"x").unwrap();
        let path = file.to_str().unwrap();
        let nobody = 65534;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(user_may_access(path, nobody, false));
        assert!(!user_may_access(path, nobody, true));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!user_may_access(path, nobody, false));
        assert!(user_may_access(path, 0, true), "root");
        assert!(
            !user_may_access(dir.to_str().unwrap(), 0, false),
            "not a regular file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
