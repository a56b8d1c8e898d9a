//! A decrypted peer payload (what a peer's ciphertext opens to: chat, receipts, contact and
//! rtc contents, bulk runs).
#![no_main]

use dopus_proto::peer::PeerPayload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = PeerPayload::from_json(data) {
        let json = payload.to_json().expect("a decoded payload encodes");
        assert_eq!(PeerPayload::from_json(&json).ok(), Some(payload));
    }
});
