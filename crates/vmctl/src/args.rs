//! Operand and option-argument types shared by the commands: VM ids and
//! names (vmctl(8), "Naming a VM"), scaled sizes (vmctl(8), "Sizes") and counts.

use proto::control::VmRef;
use proto::names::{IdError, parse_vm_ref};
use scaled::{fmt_scaled, scan_scaled};

use crate::failure::Failure;

/// Parses an `id` operand. `need_name` refuses numbers (`receive`).
/// Failures carry the reason line, if any, then `invalid id: <word>`.
pub fn parse_id(word: Option<&str>, need_name: bool) -> Result<VmRef, Failure> {
    let Some(word) = word else {
        return Err(Failure::msg("missing vmid argument"));
    };
    parse_vm_ref(word, need_name).map_err(|err| {
        let invalid = format!("invalid id: {word}");
        match err {
            IdError::LooksLikeOption => Failure::msg(invalid),
            IdError::NameTooLong | IdError::NumberNotName => {
                let reason = err.warning().unwrap_or_default().to_string();
                Failure::msgs([reason, invalid])
            }
        }
    })
}

/// What a size is for; named in the messages (`invalid memory size: …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeKind {
    Memory,
    #[allow(dead_code, reason = "for `create -s`")]
    Disk,
}

impl SizeKind {
    fn name(self) -> &'static str {
        match self {
            SizeKind::Memory => "memory",
            SizeKind::Disk => "disk",
        }
    }
}

const MIB: i64 = 1 << 20;

/// `VMM_MAX_VM_MEM_SIZE`: the largest memory a VM may have.
pub const MAX_MEMORY: i64 = 128 << 30;

/// A parsed size in bytes, rounded down to a whole MiB, and the warning to
/// print when the rounding changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    pub bytes: u64,
    pub rounding_warning: Option<String>,
}

/// Parses a scaled size and applies vmctl's checks: at least 1 MiB, memory
/// at most 128 GiB, rounded down to a whole MiB.
pub fn parse_size(word: &str, kind: SizeKind) -> Result<Size, Failure> {
    let kind_name = kind.name();
    let value = scan_scaled(word)
        .map_err(|err| Failure::msg(format!("invalid {kind_name} size: {word}: {err}")))?;
    if value < MIB {
        return Err(Failure::msg(format!(
            "{kind_name} size must be at least 1MB"
        )));
    }
    if kind == SizeKind::Memory && value > MAX_MEMORY {
        return Err(Failure::msg(format!(
            "memory size too large (limit is {})",
            fmt_scaled(MAX_MEMORY)
        )));
    }
    let rounded = value / MIB * MIB;
    let rounding_warning =
        (rounded != value).then(|| format!("{kind_name} size rounded to {}", fmt_scaled(rounded)));
    Ok(Size {
        bytes: rounded as u64,
        rounding_warning,
    })
}

/// Why a count is out of bounds, in strtonum(3)'s words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountError {
    TooSmall,
    TooLarge,
    Invalid,
}

impl CountError {
    pub fn text(self) -> &'static str {
        match self {
            CountError::TooSmall => "too small",
            CountError::TooLarge => "too large",
            CountError::Invalid => "invalid",
        }
    }
}

