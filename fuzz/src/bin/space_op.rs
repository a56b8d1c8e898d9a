//! A space operation as members exchange and store it (`SpaceOp::from_json`), then its
//! signature check (`SpaceOp::verify`), which must refuse, never panic.
#![no_main]

use dopus_proto::space::SpaceOp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(op) = SpaceOp::from_json(data) {
        let _ = op.verify();
        let json = op.to_json().expect("a decoded op encodes");
        assert_eq!(SpaceOp::from_json(&json).ok(), Some(op));
    }
});
