//! A poisoned kernel-cache entry is refused before anything is signed. The entry is
//! written by hand, as an attacker with write access to the cache (a restored CI cache,
//! another job) would: a config with forbidden options, a bzImage that is not the one
//! built. Needs the kernel build tools on PATH (`ci/install-deps.sh`), not a kernel build.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use jek_builder::kconfig::Policy;
use jek_builder::kernel::{
    self, input_record, KernelBuildError, KernelInputs, OutputRecord, OUTPUTS_FILE,
};

const FRAGMENT: &str = "CONFIG_64BIT=y\nCONFIG_PRINTK=y\n";
const RESOLVED: &str = "CONFIG_64BIT=y\nCONFIG_PRINTK=y\n# CONFIG_MODULES is not set\n";

fn inputs(source: &Path) -> KernelInputs {
    KernelInputs {
        source: source.to_path_buf(),
        fragments: vec![("jek.config".into(), FRAGMENT.into())],
        policy: Some(
            Policy::new(
                vec!["PRINTK".into()],
                vec!["MODULES".into(), "DEVMEM".into()],
            )
            .unwrap(),
        ),
        source_date_epoch: 1_700_000_000,
        jobs: 1,
    }
}

/// Writes a complete cache entry for `inputs` with these outputs; `record` says which
/// digests its output record claims (`None`: the true ones).
fn plant(
    cache: &Path,
    inputs: &KernelInputs,
    bzimage: &[u8],
    config: &str,
    record: Option<OutputRecord>,
) -> std::path::PathBuf {
    let (_, key) = input_record(inputs).unwrap();
    let entry = cache.join("kernel").join(&key);
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(entry.join("bzImage"), bzimage).unwrap();
    std::fs::write(entry.join("vmlinux"), b"\x7fELF vmlinux").unwrap();
    std::fs::write(entry.join("config"), config).unwrap();
    let hash = |name: &str| kernel::sha256_file(&entry.join(name)).unwrap();
    let record = record.unwrap_or_else(|| OutputRecord {
        bzimage: hash("bzImage"),
        vmlinux: hash("vmlinux"),
        config: hash("config"),
    });
    std::fs::write(
        entry.join(OUTPUTS_FILE),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    std::fs::write(entry.join("complete"), b"").unwrap();
    entry
}

fn setup() -> (tempfile::TempDir, KernelInputs) {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("linux");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("Makefile"), b"# not really a kernel\n").unwrap();
    let i = inputs(&source);
    (dir, i)
}

fn build(cache: &Path, inputs: &KernelInputs) -> Result<kernel::KernelArtifacts, KernelBuildError> {
    kernel::build(inputs, cache, &mut |_| {})
}

#[test]
fn an_intact_entry_is_used_and_says_it_came_from_the_cache() {
    let (dir, inputs) = setup();
    let cache = dir.path().join("cache");
    plant(&cache, &inputs, b"the built bzImage", RESOLVED, None);
    let artifacts = build(&cache, &inputs).unwrap();
    assert!(artifacts.cached);
}

#[test]
fn a_bzimage_that_is_not_the_one_built_is_refused() {
    let (dir, inputs) = setup();
    let cache = dir.path().join("cache");
    let entry = plant(&cache, &inputs, b"the built bzImage", RESOLVED, None);
    std::fs::write(entry.join("bzImage"), b"a backdoored bzImage").unwrap();
    let err = build(&cache, &inputs).unwrap_err();
    assert!(
        matches!(
            err,
            KernelBuildError::CacheTampered {
                file: "bzImage",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.class(), jek_errors::Class::Rejected);
}

#[test]
fn a_config_the_policy_forbids_is_refused_even_with_a_matching_record() {
    let (dir, inputs) = setup();
    let cache = dir.path().join("cache");
    // The poisoner rewrote the record too: the digests agree, the policy does not.
    let poisoned = "CONFIG_64BIT=y\nCONFIG_PRINTK=y\nCONFIG_MODULES=y\nCONFIG_DEVMEM=y\n";
    plant(&cache, &inputs, b"the built bzImage", poisoned, None);
    let err = build(&cache, &inputs).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, KernelBuildError::CachePolicy { .. }),
        "{text}"
    );
    assert!(
        text.contains("MODULES") && text.contains("DEVMEM"),
        "{text}"
    );
}

#[test]
fn a_config_edited_behind_the_record_is_refused() {
    let (dir, inputs) = setup();
    let cache = dir.path().join("cache");
    let entry = plant(&cache, &inputs, b"the built bzImage", RESOLVED, None);
    std::fs::write(entry.join("config"), format!("{RESOLVED}CONFIG_DEVMEM=y\n")).unwrap();
    assert!(matches!(
        build(&cache, &inputs).unwrap_err(),
        KernelBuildError::CacheTampered { file: "config", .. }
    ));
}

#[test]
fn a_missing_init_is_reported_before_the_kernel_compiles() {
    use jek_builder::build::{build, BuildError, BuildOptions};
    use jek_builder::recipe::{App, Recipe};
    let (dir, _) = setup();
    let source = dir.path().join("linux");
    let recipe = Recipe {
        source_date_epoch: None,
        name: "demo".into(),
        version: "1".into(),
        security_version: 1,
        source: source.clone(),
        fragments: vec![],
        policy: None,
        vmlinux: false,
        cmdline: "console=ttyS0".into(),
        init: dir.path().join("no-such-init"),
        files: vec![],
        app: App {
            name: "app".into(),
            command: vec!["/bin/app".into()],
            args: vec![],
            env: Default::default(),
        },
        keys: vec![],
        as_json: serde_json::Value::Null,
        kconfig_policy: None,
    };
    let cache = dir.path().join("cache");
    let opts = BuildOptions {
        cache: cache.clone(),
        out_dir: dir.path().join("out"),
        source_date_epoch: 1_700_000_000,
        jobs: 1,
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let err = build(&recipe, &[key], &opts, &mut |_| {}).unwrap_err();
    assert!(matches!(err, BuildError::Read { .. }), "{err}");
    assert!(err.to_string().contains("no-such-init"), "{err}");
    // Nothing of a kernel build was started.
    assert!(!cache.join("work").exists());
    assert!(!cache.join("kernel").exists());
}
