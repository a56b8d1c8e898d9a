//! An invite code, as pasted or scanned (`InviteCode::parse`, bech32m text) and its binary form
//! (`InviteCode::from_bytes`).
#![no_main]

use dopus_proto::space::InviteCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(code) = InviteCode::from_bytes(data) {
        let bytes = code.to_bytes().expect("a decoded code encodes");
        assert_eq!(InviteCode::from_bytes(&bytes).ok(), Some(code));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(code) = InviteCode::parse(text)
    {
        let again = code.to_text().expect("a parsed code prints");
        assert_eq!(InviteCode::parse(&again).ok(), Some(code));
    }
});
