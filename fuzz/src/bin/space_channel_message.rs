//! A channel message of a space (`ChannelMessage::from_json`, what members relay and store) and
//! the payload its ciphertext opens to (`ChannelPayload::<ChatContent>::from_json`).
#![no_main]

use dopus_proto::content::ChatContent;
use dopus_proto::space::{ChannelMessage, ChannelPayload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ChannelMessage::from_json(data) {
        let json = m.to_json().expect("a decoded message encodes");
        assert_eq!(ChannelMessage::from_json(&json).ok(), Some(m));
    }
    if let Ok(p) = ChannelPayload::<ChatContent>::from_json(data) {
        let json = p.to_json().expect("a decoded payload encodes");
        assert_eq!(
            ChannelPayload::<ChatContent>::from_json(&json).ok(),
            Some(p)
        );
    }
});
