//! Registry credentials as skopeo, podman and docker find them, and the client's TLS and
//! protocol options.
//!
//! Where credentials come from, first match wins:
//! 1. `JEK_REGISTRY_USERNAME` and `JEK_REGISTRY_PASSWORD`, for every registry;
//! 2. the auth files containers-auth.json(5) names, in its order: `$REGISTRY_AUTH_FILE`
//!    if set, else `$XDG_RUNTIME_DIR/containers/auth.json`,
//!    `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config`), then docker's
//!    `$DOCKER_CONFIG/config.json` (default `~/.docker`);
//! 3. anonymous access.
//!
//! In a file, the most specific key wins: `registry/namespace/repo`, then its parents,
//! then `registry`; docker's `https://index.docker.io/v1/` is `docker.io`. Only inline
//! `auth` entries (base64 of `user:password`) are read; a credential helper
//! (`credHelpers`, `credsStore`) is not run, and is logged when it would have applied.
//!
//! [`AuthFile::parse`] is pure and strict (fuzz target `registry_auth`); reading the files
//! is the thin shell around it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The largest auth file read (docker's config.json of a busy laptop is a few KiB).
pub const MAX_AUTH_FILE: u64 = 1 << 20;

/// Why credentials or client options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// An auth file cannot be read.
    #[error("cannot read registry auth file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: jek_fsio::ReadError,
    },
    /// An auth file is not the JSON containers-auth.json(5) describes.
    #[error("registry auth file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key it is under.
        reason: String,
    },
    /// The `--ca-file` holds no usable PEM certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl AuthError {
    /// The kind of failure: a file that cannot be read is the environment's; a malformed
    /// one is invalid input.
    pub fn class(&self) -> jek_errors::Class {
        match self {
            AuthError::Read { source, .. } => source.class(),
            AuthError::Invalid { .. } | AuthError::CaFile { .. } => jek_errors::Class::Invalid,
        }
    }
}

/// A user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Basic {
    /// The user name.
    pub username: String,
    /// The password (never printed).
    pub password: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Basic({}, <password>)", self.username)
    }
}

/// One parsed auth file.
#[derive(Debug, Clone, Default)]
pub struct AuthFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Normalised key (`registry[/path]`) -> credentials.
    auths: BTreeMap<String, Basic>,
    /// Registries whose credentials live in a helper jek does not run.
    helpers: Vec<String>,
}

#[derive(serde::Deserialize)]
struct FileJson {
    #[serde(default)]
    auths: BTreeMap<String, EntryJson>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize)]
struct EntryJson {
    #[serde(default)]
    auth: Option<String>,
}

/// `https://index.docker.io/v1/` -> `docker.io`; `https://host/` -> `host`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    match k {
        "index.docker.io/v1" | "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ if key.contains("://") => k.split('/').next().unwrap_or(k).to_string(),
        _ => k.to_string(),
    }
}

impl AuthFile {
    /// Parses one auth file's text. Every `auth` entry must be base64 of `user:password`;
    /// a malformed entry is an error naming its key, not a silently anonymous request.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<AuthFile, AuthError> {
        let invalid = |reason: String| AuthError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let json: FileJson =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not auth JSON: {e}")))?;
        let mut auths = BTreeMap::new();
        for (key, entry) in json.auths {
            let Some(b64) = entry.auth.filter(|a| !a.is_empty()) else {
                continue;
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| invalid(format!("auths.{key:?}.auth is not base64")))?;
            let text = zeroize::Zeroizing::new(
                String::from_utf8(decoded)
                    .map_err(|_| invalid(format!("auths.{key:?}.auth is not UTF-8")))?,
            );
            let (user, pass) = text
                .split_once(':')
                .filter(|(u, _)| !u.is_empty())
                .ok_or_else(|| {
                    invalid(format!("auths.{key:?}.auth is not base64 of user:password"))
                })?;
            auths.insert(
                normalize_key(&key),
                Basic {
                    username: user.to_string(),
                    password: zeroize::Zeroizing::new(pass.to_string()),
                },
            );
        }
        let mut helpers: Vec<String> = json.cred_helpers.keys().map(|k| normalize_key(k)).collect();
        if json.creds_store.is_some() {
            helpers.push("*".into());
        }
        Ok(AuthFile {
            path: path.to_path_buf(),
            auths,
            helpers,
        })
    }

    /// The credentials for `repository` at `registry`: the longest key that is the
    /// repository or one of its parents, or the registry itself.
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<&Basic> {
        let registry = normalize_key(registry);
        let mut key = format!("{registry}/{repository}");
        loop {
            if let Some(b) = self.auths.get(&key) {
                return Some(b);
            }
            match key.rfind('/') {
                Some(i) if i >= registry.len() => key.truncate(i),
                _ => return None,
            }
        }
    }

    fn helper_for(&self, registry: &str) -> bool {
        let registry = normalize_key(registry);
        self.helpers.iter().any(|h| h == "*" || *h == registry)
    }
}

