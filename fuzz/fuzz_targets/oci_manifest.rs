//! OCI manifests and referrers indexes from a registry: bounded, checked, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jek_oci::artifact::fuzz(data));
