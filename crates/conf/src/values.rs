//! Checks and conversions of option arguments. Each function returns the
//! message the parser reports after `file:line: `.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::model::{Ipv4Prefix, Ipv6Prefix, MAX_IFNAME_LEN, MAX_MEMORY, MIN_MEMORY, Tap};

/// `memory` given as a bare number: bytes, checked and rounded down to MiB.
pub fn memory_from_bytes(bytes: i64) -> Result<u64, String> {
    if bytes < MIN_MEMORY as i64 {
        return Err("memory size must be at least 1MB".into());
    }
    let bytes = bytes as u64;
    if bytes > MAX_MEMORY {
        return Err("memory size too large (limit is 128G)".into());
    }
    Ok(bytes & !(MIN_MEMORY - 1))
}

/// `memory` given as a scaled size (`512M`, `1.5G`).
pub fn memory_from_size(word: &str) -> Result<u64, String> {
    match scaled::scan_scaled(word) {
        Ok(bytes) => memory_from_bytes(bytes),
        Err(err) => Err(format!("invalid memory size: {word}: {err}")),
    }
}

/// A routing domain, 0..=255.
pub fn rdomain(value: i64) -> Result<u8, String> {
    u8::try_from(value).map_err(|_| format!("invalid rdomain: {value}"))
}

/// An interface group name: at most 15 characters, not ending in a digit.
pub fn group_name(name: &str) -> Result<String, String> {
    let ends_in_digit = name.bytes().last().is_some_and(|c| c.is_ascii_digit());
    if name.is_empty() || name.len() > MAX_IFNAME_LEN || ends_in_digit {
        return Err(format!("invalid group name: {name}"));
    }
    Ok(name.to_string())
}

/// The tap of an `interface` statement: `tap` (next free) or `tap<N>`.
pub fn tap_name(name: &str) -> Result<Tap, String> {
    let invalid = || format!("invalid interface: {name}");
    let digits = name.strip_prefix("tap").ok_or_else(invalid)?;
    if name.len() > MAX_IFNAME_LEN || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    if digits.is_empty() {
        Ok(Tap::NextFree)
    } else {
        Ok(Tap::Named(name.to_string()))
    }
}

/// A switch's bridge device. **\[Linux\]** Any name Linux accepts for a
/// network device (1..=15 bytes, no `/`, no blanks, not `.` or `..`); that
/// it exists and is a bridge is checked when the switch is configured.
pub fn switch_interface(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|c| c == b'/' || c == b':' || c.is_ascii_whitespace() || c == 0);
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!("invalid switch interface: {name}"))
    }
}

/// One to four decimal octets as inet_net_pton(3) reads them (`10`,
/// `100.64`, `100.64.0.0`); missing octets are zero.
fn ipv4_shorthand(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    for (octet, part) in octets.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

/// strtonum(3): a decimal number within `min..=max`, or its reason
/// (`invalid`, `too small`, `too large`), which vmd prints.
fn strtonum(text: &str, min: i64, max: i64) -> Result<i64, &'static str> {
    let trimmed = text.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err("invalid");
    }
    match trimmed.parse::<i128>() {
        Ok(n) if n < i128::from(min) => Err("too small"),
        Ok(n) if n > i128::from(max) => Err("too large"),
        Ok(n) => Ok(n as i64),
        Err(_) if trimmed.starts_with('-') => Err("too small"),
        Err(_) => Err("too large"),
    }
}

/// `local prefix <addr>[/<len>]`: length 1..=16 (16 if omitted), host bits
/// zero. The reasons are vmd's: the length's strtonum(3) reason, `invalid
/// format`, `bad mask`.
pub fn local_prefix(text: &str) -> Result<Ipv4Prefix, String> {
    let fail = |reason: &str| format!("invalid local prefix: {reason}");
    let (addr, len) = match text.rsplit_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let len = match len {
        Some(len) => strtonum(len, 1, 16).map_err(fail)? as u8,
        None => 16,
    };
    let addr = ipv4_shorthand(addr).ok_or_else(|| fail("invalid format"))?;
    let mask = u32::MAX << (32 - u32::from(len));
    if u32::from(addr) & !mask != 0 {
        return Err(fail("bad mask"));
    }
    Ok(Ipv4Prefix { addr, len })
}

