//! pod.yaml from arbitrary bytes: refused, or a spec the guest's own reader accepts.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_config::fuzzing::pod(data));
