//! A message of the blob data channel (`BlobFrame::decode`, file transfers), and the request id
//! peek the provider uses before decoding.
#![no_main]

use dopus_proto::transfer::BlobFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = BlobFrame::peek_request(data);
    if let Ok(frame) = BlobFrame::decode(data) {
        let bytes = frame.encode().expect("a decoded frame encodes");
        assert_eq!(BlobFrame::decode(&bytes).ok(), Some(frame));
    }
});
