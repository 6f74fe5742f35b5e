//! A build recipe as a validated value: what `jek build` compiles, packs and signs. The
//! recipe file (YAML) is read by `jek-config`, which resolves every path against the
//! recipe's directory and reads the kconfig policy it names.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The kernel source Debian's `linux-source-6.1` package installs.
pub const DEFAULT_KERNEL_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";

/// A file to place in the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// Host path.
    pub src: PathBuf,
    /// Path in the guest, without the leading `/`.
    pub dst: String,
    /// Permission bits.
    pub mode: u32,
}

/// The application the init starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// Container name.
    pub name: String,
    /// Executable and leading arguments.
    pub command: Vec<String>,
    /// Further arguments.
    pub args: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
}

/// A validated recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// Kernel source tarball or directory.
    pub source: PathBuf,
    /// kconfig fragments, in order.
    pub fragments: Vec<PathBuf>,
    /// kconfig policy file.
    pub policy: Option<PathBuf>,
    /// Whether to carry the ELF vmlinux too.
    pub vmlinux: bool,
    /// Kernel command line.
    pub cmdline: String,
    /// The static init binary.
    pub init: PathBuf,
    /// Extra initramfs files.
    pub files: Vec<ExtraFile>,
    /// The application.
    pub app: App,
    /// Signing keys named by the recipe.
    pub keys: Vec<PathBuf>,
    /// The build time the recipe fixes (`source_date_epoch:`), if any.
    pub source_date_epoch: Option<u64>,
    /// The recipe as JSON (for provenance).
    pub as_json: serde_json::Value,
    /// The kconfig policy `policy` names, already parsed and validated.
    pub kconfig_policy: Option<crate::kconfig::Policy>,
}

impl Recipe {
    /// The build time when `SOURCE_DATE_EPOCH` is not set: the recipe's
    /// `source_date_epoch`, else the kernel source's modification time (for Debian's
    /// `linux-source` tarball, the time of the package's release). A function of the
    /// inputs alone, so an unchanged build hits the kernel cache. (A source that cannot be
    /// read gives 0; the build then fails on it by name.)
    pub fn default_epoch(&self) -> u64 {
        self.source_date_epoch.unwrap_or_else(|| {
            std::fs::metadata(&self.source)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_default_epoch_is_a_function_of_the_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("linux.tar.xz");
        std::fs::write(&source, b"x").unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_650_000_000);
        std::fs::File::options()
            .write(true)
            .open(&source)
            .unwrap()
            .set_modified(t)
            .unwrap();
        let mut r = Recipe {
            name: "n".into(),
            version: "1".into(),
            security_version: 1,
            source,
            fragments: vec![],
            policy: None,
            vmlinux: false,
            cmdline: String::new(),
            init: PathBuf::new(),
            files: vec![],
            app: App {
                name: "a".into(),
                command: vec![],
                args: vec![],
                env: Default::default(),
            },
            keys: vec![],
            source_date_epoch: None,
            as_json: serde_json::Value::Null,
            kconfig_policy: None,
        };
        assert_eq!(r.default_epoch(), 1_650_000_000);
        r.source_date_epoch = Some(7);
        assert_eq!(r.default_epoch(), 7);
    }
}
