//! The TPM structure parsers of attestation (TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_attest::tpm2::fuzz(data));
