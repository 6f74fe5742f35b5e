//! Writing an evidence directory whole or not at all: the files go into a temporary
//! sibling directory that is renamed into place.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::CliError;

/// Writes `files` as the directory `out`, which must not exist yet (or be empty).
pub fn write(out: &Path, files: &BTreeMap<&'static str, Vec<u8>>) -> Result<(), CliError> {
    let err = |source| CliError::Evidence {
        path: out.to_path_buf(),
        source,
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        std::fs::create_dir_all(&tmp)?;
        for (file, bytes) in files {
            std::fs::write(tmp.join(file), bytes)?;
        }
        if out.is_dir() {
            // An empty directory may be replaced; anything else is refused by rename.
            std::fs::remove_dir(out)?;
        }
        std::fs::rename(&tmp, out)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map_err(err)
}
