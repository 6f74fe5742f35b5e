//! Bundle container, envelope, manifest and verifier on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_verifier::fuzzing::bundle(data));
