//! An exported evidence directory from arbitrary bytes: read or refused.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_attest::evidence::fuzz(data));
