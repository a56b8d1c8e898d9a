//! The store's key file as read from disk at unlock (`dopus-store`): parsing never panics, and
//! what parses writes back to the same file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(same) = dopus_store::fuzzing::key_file(text)
    {
        assert!(same, "a key file that parses must write back to itself");
    }
});
