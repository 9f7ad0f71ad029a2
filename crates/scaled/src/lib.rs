//! Human-readable sizes the OpenBSD way.
//!
//! [`scan_scaled`] parses `512M`, `4.5G`, `100` exactly as OpenBSD's
//! scan_scaled(3) does (binary units, fraction truncated, a unit letter must
//! not be followed by an alphanumeric character), and [`fmt_scaled`] prints a
//! byte count in at most six characters as fmt_scaled(3) does (`1.0G`,
//! `512M`, `1023B`). vmctl, vmd and the vm.conf parser all go through here so
//! that `-m 4.5G` and `memory 4.5G` mean the same thing everywhere.

use std::fmt;

/// Why a size could not be parsed; mirrors the errno scan_scaled(3) sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// EINVAL: not a number, a bad unit, or trailing garbage.
    Invalid,
    /// ERANGE: too many digits or the scaled value overflows 64 bits.
    Range,
}

impl ScanError {
    /// The errno value the C function would have set.
    pub fn errno(self) -> i32 {
        match self {
            ScanError::Invalid => libc_einval(),
            ScanError::Range => libc_erange(),
        }
    }

    /// `strerror(errno)` text, as vmctl prints it after the failing word.
    pub fn strerror(self) -> &'static str {
        match self {
            ScanError::Invalid => "Invalid argument",
            ScanError::Range => "Numerical result out of range",
        }
    }
}

// Linux errno values; spelled out to keep this crate dependency-free.
const fn libc_einval() -> i32 {
    22
}
const fn libc_erange() -> i32 {
    34
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.strerror())
    }
}

impl std::error::Error for ScanError {}

const UNITS: [u8; 7] = *b"BKMGTPE";
const FACTORS: [i64; 7] = [1, 1 << 10, 1 << 20, 1 << 30, 1 << 40, 1 << 50, 1 << 60];
/// scan_scaled's MAX_DIGITS: three digits per unit.
const MAX_DIGITS: u32 = (UNITS.len() as u32) * 3;

/// Parses a scaled size with the exact semantics of OpenBSD's scan_scaled(3).
pub fn scan_scaled(text: &str) -> Result<i64, ScanError> {
    let bytes = text.as_bytes();
    let mut p = 0;
    while p < bytes.len() && bytes[p].is_ascii_whitespace() {
        p += 1;
    }

    let mut sign: i64 = 0;
    while p < bytes.len() && (bytes[p] == b'-' || bytes[p] == b'+') {
        if sign != 0 {
            return Err(ScanError::Invalid);
        }
        sign = if bytes[p] == b'-' { -1 } else { 1 };
        p += 1;
    }

    let mut whole: i64 = 0;
    let mut fpart: i64 = 0;
    let mut ndigits: u32 = 0;
    let mut fract_digits: u32 = 0;
    while p < bytes.len() && (bytes[p].is_ascii_digit() || bytes[p] == b'.') {
        let c = bytes[p];
        p += 1;
        if c == b'.' {
            if fract_digits > 0 {
                return Err(ScanError::Invalid);
            }
            fract_digits = 1;
            continue;
        }
        let digit = i64::from(c - b'0');
        if fract_digits > 0 {
            if fract_digits >= MAX_DIGITS - 1 {
                continue;
            }
            fract_digits += 1;
            fpart = fpart
                .checked_mul(10)
                .and_then(|v| v.checked_add(digit))
                .ok_or(ScanError::Range)?;
        } else {
            ndigits += 1;
            if ndigits >= MAX_DIGITS {
                return Err(ScanError::Range);
            }
            whole = whole
                .checked_mul(10)
                .and_then(|v| v.checked_add(digit))
                .ok_or(ScanError::Range)?;
        }
    }

    if sign != 0 {
        whole *= sign;
    }
    if p == bytes.len() {
        return Ok(whole);
    }

    let unit = bytes[p].to_ascii_uppercase();
    let Some(index) = UNITS.iter().position(|&u| u == unit) else {
        return Err(ScanError::Invalid);
    };
    if bytes.get(p + 1).is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err(ScanError::Invalid);
    }
    let factor = FACTORS[index];
    whole = whole.checked_mul(factor).ok_or(ScanError::Range)?;

    // Drop fraction digits until the scaled fraction fits, as the C code does.
    while fpart >= i64::MAX / factor {
        fpart /= 10;
        fract_digits = fract_digits.saturating_sub(1);
    }
    fpart *= factor;
    for _ in 1..fract_digits {
        fpart /= 10;
    }
    Ok(if sign == -1 {
        whole - fpart
    } else {
        whole + fpart
    })
}

