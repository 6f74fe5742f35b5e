//! Entry points for the fuzz targets in `fuzz/`, kept here so they build and are tested
//! with the crate. Panicking is how a fuzz target reports a broken invariant.
#![allow(clippy::expect_used)]

use crate::{cpio, kconfig};

/// Reads an archive; anything read must survive write -> read unchanged (as a set).
pub fn cpio(data: &[u8]) {
    if let Ok(entries) = cpio::read(data) {
        if let Ok(bytes) = cpio::write(&entries, 0) {
            let again = cpio::read(&bytes);
            assert!(again.is_ok(), "an archive jek wrote does not read back");
            if let Ok(again) = again {
                for e in &entries {
                    assert!(again.contains(e), "entry {:?} lost in a round trip", e.path);
                }
            }
        }
    }
    // The unpacker's reader (a pod sandbox's init reads added containers with it): what
    // it accepts writes back to a tree that reads the same.
    if let Ok(members) = cpio::read_tree(data) {
        if let Ok(bytes) = cpio::write_tree(&members, 0) {
            let again = cpio::read_tree(&bytes).expect("a tree jek wrote does not read back");
            // Every name with what it is (a hard link's names share the file); the
            // writer adds missing parents and orders names by path.
            let names = |ms: &[cpio::Member]| {
                ms.iter()
                    .flat_map(|m| {
                        std::iter::once(&m.path).chain(&m.links).map(move |p| {
                            (p.clone(), m.perm, m.uid, m.gid, m.mtime, m.kind.clone())
                        })
                    })
                    .collect::<Vec<_>>()
            };
            let after = names(&again);
            for name in names(&members) {
                assert!(
                    after.contains(&name),
                    "{:?} changed in a round trip",
                    name.0
                );
            }
        }
    }
}

/// Parses text as a fragment; whatever parses must merge into itself and check clean.
pub fn kconfig(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = kconfig::Config::parse(text, "fuzz") else {
        return;
    };
    let frags = vec![("fuzz".to_string(), cfg)];
    let merged = kconfig::merge("", &frags).expect("one fragment cannot conflict with itself");
    let resolved = kconfig::Config::parse(&merged, "merged").expect("merge output parses");
    assert!(
        kconfig::check(&resolved, &frags, None).is_empty(),
        "a merged fragment is honoured"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn degenerate_inputs() {
        super::cpio(b"070701");
        super::cpio(&[]);
        super::kconfig(b"CONFIG_A=y\n# CONFIG_B is not set\n");
        super::kconfig(b"\xff");
    }
}
