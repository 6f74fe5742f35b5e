//! The init's console protocol on arbitrary lines: a status line either is not one, is
//! refused, or encodes back to at most 4096 bytes that parse again.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_pod::console::fuzz(data));