/// `local inet6 prefix <addr>[/<len>]`: length 0..=64 (64 if omitted), host
/// bits zero. An address that does not parse is reported with
/// getaddrinfo(3)'s reason, as vmd does.
pub fn local_inet6_prefix(text: &str) -> Result<Ipv6Prefix, String> {
    let fail = |reason: &str| format!("invalid local inet6 prefix: {reason}");
    let (addr, len) = match text.rsplit_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let len = match len {
        Some(len) => strtonum(len, 0, 64).map_err(fail)? as u8,
        None => 64,
    };
    let addr: Ipv6Addr = addr.parse().map_err(|_| fail(&numeric_ipv6_error(addr)))?;
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    if u128::from(addr) & !mask != 0 {
        return Err(fail("bad mask"));
    }
    Ok(Ipv6Prefix { addr, len })
}

/// What getaddrinfo(3) says of `text` as a numeric IPv6 address.
fn numeric_ipv6_error(text: &str) -> String {
    use nix::libc;
    use std::ffi::{CStr, CString};
    let Ok(node) = CString::new(text) else {
        return "invalid format".to_string();
    };
    // SAFETY: zeroed addrinfo is the documented way to start hints.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_INET6;
    hints.ai_socktype = libc::SOCK_DGRAM;
    hints.ai_flags = libc::AI_NUMERICHOST;
    let mut result: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: node and hints are valid for the call; result is freed below
    // when set.
    let err = unsafe { libc::getaddrinfo(node.as_ptr(), std::ptr::null(), &hints, &mut result) };
    if err == 0 {
        // SAFETY: result came from a successful getaddrinfo.
        unsafe { libc::freeaddrinfo(result) };
        return "invalid format".to_string();
    }
    // SAFETY: gai_strerror takes any code and returns a pointer.
    let text = unsafe { libc::gai_strerror(err) };
    // SAFETY: that pointer is to a static NUL-terminated string.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        assert_eq!(memory_from_size("512M"), Ok(512 << 20));
        assert_eq!(memory_from_size("1.5G"), Ok(1536 << 20));
        assert_eq!(memory_from_size("1.7M"), Ok(1 << 20));
        assert_eq!(memory_from_size("128G"), Ok(128 << 30));
        assert_eq!(memory_from_bytes(1048576), Ok(1 << 20));
        assert_eq!(memory_from_bytes(3 * 1048576 + 5), Ok(3 << 20));
        assert_eq!(
            memory_from_size("1023K").unwrap_err(),
            "memory size must be at least 1MB"
        );
        assert_eq!(
            memory_from_bytes(-1).unwrap_err(),
            "memory size must be at least 1MB"
        );
        assert_eq!(
            memory_from_bytes(1048575).unwrap_err(),
            "memory size must be at least 1MB"
        );
        assert_eq!(
            memory_from_size("129G").unwrap_err(),
            "memory size too large (limit is 128G)"
        );
        assert_eq!(
            memory_from_size("4GB").unwrap_err(),
            "invalid memory size: 4GB: Invalid argument"
        );
        assert_eq!(
            memory_from_size("99999999999999999999999G").unwrap_err(),
            "invalid memory size: 99999999999999999999999G: Numerical result out of range"
        );
    }

    #[test]
    fn names() {
        assert_eq!(group_name("vmnet"), Ok("vmnet".into()));
        assert_eq!(
            group_name("vmnet1").unwrap_err(),
            "invalid group name: vmnet1"
        );
        assert_eq!(group_name("").unwrap_err(), "invalid group name: ");
        assert_eq!(group_name(&"g".repeat(15)), Ok("g".repeat(15)));
        assert!(group_name(&"g".repeat(16)).is_err());

        assert_eq!(tap_name("tap"), Ok(Tap::NextFree));
        assert_eq!(tap_name("tap7"), Ok(Tap::Named("tap7".into())));
        assert_eq!(
            tap_name("tap000000000001"),
            Ok(Tap::Named("tap000000000001".into()))
        );
        for bad in ["tap0000000000001", "tun0", "tapx", "tap-1", "eth0", ""] {
            assert_eq!(
                tap_name(bad).unwrap_err(),
                format!("invalid interface: {bad}")
            );
        }

        assert_eq!(switch_interface("br0"), Ok("br0".into()));
        assert_eq!(switch_interface("bridge0"), Ok("bridge0".into()));
        assert_eq!(switch_interface("veb12"), Ok("veb12".into()));
        assert_eq!(switch_interface("vm-net.lan"), Ok("vm-net.lan".into()));
        for bad in ["", ".", "..", "a/b", "a b", "averyveryverylong", "a:b"] {
            assert_eq!(
                switch_interface(bad).unwrap_err(),
                format!("invalid switch interface: {bad}")
            );
        }

        assert_eq!(rdomain(0), Ok(0));
        assert_eq!(rdomain(255), Ok(255));
        assert_eq!(rdomain(256).unwrap_err(), "invalid rdomain: 256");
        assert_eq!(rdomain(-1).unwrap_err(), "invalid rdomain: -1");
    }

    #[test]
    fn ipv4_prefixes() {
        let p = |t| local_prefix(t).map(|p| p.to_string());
        assert_eq!(p("100.64.0.0/10"), Ok("100.64.0.0/10".into()));
        assert_eq!(p("10/8"), Ok("10.0.0.0/8".into()));
        assert_eq!(p("172.16/12"), Ok("172.16.0.0/12".into()));
        assert_eq!(p("10.1.0.0"), Ok("10.1.0.0/16".into()));
        assert_eq!(
            p("10.0.0.0/1").unwrap_err(),
            "invalid local prefix: bad mask"
        );
        assert_eq!(p("128.0.0.0/1"), Ok("128.0.0.0/1".into()));
        assert_eq!(p("10.1.2.0").unwrap_err(), "invalid local prefix: bad mask");
        assert_eq!(
            p("100.64.0.0/17").unwrap_err(),
            "invalid local prefix: too large"
        );
        assert_eq!(
            p("0.0.0.0/0").unwrap_err(),
            "invalid local prefix: too small"
        );
        assert_eq!(p("10/").unwrap_err(), "invalid local prefix: invalid");
        assert_eq!(p("10/x").unwrap_err(), "invalid local prefix: invalid");
        // The length is looked at before the address.
        assert_eq!(p("a.b/x").unwrap_err(), "invalid local prefix: invalid");
        for bad in [
            "",
            "256.0.0.0/8",
            "1.2.3.4.5/8",
            "a.b.c.d",
            "10..0/8",
            "fd00::/8",
        ] {
            assert_eq!(
                p(bad).unwrap_err(),
                "invalid local prefix: invalid format",
                "{bad}"
            );
        }
    }

    #[test]
    fn ipv6_prefixes() {
        let p = |t| local_inet6_prefix(t).map(|p| p.to_string());
        assert_eq!(p("fd00:1234::/48"), Ok("fd00:1234::/48".into()));
        assert_eq!(p("fd00:1234::"), Ok("fd00:1234::/64".into()));
        assert_eq!(p("::/0"), Ok("::/0".into()));
        assert_eq!(
            p("fd00::/65").unwrap_err(),
            "invalid local inet6 prefix: too large"
        );
        assert_eq!(
            p("fd00::1/64").unwrap_err(),
            "invalid local inet6 prefix: bad mask"
        );
        // getaddrinfo(3)'s reasons.
        assert_eq!(
            p("10.0.0.0/8").unwrap_err(),
            "invalid local inet6 prefix: Address family for hostname not supported"
        );
        assert_eq!(
            p("zz::/8").unwrap_err(),
            "invalid local inet6 prefix: Name or service not known"
        );
    }
}
