//! Key bundles and device certificates as published to and fetched from the server: parsing
//! and full verification (signatures included) never panic, whatever the bytes.
#![no_main]

use dopus_proto::bundle::{ClaimedBundle, DeviceBundle, DeviceCertificate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = serde_json::from_slice::<DeviceBundle>(data) {
        let user = bundle.certificate.user_id;
        let _ = bundle.verify(&user);
    }
    if let Ok(bundle) = serde_json::from_slice::<ClaimedBundle>(data) {
        let user = bundle.certificate.user_id;
        let _ = bundle.verify(&user);
    }
    if let Ok(cert) = serde_json::from_slice::<DeviceCertificate>(data) {
        let user = cert.user_id;
        let _ = cert.verify(&user);
    }
});
