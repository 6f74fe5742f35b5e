//! The kconfig parser and merger on arbitrary text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_builder::fuzzing::kconfig(data));
