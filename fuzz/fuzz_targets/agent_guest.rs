//! The guest's init reading the agent channel: whatever arrives is refused with an error
//! or is a frame within its kind's limit that encodes back the same.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_pod::agent::fuzz_guest(data));
