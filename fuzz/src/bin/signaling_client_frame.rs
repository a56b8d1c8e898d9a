//! What the server reads from every client: `ClientFrame::parse` and the relay fast path
//! `ClientFrame::parse_relay`, which must agree with it, and the round trip of what parses.
#![no_main]

use dopus_proto::signaling::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 (the WebSocket layer refuses anything else).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let full = ClientFrame::parse(text);
    if let Some(r) = ClientFrame::parse_relay(text) {
        let fast = ClientFrame::Relay {
            id: r.id,
            to: r.to,
            to_device: r.to_device,
            payload: r.payload.into_owned(),
            store: r.store,
        };
        assert_eq!(full.as_ref(), Ok(&fast), "the relay fast path disagrees");
    }
    if let Ok(frame) = full {
        assert_eq!(ClientFrame::parse(&frame.to_json()), Ok(frame));
    }
});
