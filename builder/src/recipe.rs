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
    /// The recipe as JSON (for provenance).
    pub as_json: serde_json::Value,
    /// The kconfig policy `policy` names, already parsed and validated.
    pub kconfig_policy: Option<crate::kconfig::Policy>,
}
