//! Layer tar streams applied to a container root: escapes refused, never a panic, and
//! whatever is admitted always becomes a valid container segment.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_image::tree::fuzz(data));
