//! The validated verification policy. Built from already-parsed values (the CLI reads the
//! YAML file); every rule is checked once, here, before any bundle is looked at.

use std::collections::BTreeSet;

use crate::keys::{KeyId, PublicKey};

/// Seconds since the Unix epoch, UTC. Verification takes the current time as an argument so
/// that tests and offline appraisers can choose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// The system clock, or the epoch if the clock is before it.
    pub fn now() -> Self {
        UnixTime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
    }
}

/// Shown as RFC 3339 UTC (`2027-01-01T00:00:00Z`), as policies write times; a time past
/// year 9999 is shown as seconds.
impl std::fmt::Display for UnixTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(self.0)) {
            Some(t) if self.0 < 253_402_300_800 => {
                write!(f, "{}", humantime::format_rfc3339_seconds(t))
            }
            _ => write!(f, "{} seconds after the epoch", self.0),
        }
    }
}

/// A trusted signing key with an optional validity window (inclusive bounds, compared with
/// the verification time).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// The key.
    pub key: PublicKey,
    /// Not valid before this time.
    pub not_before: Option<UnixTime>,
    /// Not valid after this time.
    pub not_after: Option<UnixTime>,
}

impl TrustedKey {
    /// A key valid at all times.
    pub fn new(key: PublicKey) -> Self {
        TrustedKey {
            key,
            not_before: None,
            not_after: None,
        }
    }
}

/// Why a policy is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// No trusted key at all.
    #[error("the policy trusts no key")]
    NoTrustedKeys,
    /// The same key listed twice.
    #[error("trusted key {key_id} is listed twice")]
    DuplicateKey {
        /// The key.
        key_id: KeyId,
    },
    /// Threshold of zero.
    #[error("threshold must be at least 1")]
    ZeroThreshold,
    /// Threshold larger than the number of trusted keys.
    #[error("threshold {threshold} is more than the {keys} trusted keys")]
    ThresholdTooHigh {
        /// The threshold.
        threshold: usize,
        /// Number of trusted keys.
        keys: usize,
    },
    /// A validity window that ends before it starts.
    #[error("trusted key {key_id} has not_after before not_before")]
    EmptyValidity {
        /// The key.
        key_id: KeyId,
    },
}

/// Ed25519 signers inside the bundle's own envelope: `threshold` distinct keys of
/// `trusted`, each within its validity window. Checked once, when it is built.
#[derive(Debug, Clone)]
pub struct KeyRule {
    trusted: Vec<TrustedKey>,
    threshold: usize,
}

impl KeyRule {
    /// `threshold` (default 1) distinct keys of `trusted` must sign.
    pub fn new(trusted: Vec<TrustedKey>, threshold: Option<usize>) -> Result<Self, PolicyError> {
        if trusted.is_empty() {
            return Err(PolicyError::NoTrustedKeys);
        }
        let mut seen = BTreeSet::new();
        for t in &trusted {
            if !seen.insert(t.key.id()) {
                return Err(PolicyError::DuplicateKey { key_id: t.key.id() });
            }
            if let (Some(nb), Some(na)) = (t.not_before, t.not_after) {
                if na < nb {
                    return Err(PolicyError::EmptyValidity { key_id: t.key.id() });
                }
            }
        }
        let threshold = threshold.unwrap_or(1);
        if threshold == 0 {
            return Err(PolicyError::ZeroThreshold);
        }
        if threshold > trusted.len() {
            return Err(PolicyError::ThresholdTooHigh {
                threshold,
                keys: trusted.len(),
            });
        }
        Ok(KeyRule { trusted, threshold })
    }

    /// The trusted keys.
    pub fn trusted(&self) -> &[TrustedKey] {
        &self.trusted
    }

    /// How many distinct trusted keys must sign (at least 1).
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    pub(crate) fn find(&self, id: &KeyId) -> Option<&TrustedKey> {
        self.trusted.iter().find(|t| t.key.id() == *id)
    }
}

/// Who must have signed a bundle. An enum, not a threshold of zero plus a flag: each way a
/// policy can accept a bundle is a variant, and [`crate::verify_bundle`] matches on it.
#[derive(Debug, Clone)]
pub enum SignerRule {
    /// Ed25519 signatures in the envelope by trusted keys.
    Keys(KeyRule),
    /// Only a detached Sigstore signature over the bundle file (the envelope's own
    /// signatures are not required, but a revoked signer among them still rejects).
    #[cfg(feature = "sigstore")]
    Detached(std::sync::Arc<crate::sigstore::SigstorePolicy>),
    /// Both: the Ed25519 rule and a detached Sigstore signature.
    #[cfg(feature = "sigstore")]
    Both(KeyRule, std::sync::Arc<crate::sigstore::SigstorePolicy>),
}

