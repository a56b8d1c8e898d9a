//! The shared store conformance suite, run against SQLCipher.

dopus_core::store_conformance_tests!(super::temp_store);
