//! A signed attestation result (an EAR JWT) from arbitrary bytes: refused, never accepted
//! without the verifier's key.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_attest::signed::fuzz(data));
