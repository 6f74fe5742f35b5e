//! Where jek keeps its state by default, and the helper programs it runs.

use std::path::PathBuf;

/// jek's data directory: $XDG_DATA_HOME/jek, else ~/.local/share/jek.
pub fn data_dir() -> PathBuf {
    jek_fsio::xdg_dir("XDG_DATA_HOME", ".local/share")
}

/// The default local CA directory for pod EK certificates: $JEK_TPM_CA, else
/// `data_dir()/tpm-ca`.
pub fn default_tpm_ca() -> PathBuf {
    std::env::var_os("JEK_TPM_CA").map_or_else(|| data_dir().join("tpm-ca"), PathBuf::from)
}

/// The default registration store: `data_dir()/registry`.
pub fn default_registry() -> PathBuf {
    data_dir().join("registry")
}

/// Where `jek-agent` listens by default: `data_dir()/agent.sock`, a Unix socket only this
/// user may reach.
pub fn default_agent_socket() -> PathBuf {
    data_dir().join("agent.sock")
}

/// A program named by an environment variable (for tests and packaging), else `default`
/// from `PATH`.
pub fn env_program(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}
