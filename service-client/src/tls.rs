//! The HTTP client side of both APIs: rustls with the system's roots plus a given CA, an
//! optional client certificate, per-request timeouts, no redirects, and bodies read up to
//! a limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The HTTP client the verifier talks to agents and webhooks with, and the CLI to the
/// verifier: rustls, the system's roots plus `ca_pem`, and a per-request timeout.
pub fn client(ca_pem: Option<&[u8]>, timeout: Duration) -> Result<reqwest::Client, String> {
    client_with_identity(ca_pem, None, timeout)
}

/// [`client`], presenting a client certificate: `identity_pem` holds the chain and its
/// private key, PEM.
pub fn client_with_identity(
    ca_pem: Option<&[u8]>,
    identity_pem: Option<&[u8]>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
        builder = builder.tls_certs_merge(certs);
    }
    if let Some(pem) = identity_pem {
        let identity = reqwest::Identity::from_pem(pem)
            .map_err(|e| format!("the client certificate and key: {e}"))?;
        builder = builder.identity(identity);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Why a client certificate and its key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file cannot be read.
    #[error("{what} {path}")]
    Read {
        /// `client certificate` or `client key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key is readable by other users.
    #[error("the client key {path} has mode {mode:04o}: other users can read it (chmod 600)")]
    KeyMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token file is readable by other users.
    #[error("the token file {path} has mode {mode:04o}: other users can read it (chmod 600)")]
    TokenMode {
        /// The token file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token file holds no token.
    #[error("the token file {0} is empty or not one line of text")]
    Token(PathBuf),
}

/// The bearer token in `path` (one line; surrounding white space ignored). The file must
/// be its owner's alone, as a private key must.
pub fn read_token(path: &Path) -> Result<String, IdentityError> {
    use std::os::unix::fs::PermissionsExt as _;
    let err = |source| IdentityError::Read {
        what: "token file",
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(err)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(IdentityError::TokenMode {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    let text = std::fs::read_to_string(path).map_err(err)?;
    let token = text.trim();
    if token.is_empty() || token.len() > 4096 || token.contains(char::is_whitespace) {
        return Err(IdentityError::Token(path.to_path_buf()));
    }
    Ok(token.to_string())
}

/// A client certificate chain and its private key, both PEM, as one PEM for
/// [`client_with_identity`]. The key must be its owner's alone, as ssh requires of a
/// private key.
pub fn identity_pem(cert: &Path, key: &Path) -> Result<Vec<u8>, IdentityError> {
    use std::os::unix::fs::PermissionsExt as _;
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| IdentityError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let mode = std::fs::metadata(key)
        .map_err(|source| IdentityError::Read {
            what: "client key",
            path: key.to_path_buf(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(IdentityError::KeyMode {
            path: key.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    let mut pem = read("client certificate", cert)?;
    pem.push(b'\n');
    pem.extend(read("client key", key)?);
    Ok(pem)
}

/// Reads a response body of at most `limit` bytes.
pub async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > limit {
            return Err(format!("the answer is over {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
