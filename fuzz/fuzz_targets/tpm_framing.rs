//! The TPM bridge's command framing: sizes in bounds, exactly the declared bytes read.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_tpm::bridge::fuzz(data));