/// strtonum(word, min, max): a decimal number after optional blanks and
/// one sign, with nothing after the digits.
pub fn parse_count(word: &str, min: i64, max: i64) -> Result<i64, CountError> {
    let trimmed = word.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'+') => (false, &trimmed[1..]),
        Some(b'-') => (true, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CountError::Invalid);
    }
    // Past i64 strtoll saturates with ERANGE; the sign says which end.
    let value = match digits.parse::<i64>() {
        Ok(v) if negative => -v,
        Ok(v) => v,
        Err(_) if negative => return Err(CountError::TooSmall),
        Err(_) => return Err(CountError::TooLarge),
    };
    if value < min {
        Err(CountError::TooSmall)
    } else if value > max {
        Err(CountError::TooLarge)
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(failure: Failure) -> Vec<String> {
        match failure {
            Failure::Messages(lines) => lines,
            other => panic!("expected messages, got {other:?}"),
        }
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id(Some("3"), false), Ok(VmRef::Id(3)));
        assert_eq!(parse_id(Some("web"), false), Ok(VmRef::Name("web".into())));
        assert_eq!(parse_id(Some("web"), true), Ok(VmRef::Name("web".into())));
        assert_eq!(
            lines(parse_id(None, false).unwrap_err()),
            ["missing vmid argument"]
        );
        assert_eq!(
            lines(parse_id(Some("-x"), false).unwrap_err()),
            ["invalid id: -x"]
        );
        let long = "n".repeat(64);
        assert_eq!(
            lines(parse_id(Some(&long), false).unwrap_err()),
            ["name too long".to_string(), format!("invalid id: {long}")]
        );
        assert_eq!(
            lines(parse_id(Some("12"), true).unwrap_err()),
            ["invalid vm name", "invalid id: 12"]
        );
    }

    #[test]
    fn sizes() {
        let ok = |w: &str| parse_size(w, SizeKind::Memory).unwrap();
        assert_eq!(
            ok("512M"),
            Size {
                bytes: 512 << 20,
                rounding_warning: None
            }
        );
        assert_eq!(ok("4.5G").bytes, 4608 << 20);
        assert_eq!(ok("128G").bytes, 128 << 30);
        assert_eq!(ok("1048576").bytes, 1 << 20);
        let rounded = ok("1.7M");
        assert_eq!(rounded.bytes, 1 << 20);
        assert_eq!(
            rounded.rounding_warning.as_deref(),
            Some("memory size rounded to 1.0M")
        );
        let rounded = ok("1.25G");
        assert_eq!(rounded.bytes, 1280 << 20);
        assert_eq!(rounded.rounding_warning, None);
        let rounded = parse_size("1025.5K", SizeKind::Disk).unwrap();
        assert_eq!(
            rounded.rounding_warning.as_deref(),
            Some("disk size rounded to 1.0M")
        );
        // A disk may be larger than the memory limit.
        assert_eq!(parse_size("1T", SizeKind::Disk).unwrap().bytes, 1 << 40);
    }

    #[test]
    fn size_errors() {
        let err = |w: &str, k| lines(parse_size(w, k).unwrap_err());
        assert_eq!(
            err("4GB", SizeKind::Memory),
            ["invalid memory size: 4GB: Invalid argument"]
        );
        assert_eq!(
            err("99999999999999999999999", SizeKind::Disk),
            ["invalid disk size: 99999999999999999999999: Numerical result out of range"]
        );
        assert_eq!(
            err("1023K", SizeKind::Memory),
            ["memory size must be at least 1MB"]
        );
        assert_eq!(
            err("-5G", SizeKind::Disk),
            ["disk size must be at least 1MB"]
        );
        assert_eq!(
            err("129G", SizeKind::Memory),
            ["memory size too large (limit is 128G)"]
        );
        assert_eq!(
            err("128.1G", SizeKind::Memory),
            ["memory size too large (limit is 128G)"]
        );
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("3", 1, 10), Ok(3));
        assert_eq!(parse_count(" +4", 1, 10), Ok(4));
        assert_eq!(parse_count("0", 1, 10), Err(CountError::TooSmall));
        assert_eq!(parse_count("-1", 1, 10), Err(CountError::TooSmall));
        assert_eq!(parse_count("11", 1, 10), Err(CountError::TooLarge));
        assert_eq!(
            parse_count("99999999999999999999", 1, 10),
            Err(CountError::TooLarge)
        );
        assert_eq!(
            parse_count("-99999999999999999999", 1, 10),
            Err(CountError::TooSmall)
        );
        for bad in ["", "x", "1x", "0x10", "1 ", "--1"] {
            assert_eq!(parse_count(bad, 1, 10), Err(CountError::Invalid), "{bad:?}");
        }
    }
}
