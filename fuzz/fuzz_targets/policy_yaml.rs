//! policy.yaml, runtime.yaml and kconfig policy YAML from arbitrary bytes: parsed or refused.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    jek_config::fuzzing::policy(data);
    jek_build_config::fuzzing::kconfig_policy(data);
});
