//! `locked lladdr` (docs/machine.md, "The network device"): the NIC may only speak as its own MAC
//! and only hears what is meant for it. Enforced in the device, not in
//! the host bridge, so it holds whatever the host side is attached to.

/// The MAC a locked NIC is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacLock {
    pub mac: [u8; 6],
}

/// Ethernet destination and source offsets.
const DST: std::ops::Range<usize> = 0..6;
const SRC: std::ops::Range<usize> = 6..12;

impl MacLock {
    /// Guest → host: the source must be the VM's MAC. Frames too short to
    /// have one are refused too.
    pub fn guest_may_send(&self, frame: &[u8]) -> bool {
        frame.get(SRC) == Some(&self.mac[..])
    }

    /// Host → guest: unicast only to the VM's MAC; broadcast and multicast
    /// (group bit set) pass.
    pub fn guest_may_receive(&self, frame: &[u8]) -> bool {
        match frame.get(DST) {
            Some(dst) => dst[0] & 1 != 0 || dst == self.mac,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0xfe, 0xe1, 0xbb, 0xd1, 0x12, 0x34];
    const OTHER: [u8; 6] = [0xfe, 0xe1, 0xbb, 0xd1, 0x12, 0x35];

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0; 46]);
        f
    }

    #[test]
    fn the_guest_sends_only_as_itself() {
        let lock = MacLock { mac: MAC };
        assert!(lock.guest_may_send(&frame([0xff; 6], MAC)));
        assert!(!lock.guest_may_send(&frame([0xff; 6], OTHER)));
        assert!(!lock.guest_may_send(&MAC[..4]));
    }

    #[test]
    fn the_guest_hears_its_unicast_and_every_group() {
        let lock = MacLock { mac: MAC };
        assert!(lock.guest_may_receive(&frame(MAC, OTHER)));
        assert!(!lock.guest_may_receive(&frame(OTHER, MAC)));
        assert!(lock.guest_may_receive(&frame([0xff; 6], OTHER)));
        assert!(lock.guest_may_receive(&frame([0x33, 0x33, 0, 0, 0, 1], OTHER)));
        assert!(lock.guest_may_receive(&frame([0x01, 0, 0x5e, 0, 0, 1], OTHER)));
        assert!(!lock.guest_may_receive(&[0xff; 5]));
    }
}
