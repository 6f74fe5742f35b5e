//! Image indexes, manifests and configs from a registry or a layout: typed, checked, never
//! a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_image::manifest::fuzz(data));
