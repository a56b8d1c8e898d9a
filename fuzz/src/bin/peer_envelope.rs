//! A peer envelope as it arrives from the relay, the mailbox or a data channel.
#![no_main]

use dopus_proto::peer::PeerEnvelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = PeerEnvelope::from_json(data) {
        let json = envelope.to_json().expect("a decoded envelope encodes");
        assert_eq!(PeerEnvelope::from_json(&json).ok(), Some(envelope));
    }
});
