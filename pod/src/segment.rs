//! The pod segment: a pod spec delivered to the guest without touching the signed bundle.
//!
//! The loader appends this small `newc` archive after the bundle's (verified) initramfs.
//! Linux unpacks concatenated archives in order, so `/etc/jek/pod.json` from the segment
//! lands on top of the bundle's root file system, and the init prefers it over the
//! bundle's own `/etc/jek/app.json`. The segment is measured on its own (PCR 12), so the
//! pod's configuration is attested separately from the kernel bundle.
//!
//! The bytes are a pure function of the spec: compact JSON in field order, one file
//! (`etc/jek/pod.json`, mode 0644) under its two parent directories, every mtime 0. Anyone
//! can recompute them from the same spec (`jek predict`, attestation reference values).

use crate::cpio::{self, Entry, Kind};
use crate::spec::{PodSpec, SpecError, POD_SPEC_PATH};

/// Why a pod segment cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The spec fails the checks the init would apply.
    #[error("pod spec {name:?} is unusable")]
    Spec {
        /// Pod name.
        name: String,
        /// Why.
        #[source]
        source: SpecError,
    },
    /// The archive writer refused the entry.
    #[error("cannot write the pod segment archive")]
    Archive(#[source] cpio::CpioError),
}

/// The exact bytes the init will read at `/etc/jek/pod.json`.
pub fn spec_json(spec: &PodSpec) -> Vec<u8> {
    // A derived Serialize of plain strings and vectors cannot fail.
    serde_json::to_vec(spec).unwrap_or_default()
}

/// The pod segment for `spec`: a complete `newc` archive to append after the initramfs.
pub fn segment(spec: &PodSpec) -> Result<Vec<u8>, SegmentError> {
    let json = spec_json(spec);
    // Apply the init's own checks here, so a spec the guest would refuse never boots.
    PodSpec::from_json(&json).map_err(|source| SegmentError::Spec {
        name: spec.name.clone(),
        source,
    })?;
    let entry = Entry {
        path: POD_SPEC_PATH.trim_start_matches('/').to_string(),
        perm: 0o644,
        kind: Kind::File(json),
    };
    cpio::write(&[entry], 0).map_err(SegmentError::Archive)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::spec::Container;

    fn spec(name: &str) -> PodSpec {
        PodSpec {
            agent: false,
            name: name.into(),
            hostname: None,
            containers: vec![Container {
                name: "app".into(),
                image: None,
                command: vec!["/bin/app".into()],
                args: vec![],
                env: vec![],
                working_dir: None,
            }],
        }
    }

    #[test]
    fn segment_is_deterministic_and_reads_back() {
        let a = segment(&spec("p")).unwrap();
        assert_eq!(a, segment(&spec("p")).unwrap());
        assert_ne!(a, segment(&spec("q")).unwrap());
        let entries = cpio::read(&a).unwrap();
        let file = entries
            .iter()
            .find(|e| e.path == "etc/jek/pod.json")
            .unwrap();
        let Kind::File(json) = &file.kind else {
            panic!("not a file")
        };
        assert_eq!(PodSpec::from_json(json).unwrap(), spec("p"));
    }

    #[test]
    fn unusable_spec_is_refused() {
        let mut s = spec("p");
        s.containers.clear();
        assert!(matches!(segment(&s), Err(SegmentError::Spec { .. })));
    }
}
