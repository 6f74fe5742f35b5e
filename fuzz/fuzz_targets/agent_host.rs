//! The host reading a pod sandbox's agent channel: whatever a hostile guest sends is
//! refused with an error or is a frame within its kind's limit that encodes back the same.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_pod::agent::fuzz_host(data));
