//! The TCG event log reader on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_measure::eventlog::fuzz(data));
