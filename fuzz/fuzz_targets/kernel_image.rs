//! bzImage setup-header and ELF readers on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = jek_builder::kernel_image::examine(data);
});
