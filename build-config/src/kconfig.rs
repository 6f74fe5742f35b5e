//! The kconfig policy file: which symbols a built kernel must have `=y` and which it must
//! not have at all.
//!
//! ```yaml
//! required: [VIRTIO_BLK, SECCOMP]   # must be =y
//! forbidden: [MODULES, DEVMEM]      # must be neither =y nor =m
//! ```

use std::path::Path;

use jek_builder::kconfig::{KconfigError, Policy};
use serde::Deserialize;

use jek_config::MAX_CONFIG_SIZE;

use crate::BuildConfigError;

/// Why a kconfig policy document is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KconfigPolicyError {
    /// Not YAML of the right shape.
    #[error("not a valid kconfig policy document")]
    Yaml(#[source] serde_yaml::Error),
    /// Symbol names or rules are invalid.
    #[error("invalid kconfig policy")]
    Invalid(#[source] KconfigError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    forbidden: Vec<String>,
}

/// Parses and validates a kconfig policy document.
pub fn parse(text: &str) -> Result<Policy, KconfigPolicyError> {
    let doc: PolicyDoc = serde_yaml::from_str(text).map_err(KconfigPolicyError::Yaml)?;
    Policy::new(doc.required, doc.forbidden).map_err(KconfigPolicyError::Invalid)
}

/// Reads and parses a kconfig policy file.
pub fn load(path: &Path) -> Result<Policy, BuildConfigError> {
    let text = jek_config::read_text("kconfig policy", path, MAX_CONFIG_SIZE)?;
    parse(&text).map_err(|source| BuildConfigError::KconfigPolicy {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn policy_yaml_is_validated() {
        assert!(parse("required: [A]\nforbidden: [B]\n").is_ok());
        assert!(matches!(
            parse("required: [CONFIG_A]\n"),
            Err(KconfigPolicyError::Invalid(KconfigError::PolicySymbol(_)))
        ));
        assert!(matches!(
            parse("required: [A]\nforbidden: [A]\n"),
            Err(KconfigPolicyError::Invalid(
                KconfigError::PolicyContradiction(_)
            ))
        ));
        assert!(matches!(
            parse("require: [A]\n"),
            Err(KconfigPolicyError::Yaml(_))
        ));
    }

    #[test]
    fn the_shipped_policy_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernel-config/policy.yaml");
        let p = load(Path::new(path)).unwrap();
        assert!(p.forbidden.contains(&"MODULES".to_string()));
    }
}
