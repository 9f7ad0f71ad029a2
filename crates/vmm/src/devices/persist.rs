//! How a device's state leaves one VM and enters another (`vmctl send`,
//! `vmctl receive`): each device turns its guest-visible state into bytes
//! of its own format and takes such bytes back. The stream
//! ([`crate::snapshot`]) carries one record per device and never looks
//! inside, so a device's state type lives next to the device (a
//! `persist.rs` in its folder) and changes with it.
//!
//! The bytes are the postcard encoding of the device's state struct
//! (docs/send-stream.md). Decoding is strict: a record that does not
//! decode completely, or whose values the device cannot take, is refused
//! rather than half applied.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A device whose state can be saved and restored.
pub trait Persist {
    /// Saves what the guest can observe. Called with the VM paused and the
    /// device's I/O quiesced.
    fn save(&self) -> Result<Vec<u8>, PersistError>;
    /// Takes over a state saved by a device built from the same
    /// description. Called before the VM's vCPUs first run.
    fn restore(&mut self, state: &[u8]) -> Result<(), PersistError>;
}

/// Why a state could not be saved or restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistError(pub String);

impl PersistError {
    pub fn new(what: impl Into<String>) -> PersistError {
        PersistError(what.into())
    }
}

impl std::fmt::Display for PersistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PersistError {}

/// The bytes of a state.
pub fn encode<T: Serialize>(state: &T) -> Vec<u8> {
    // Encoding plain structs into a Vec cannot fail.
    postcard::to_stdvec(state).unwrap_or_default()
}

/// A state from its bytes; every byte must belong to it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PersistError> {
    match postcard::take_from_bytes(bytes) {
        Ok((state, [])) => Ok(state),
        Ok((_, rest)) => Err(PersistError(format!(
            "{} bytes after the state",
            rest.len()
        ))),
        Err(e) => Err(PersistError(format!("state does not decode: {e}"))),
    }
}

/// Refuses a restored value a device cannot take.
pub fn check(ok: bool, what: &str) -> Result<(), PersistError> {
    if ok {
        Ok(())
    } else {
        Err(PersistError::new(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        a: u32,
        b: Vec<u8>,
    }

    #[test]
    fn round_trip_and_strictness() {
        let s = Sample {
            a: 7,
            b: vec![1, 2, 3],
        };
        let mut bytes = encode(&s);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
        bytes.push(0);
        assert!(decode::<Sample>(&bytes).is_err(), "trailing byte");
        assert!(decode::<Sample>(&bytes[..2]).is_err(), "truncated");
    }
}
