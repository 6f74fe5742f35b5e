//! Entry points for the fuzz targets in `fuzz/`. The logic lives here so that it is built,
//! linted and unit-tested with the crate; the targets only forward bytes.

use crate::format;
use crate::keys::PublicKey;
use crate::policy::{Policy, TrustedKey, UnixTime};
use crate::verify::{inspect, verify};

/// Feeds arbitrary bytes to the container parser, the envelope and manifest readers and the
/// verifier. Panics (so the fuzzer reports it) if any of them panics, or if a container
/// that parses is not re-encoded to exactly the same bytes (the format is canonical).
pub fn bundle(data: &[u8]) {
    if let Ok(raw) = format::parse(data) {
        let comps: Vec<_> = raw.sections.iter().map(|s| (s.role, s.data)).collect();
        let again = format::encode(&comps, raw.envelope);
        assert_eq!(
            again.as_deref().ok(),
            Some(data),
            "parse/encode is not canonical"
        );
    }
    let _ = inspect(data);
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
    if let Ok(policy) = Policy::new(
        vec![TrustedKey::new(PublicKey::from_verifying_key(key))],
        None,
        0,
        Default::default(),
    ) {
        let _ = verify(data.to_vec(), &policy, UnixTime(0));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn survives_degenerate_inputs() {
        super::bundle(&[]);
        super::bundle(&crate::format::MAGIC);
        super::bundle(&[0xff; 64]);
    }
}
