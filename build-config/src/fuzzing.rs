//! Entry points for the fuzz targets in `fuzz/` (`policy_yaml` feeds the kconfig policy
//! parser here besides `jek-config`'s parsers): the targets only forward bytes.

/// A kconfig policy document from arbitrary bytes: parsed or refused, never a panic.
pub fn kconfig_policy(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::kconfig::parse(text);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn survives_degenerate_inputs() {
        for d in [
            &b""[..],
            b"---",
            b"required: [A]\n",
            b"\xff",
            b"forbidden: 7\n",
        ] {
            super::kconfig_policy(d);
        }
    }
}
