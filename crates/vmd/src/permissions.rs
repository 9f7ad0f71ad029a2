//! Who may control which VM (docs/lifecycle.md, "Who may do what").

use crate::open_as::Credentials;

/// Whether `uid` is in group `gid` according to the group database: its
/// primary group or a supplementary membership (not the caller's live
/// groups, as docs/lifecycle.md, "Who may do what" requires).
pub fn user_in_group(uid: u32, gid: u32) -> bool {
    Credentials::of(uid).is_ok_and(|user| user.in_group(gid))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
