//! VM identifiers and names (vmctl(8), "Naming a VM").

use crate::control::VmRef;

/// Longest VM name: `VMM_MAX_NAME_LEN` is 64 bytes including the NUL.
pub const MAX_NAME_LEN: usize = 63;

/// Why a word is not a usable VM id or name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// The word starts with `-` (an option where an id was expected);
    /// vmctl prints only `invalid id: <word>`.
    LooksLikeOption,
    /// A name of 64 bytes or more: `name too long`.
    NameTooLong,
    /// A number where a name is required: `invalid vm name`.
    NumberNotName,
}

impl IdError {
    /// The warning vmctl prints before `invalid id: <word>`, if any.
    pub fn warning(self) -> Option<&'static str> {
        match self {
            IdError::LooksLikeOption => None,
            IdError::NameTooLong => Some("name too long"),
            IdError::NumberNotName => Some("invalid vm name"),
        }
    }
}

/// strtonum(word, 0, UINT32_MAX): decimal with optional leading blanks and
/// sign, nothing after the digits.
fn strtonum_u32(word: &str) -> Option<u32> {
    let trimmed = word.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'+') => (false, &trimmed[1..]),
        Some(b'-') => (true, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    if negative {
        return (value == 0).then_some(0);
    }
    u32::try_from(value).ok()
}

/// Parses an `id` operand: a number selects by id, anything else by name.
/// `need_name` refuses numbers (as `receive` does).
pub fn parse_vm_ref(word: &str, need_name: bool) -> Result<VmRef, IdError> {
    if word.starts_with('-') {
        return Err(IdError::LooksLikeOption);
    }
    if let Some(id) = strtonum_u32(word) {
        if need_name {
            return Err(IdError::NumberNotName);
        }
        return Ok(VmRef::Id(id));
    }
    if word.len() > MAX_NAME_LEN {
        return Err(IdError::NameTooLong);
    }
    Ok(VmRef::Name(word.to_string()))
}

/// Why a name cannot be given to a new VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// `vm name too long`
    TooLong,
    /// `invalid VM name`
    Invalid,
}

/// Checks the rules for naming a new VM: ASCII letters, digits, `.`, `-`,
/// `_`, not starting with one of the three punctuation characters, at most
/// 63 characters. A leading digit is allowed, as in vmd's implementation.
pub fn validate_vm_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    let mut bytes = name.bytes();
    match bytes.next() {
        None | Some(b'-' | b'.' | b'_') => return Err(NameError::Invalid),
        Some(_) => {}
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(NameError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert_eq!(parse_vm_ref("1", false), Ok(VmRef::Id(1)));
        assert_eq!(parse_vm_ref("+7", false), Ok(VmRef::Id(7)));
        assert_eq!(parse_vm_ref(" 7", false), Ok(VmRef::Id(7)));
        assert_eq!(parse_vm_ref("0", false), Ok(VmRef::Id(0)));
        assert_eq!(parse_vm_ref("4294967295", false), Ok(VmRef::Id(u32::MAX)));
        assert_eq!(
            parse_vm_ref("4294967296", false),
            Ok(VmRef::Name("4294967296".into()))
        );
        assert_eq!(parse_vm_ref("0x10", false), Ok(VmRef::Name("0x10".into())));
        assert_eq!(parse_vm_ref("web1", false), Ok(VmRef::Name("web1".into())));
        assert_eq!(parse_vm_ref("-a", false), Err(IdError::LooksLikeOption));
        assert_eq!(parse_vm_ref("12", true), Err(IdError::NumberNotName));
        assert_eq!(
            parse_vm_ref(&"a".repeat(63), false),
            Ok(VmRef::Name("a".repeat(63)))
        );
        assert_eq!(
            parse_vm_ref(&"a".repeat(64), false),
            Err(IdError::NameTooLong)
        );
    }

    #[test]
    fn new_names() {
        assert_eq!(validate_vm_name("web-1.example_x"), Ok(()));
        assert_eq!(validate_vm_name("9front"), Ok(()));
        assert_eq!(validate_vm_name("-x"), Err(NameError::Invalid));
        assert_eq!(validate_vm_name(".x"), Err(NameError::Invalid));
        assert_eq!(validate_vm_name("_x"), Err(NameError::Invalid));
        assert_eq!(validate_vm_name("a b"), Err(NameError::Invalid));
        assert_eq!(validate_vm_name(""), Err(NameError::Invalid));
        assert_eq!(validate_vm_name(&"a".repeat(64)), Err(NameError::TooLong));
    }
}
