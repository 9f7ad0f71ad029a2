//! Every message vmd decodes from a peer it does not trust: control
//! requests from any local user, and what a (possibly compromised) VM
//! process sends back. Decoding arbitrary bytes must fail cleanly, and what
//! decodes must encode back to something that decodes the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::control::{Request, Response};
use proto::vmchannel::{FromVm, ToVm};

fn round_trip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = postcard::from_bytes::<T>(data) {
        let bytes = postcard::to_stdvec(&value).expect("a decoded message encodes");
        let again: T = postcard::from_bytes(&bytes).expect("an encoded message decodes");
        assert_eq!(value, again);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Request>(data);
    round_trip::<Response>(data);
    round_trip::<ToVm>(data);
    round_trip::<FromVm>(data);
});