impl SignerRule {
    /// The Ed25519 rule, if the policy has one.
    pub fn keys(&self) -> Option<&KeyRule> {
        match self {
            SignerRule::Keys(k) => Some(k),
            #[cfg(feature = "sigstore")]
            SignerRule::Both(k, _) => Some(k),
            #[cfg(feature = "sigstore")]
            SignerRule::Detached(_) => None,
        }
    }

    /// The Sigstore rule, if the policy has one.
    #[cfg(feature = "sigstore")]
    pub fn detached(&self) -> Option<&crate::sigstore::SigstorePolicy> {
        match self {
            SignerRule::Keys(_) => None,
            SignerRule::Detached(d) | SignerRule::Both(_, d) => Some(d),
        }
    }
}

/// What a bundle must satisfy to be accepted.
#[derive(Debug, Clone)]
pub struct Policy {
    signers: SignerRule,
    min_security_version: u64,
    revoked: BTreeSet<KeyId>,
    revoked_keys: Vec<PublicKey>,
}

impl Policy {
    /// Builds a policy: `threshold` distinct trusted keys must sign (default 1), the bundle's
    /// security version must be at least `min_security_version`, and a signature by any
    /// revoked key rejects the bundle outright. A key may be both trusted and revoked:
    /// revocation wins, so revoking never requires editing the trusted list.
    pub fn new(
        trusted: Vec<TrustedKey>,
        threshold: Option<usize>,
        min_security_version: u64,
        revoked: BTreeSet<KeyId>,
    ) -> Result<Self, PolicyError> {
        Ok(Policy::with_signers(
            SignerRule::Keys(KeyRule::new(trusted, threshold)?),
            min_security_version,
            revoked,
        ))
    }

    /// A policy with any signer rule.
    pub fn with_signers(
        signers: SignerRule,
        min_security_version: u64,
        revoked: BTreeSet<KeyId>,
    ) -> Self {
        let mut policy = Policy {
            signers,
            min_security_version,
            revoked,
            revoked_keys: Vec::new(),
        };
        policy.resolve_revoked();
        policy
    }

    /// Also revokes these public keys. A key known by its public half is recognised by
    /// trying it against every signature, whatever key ID the signature claims (or none):
    /// stripping or forging a keyid does not hide a revoked signer.
    #[must_use]
    pub fn with_revoked_keys(mut self, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        for key in keys {
            self.revoked.insert(key.id());
            self.revoked_keys.push(key);
        }
        self.resolve_revoked();
        self
    }

    /// Keeps `revoked_keys` = every revoked key whose public half is known (given, or
    /// trusted and revoked by ID), each once.
    fn resolve_revoked(&mut self) {
        let trusted: Vec<PublicKey> = self.trusted().iter().map(|t| t.key.clone()).collect();
        for key in trusted {
            if self.revoked.contains(&key.id()) {
                self.revoked_keys.push(key);
            }
        }
        let mut seen = BTreeSet::new();
        self.revoked_keys.retain(|k| seen.insert(k.id()));
    }

    /// The revoked keys whose public half is known: each is tried against every signature.
    pub fn revoked_keys(&self) -> &[PublicKey] {
        &self.revoked_keys
    }

    /// Revoked key IDs whose public key is unknown: such a revocation catches only a
    /// signature that claims that keyid. Harmless under an Ed25519 rule (an untrusted key
    /// never counts towards the threshold), but a detached-only policy must name the key.
    pub fn unresolved_revocations(&self) -> impl Iterator<Item = &KeyId> {
        self.revoked
            .iter()
            .filter(|id| !self.revoked_keys.iter().any(|k| k.id() == **id))
    }

    /// Who must have signed.
    pub fn signers(&self) -> &SignerRule {
        &self.signers
    }

    /// The trusted Ed25519 keys (none under a detached-only rule).
    pub fn trusted(&self) -> &[TrustedKey] {
        self.signers.keys().map_or(&[], KeyRule::trusted)
    }

    /// How many distinct trusted keys must sign (0 under a detached-only rule).
    pub fn threshold(&self) -> usize {
        self.signers.keys().map_or(0, KeyRule::threshold)
    }

    /// The lowest acceptable security version.
    pub fn min_security_version(&self) -> u64 {
        self.min_security_version
    }

    /// Whether a key is revoked.
    pub fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked.contains(id)
    }

    /// The revoked key IDs.
    pub fn revoked(&self) -> &BTreeSet<KeyId> {
        &self.revoked
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_show_as_rfc3339() {
        assert_eq!(
            super::UnixTime(1_893_456_000).to_string(),
            "2030-01-01T00:00:00Z"
        );
        assert_eq!(
            super::UnixTime(u64::MAX).to_string(),
            format!("{} seconds after the epoch", u64::MAX)
        );
    }
}
