//! The newc reader on arbitrary bytes; whatever it reads must write back and read again
//! to the same entries.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_builder::fuzzing::cpio(data));
