//! Entry points for the fuzz targets in `fuzz/` (`policy_yaml`, which also feeds the
//! runtime-file parser here and the kconfig policy parser in `jek-build-config`, and
//! `pod_yaml`): the logic is built, linted and unit-tested with the crate; the targets only
//! forward bytes.

use std::path::Path;

/// A policy document from arbitrary bytes: parsed or refused, never a panic. Files it
/// names are resolved against a directory that does not exist, so nothing is read.
pub fn policy(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::policy::parse(text, Path::new("/nonexistent/jek-fuzz"));
        // The containerd shim's runtime file: the same YAML front end.
        let _ = crate::runtime::parse(
            text,
            Path::new("/nonexistent/jek-fuzz/runtime.yaml"),
            Path::new("/nonexistent/jek-fuzz"),
        );
    }
}

/// A pod document from arbitrary bytes: refused, or a spec whose names are DNS-1123
/// labels and whose pod segment encodes and is read back by the guest's own reader.
pub fn pod(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = crate::pod::parse(text) {
        assert!(jek_pod::spec::check_label(&spec.name).is_ok());
        let json = serde_json::to_vec(&spec).unwrap_or_default();
        let back = jek_pod::PodSpec::from_json(&json);
        assert_eq!(
            back.ok().as_ref(),
            Some(&spec),
            "a parsed pod is one the guest reads"
        );
        // The pod file the containerd shim writes reads back as the same pod.
        let rendered = crate::pod::render(&spec);
        assert_eq!(
            crate::pod::parse(&rendered).ok().as_ref(),
            Some(&spec),
            "{rendered}"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn survives_degenerate_inputs() {
        for d in [
            &b""[..],
            b"---",
            b"min_security_version: 1\n",
            b"\xff",
            b"kind: Pod\n",
        ] {
            super::policy(d);
            super::pod(d);
        }
        super::pod(b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - {name: a, command: [/x]}\n");
    }
}
