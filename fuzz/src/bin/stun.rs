//! STUN datagrams: what the server's responder and the node's gatherer read from UDP.
#![no_main]

use dopus_proto::stun::{
    binding_request, binding_success, looks_like_stun, parse_binding_request,
    parse_binding_success,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = looks_like_stun(data);
    if let Ok(id) = parse_binding_request(data) {
        assert_eq!(parse_binding_request(&binding_request(id)).ok(), Some(id));
    }
    if let Ok((id, addr)) = parse_binding_success(data) {
        assert_eq!(
            parse_binding_success(&binding_success(id, addr)).ok(),
            Some((id, addr))
        );
    }
});