/// Where credentials come from (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    everywhere: Option<Basic>,
    files: Vec<AuthFile>,
}

impl Credentials {
    /// No credentials: anonymous access everywhere.
    pub fn anonymous() -> Self {
        Credentials::default()
    }

    /// The same credentials for every registry.
    pub fn basic(username: String, password: String) -> Self {
        Credentials {
            everywhere: Some(Basic {
                username,
                password: zeroize::Zeroizing::new(password),
            }),
            files: Vec::new(),
        }
    }

    /// From these parsed auth files, in order.
    pub fn from_files(files: Vec<AuthFile>) -> Self {
        Credentials {
            everywhere: None,
            files,
        }
    }

    /// From the environment, as skopeo and podman find them. An auth file that exists
    /// but cannot be read or parsed is an error, not anonymous access.
    pub fn from_environment() -> Result<Self, AuthError> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        if let (Some(u), Some(p)) = (var("JEK_REGISTRY_USERNAME"), var("JEK_REGISTRY_PASSWORD")) {
            return Ok(Credentials::basic(u, p));
        }
        let mut files = Vec::new();
        for path in auth_file_paths(&var) {
            match jek_fsio::read_file(&path, MAX_AUTH_FILE) {
                Ok(bytes) => files.push(AuthFile::parse(&path, &bytes)?),
                Err(e) if e.is_not_found() => {}
                Err(source) => return Err(AuthError::Read { path, source }),
            }
        }
        Ok(Credentials::from_files(files))
    }

    /// The credentials for `repository` at `registry`, if any.
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<&Basic> {
        if let Some(b) = &self.everywhere {
            return Some(b);
        }
        for f in &self.files {
            if let Some(b) = f.lookup(registry, repository) {
                tracing::debug!(file = %f.path.display(), registry, repository, "registry credentials");
                return Some(b);
            }
            if f.helper_for(registry) {
                tracing::warn!(
                    file = %f.path.display(),
                    registry,
                    "a credential helper holds this registry's credentials; jek does not run helpers (use an auth entry or JEK_REGISTRY_USERNAME/PASSWORD)"
                );
            }
        }
        None
    }
}

/// The auth files, in containers-auth.json(5)'s order.
fn auth_file_paths(var: &dyn Fn(&'static str) -> Option<String>) -> Vec<PathBuf> {
    if let Some(f) = var("REGISTRY_AUTH_FILE") {
        return vec![PathBuf::from(f)];
    }
    let home = var("HOME").map(PathBuf::from);
    let mut paths = Vec::new();
    if let Some(run) = var("XDG_RUNTIME_DIR") {
        paths.push(PathBuf::from(run).join("containers/auth.json"));
    }
    if let Some(config) = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")))
    {
        paths.push(config.join("containers/auth.json"));
    }
    if let Some(docker) = var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".docker")))
    {
        paths.push(docker.join("config.json"));
    }
    paths
}

/// How a [`crate::Registry`] talks to registries.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// HTTP instead of HTTPS (a registry on localhost).
    pub plain_http: bool,
    /// Where credentials come from.
    pub credentials: Credentials,
    /// Extra trust roots (PEM certificates), added to the built-in ones.
    pub ca_pem: Option<Vec<u8>>,
}

