//! A data channel message: a single envelope, a hello, or length-prefixed frames.
#![no_main]

use dopus_proto::channel::{ChannelMessage, LENGTH_BYTES, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ChannelMessage::Envelopes(envelopes)) = decode(data) {
        // Every byte after the header belongs to exactly one envelope.
        let total: usize = envelopes.iter().map(|e| e.len() + LENGTH_BYTES).sum();
        assert_eq!(total + 1, data.len());
        assert!(envelopes.iter().all(|e| !e.is_empty()));
    }
});
