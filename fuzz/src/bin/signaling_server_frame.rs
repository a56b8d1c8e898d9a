//! What the client reads from the server: `ServerFrame::parse`, the round trip of what parses,
//! and the hand-written `deliver` encoding against serde's.
#![no_main]

use dopus_proto::signaling::{ServerFrame, deliver_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frame) = ServerFrame::parse(text) else {
        return;
    };
    let json = frame.to_json();
    assert_eq!(ServerFrame::parse(&json).ok().as_ref(), Some(&frame));
    if let ServerFrame::Deliver {
        kind,
        from,
        payload,
        sent_at,
        mailbox_id,
    } = &frame
    {
        assert_eq!(deliver_json(*kind, from, payload, *sent_at, *mailbox_id), json);
    }
});
