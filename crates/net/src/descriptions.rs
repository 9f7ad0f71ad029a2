//! The descriptions vmd gives host interfaces (docs/networking.md, "What vmd makes"), set as
//! Linux interface aliases. OpenBSD keeps 63 bytes of a description; the
//! same cut keeps the text identical on both systems (docs/networking.md,
//! "What vmd makes").

/// Bytes of a description OpenBSD keeps.
pub const MAX_DESCRIPTION: usize = 63;

/// `vm<ID>-if<i>-<vmname>` for NIC `nic` of VM `vm_id`.
pub fn tap_description(vm_id: u32, nic: usize, vm_name: &str) -> String {
    truncate(format!("vm{vm_id}-if{nic}-{vm_name}"))
}

/// `switch<id>-<name>` for a switch's bridge.
pub fn switch_description(switch_id: u32, name: &str) -> String {
    truncate(format!("switch{switch_id}-{name}"))
}

/// Cuts `text` to [`MAX_DESCRIPTION`] bytes, at a character boundary.
fn truncate(mut text: String) -> String {
    if text.len() > MAX_DESCRIPTION {
        let mut end = MAX_DESCRIPTION;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions() {
        assert_eq!(tap_description(1, 0, "myvm"), "vm1-if0-myvm");
        assert_eq!(switch_description(2, "uplink"), "switch2-uplink");
        let long = "n".repeat(63);
        let text = tap_description(12, 3, &long);
        assert_eq!(text.len(), 63);
        assert!(text.starts_with("vm12-if3-nnn"));
        let text = switch_description(1, &"é".repeat(40));
        assert!(text.len() <= 63 && text.len() >= 62, "{}", text.len());
    }
}
