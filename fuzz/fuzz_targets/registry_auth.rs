//! Registry auth files (containers auth.json, docker config.json): strict, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_oci::auth::fuzz(data));
