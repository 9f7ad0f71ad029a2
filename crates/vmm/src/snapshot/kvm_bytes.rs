//! KVM's state structures in the stream: the bytes of the structure as
//! the kernel's x86-64 ABI lays it out (linux/kvm.h), which is stable
//! across kernels. A structure of another length is refused, not padded
//! or cut.

use serde::de::{Error as _, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// One KVM structure, carried as its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmBytes<T>(pub T);

impl<T: IntoBytes + Immutable> Serialize for KvmBytes<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0.as_bytes())
    }
}

struct BytesOf<T>(std::marker::PhantomData<T>);

impl<T: FromBytes> Visitor<'_> for BytesOf<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", std::mem::size_of::<T>())
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<T, E> {
        T::read_from_bytes(bytes).map_err(|_| {
            E::custom(format!(
                "{} bytes where {} are needed",
                bytes.len(),
                std::mem::size_of::<T>()
            ))
        })
    }
}

impl<'de, T: FromBytes> Deserialize<'de> for KvmBytes<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_bytes(BytesOf(std::marker::PhantomData))
            .map(KvmBytes)
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_regs;

    #[test]
    fn exact_length_only() {
        let regs = kvm_regs {
            rip: 0x1234,
            rax: 7,
            ..Default::default()
        };
        let bytes = postcard::to_stdvec(&KvmBytes(regs)).unwrap();
        let back: KvmBytes<kvm_regs> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.0, regs);
        // One byte short: the length prefix says 143, the type needs 144.
        let mut short =
            postcard::to_stdvec(&vec![0u8; std::mem::size_of::<kvm_regs>() - 1]).unwrap();
        assert!(postcard::from_bytes::<KvmBytes<kvm_regs>>(&short).is_err());
        short.clear();
    }
}