/// Formats a byte count with the exact output of OpenBSD's fmt_scaled(3).
pub fn fmt_scaled(number: i64) -> String {
    if number == i64::MIN {
        return "-".to_string();
    }
    let abval = number.unsigned_abs() as i64;
    let mut number = number;
    // abval / 1024 is always below 2^60 for an i64, so a unit is always found.
    let unit = FACTORS
        .iter()
        .position(|&factor| abval / 1024 < factor)
        .unwrap_or(FACTORS.len() - 1);
    let factor = FACTORS[unit];
    let mut fract = if unit == 0 {
        0
    } else {
        (abval % factor) / FACTORS[unit - 1]
    };
    number /= factor;

    fract = (10 * fract + 512) / 1024;
    if fract >= 10 {
        number += if number >= 0 { 1 } else { -1 };
        fract = 0;
    }

    let unit_char = UNITS[unit] as char;
    if number == 0 {
        "0B".to_string()
    } else if unit == 0 || !(-99..=99).contains(&number) {
        if fract >= 5 {
            number += if number >= 0 { 1 } else { -1 };
        }
        format!("{number}{unit_char}")
    } else {
        format!("{number}.{fract}{unit_char}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tests below pin what mutation testing (scripts/mutants.sh)
    // found unchecked; each kills at least one mutant of this file.

    #[test]
    fn errors_carry_their_errno_and_text() {
        assert_eq!(ScanError::Invalid.errno(), 22);
        assert_eq!(ScanError::Range.errno(), 34);
        assert_eq!(ScanError::Invalid.to_string(), "Invalid argument");
        assert_eq!(
            ScanError::Range.to_string(),
            "Numerical result out of range"
        );
    }

    #[test]
    fn digit_limits() {
        // Twenty digits in all (leading zeros count) pass, twenty-one do not.
        assert_eq!(scan_scaled("00000000000000000001"), Ok(1));
        assert_eq!(scan_scaled("000000000000000000001"), Err(ScanError::Range));
        // At most nineteen fraction digits are read: a twentieth that would
        // overflow is ignored; nineteen nines overflow.
        assert_eq!(scan_scaled("0.10000000000000000000K"), Ok(102));
        assert_eq!(scan_scaled("0.999999999999999999K"), Ok(1023));
        assert_eq!(scan_scaled("0.9999999999999999999K"), Err(ScanError::Range));
    }

    #[test]
    fn large_fractions_lose_digits_as_the_c_code_does() {
        assert_eq!(scan_scaled("-1.5K"), Ok(-1536));
        assert_eq!(scan_scaled("-0.5K"), Ok(-512));
        assert_eq!(scan_scaled("7.5E"), Ok(8646911284551352320));
        assert_eq!(
            scan_scaled("0.1234567890123456789E"),
            Ok(115292150460684697)
        );
        // The fraction is cut to a single digit, which then scales to 0.
        assert_eq!(scan_scaled("1.999999999999999E"), Ok(1 << 60));
    }

    #[test]
    fn a_negative_fraction_carries_into_the_whole_number() {
        assert_eq!(fmt_scaled(-2024), "-2.0K");
        assert_eq!(fmt_scaled(2024), "2.0K");
    }

    /// At 100 and above the fraction is not printed but rounds the whole
    /// number: exactly .5 rounds up, as OpenBSD's fmt_scaled does.
    #[test]
    fn a_half_rounds_up_at_a_hundred_and_above() {
        assert_eq!(fmt_scaled(100 * 1024 + 512), "101K");
        assert_eq!(fmt_scaled(-(100 * 1024 + 512)), "-101K");
        assert_eq!(fmt_scaled(100 * 1024 + 460), "100K");
        assert_eq!(fmt_scaled(99 * 1024 + 512), "99.5K");
    }

    #[test]
    fn spec_examples_parse() {
        let cases: &[(&str, i64)] = &[
            ("512M", 536870912),
            ("1G", 1073741824),
            ("1g", 1073741824),
            ("4.5G", 4831838208),
            ("1.25G", 1342177280),
            ("1.5K", 1536),
            ("1.7M", 1782579),
            ("0.5M", 524288),
            ("100", 100),
            ("1048576", 1048576),
            ("128G", 137438953472),
            (" 3G", 3221225472),
            ("4.5", 4),
            ("3G,", 3221225472),
            ("-1M", -1048576),
            ("+2K", 2048),
            ("", 0),
        ];
        for &(text, want) in cases {
            assert_eq!(scan_scaled(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn spec_examples_reject() {
        for text in ["4GB", "10x", "1.2.3", "1e3", "10Mb", "+-1", "--1", "M"] {
            if text == "M" {
                // A bare unit scales zero; C accepts it too.
                assert_eq!(scan_scaled(text), Ok(0));
                continue;
            }
            assert_eq!(scan_scaled(text), Err(ScanError::Invalid), "{text:?}");
        }
        assert_eq!(scan_scaled("123456789012345678901"), Err(ScanError::Range));
        assert_eq!(scan_scaled("9223372036854775808"), Err(ScanError::Range));
        assert_eq!(scan_scaled("16E"), Err(ScanError::Range));
        assert_eq!(scan_scaled("8E"), Err(ScanError::Range));
        assert_eq!(scan_scaled("7E"), Ok(7 << 60));
    }

    #[test]
    fn spec_examples_format() {
        let cases: &[(i64, &str)] = &[
            (0, "0B"),
            (1023, "1023B"),
            (1024, "1.0K"),
            (1536, "1.5K"),
            (536870912, "512M"),
            (104857600, "100M"),
            (1073741824, "1.0G"),
            (4831838208, "4.5G"),
            (17179869184, "16.0G"),
            (137438953472, "128G"),
            (1 << 40, "1.0T"),
            (1048576, "1.0M"),
            (92_274_688, "88.0M"),
            (1047552, "1023K"),
            (1048575, "1024K"),
            (-1536, "-1.5K"),
        ];
        for &(n, want) in cases {
            assert_eq!(fmt_scaled(n), want, "{n}");
        }
    }

    #[test]
    fn format_fits_six_characters() {
        let mut n: i64 = 1;
        while n < i64::MAX / 3 {
            assert!(fmt_scaled(n).len() <= 6, "{n} -> {}", fmt_scaled(n));
            n = n * 3 + 7;
        }
    }
}
