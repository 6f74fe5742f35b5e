//! Sigstore bundle JSON and cosign signatures: never a panic, never an approval.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_verifier::sigstore::fuzz(data));