impl ClientOptions {
    /// The options the CLI's `--plain-http` and `--ca-file` give, with credentials from
    /// the environment.
    pub fn from_environment(plain_http: bool, ca_file: Option<&Path>) -> Result<Self, AuthError> {
        let ca_pem = match ca_file {
            Some(path) => {
                let bytes =
                    jek_fsio::read_file(path, MAX_AUTH_FILE).map_err(|source| AuthError::Read {
                        path: path.to_path_buf(),
                        source,
                    })?;
                check_ca(path, &bytes)?;
                Some(bytes)
            }
            None => None,
        };
        Ok(ClientOptions {
            plain_http,
            credentials: Credentials::from_environment()?,
            ca_pem,
        })
    }
}

/// A CA file must hold at least one PEM certificate, each of which parses.
fn check_ca(path: &Path, pem: &[u8]) -> Result<(), AuthError> {
    let err = |reason: &str| AuthError::CaFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|_| err("not a PEM certificate bundle"))?;
    if certs.is_empty() {
        return Err(err("no -----BEGIN CERTIFICATE----- block"));
    }
    Ok(())
}

/// Fuzz entry point: [`AuthFile::parse`] and a lookup never panic.
pub fn fuzz(data: &[u8]) {
    if let Ok(f) = AuthFile::parse(Path::new("fuzz"), data) {
        let _ = f.lookup("docker.io", "library/busybox");
        let _ = f.lookup("localhost:5000", "a/b/c");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn the_most_specific_key_wins_and_docker_hub_is_normalised() {
        let text = format!(
            r#"{{"auths": {{
                "reg.example:5000": {{"auth": "{}"}},
                "reg.example:5000/team": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "https://other.example/": {{"auth": "{}"}}
            }}}}"#,
            b64("all:1"),
            b64("team:2"),
            b64("hub:3:with:colons"),
            b64("other:4")
        );
        let f = AuthFile::parse(Path::new("a.json"), text.as_bytes()).unwrap();
        let user = |r, p| f.lookup(r, p).map(|b| b.username.clone());
        assert_eq!(
            user("reg.example:5000", "team/app").as_deref(),
            Some("team")
        );
        assert_eq!(
            user("reg.example:5000", "teamx/app").as_deref(),
            Some("all")
        );
        assert_eq!(user("reg.example:5000", "app").as_deref(), Some("all"));
        assert_eq!(user("docker.io", "library/busybox").as_deref(), Some("hub"));
        assert_eq!(
            &*f.lookup("docker.io", "x").unwrap().password,
            "3:with:colons"
        );
        assert_eq!(user("other.example", "x").as_deref(), Some("other"));
        assert_eq!(
            user("reg.example", "app"),
            None,
            "the port is part of the key"
        );
    }

    #[test]
    fn malformed_entries_are_errors_naming_their_key() {
        for (text, want) in [
            (
                r#"{"auths": {"r": {"auth": "%%%"}}}"#,
                "auths.\"r\".auth is not base64",
            ),
            (
                &format!(r#"{{"auths": {{"r": {{"auth": "{}"}}}}}}"#, b64("nocolon")),
                "user:password",
            ),
            (r#"{"auths": []}"#, "not auth JSON"),
            ("not json", "not auth JSON"),
        ] {
            let e = AuthFile::parse(Path::new("/x/auth.json"), text.as_bytes()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("/x/auth.json") && msg.contains(want), "{msg}");
        }
        // Helpers and identity tokens alone are no error: those registries stay anonymous.
        let f = AuthFile::parse(
            Path::new("c.json"),
            br#"{"auths": {"r": {"identitytoken": "t"}}, "credHelpers": {"gcr.io": "gcloud"}}"#,
        )
        .unwrap();
        assert!(f.lookup("r", "x").is_none() && f.helper_for("gcr.io"));
    }

    #[test]
    fn auth_files_are_searched_in_skopeos_order() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &'static str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            auth_file_paths(&env(&[("REGISTRY_AUTH_FILE", "/a.json"), ("HOME", "/h")])),
            vec![PathBuf::from("/a.json")]
        );
        assert_eq!(
            auth_file_paths(&env(&[("HOME", "/h"), ("XDG_RUNTIME_DIR", "/run/u")])),
            vec![
                PathBuf::from("/run/u/containers/auth.json"),
                PathBuf::from("/h/.config/containers/auth.json"),
                PathBuf::from("/h/.docker/config.json"),
            ]
        );
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let e = check_ca(Path::new("ca.pem"), b"hello").unwrap_err();
        assert!(e.to_string().contains("ca.pem"), "{e}");
    }
}
