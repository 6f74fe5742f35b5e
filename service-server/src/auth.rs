//! Who may call the verifier and the agent, and what each route needs (docs/service.md,
//! "Clients and roles").
//!
//! A client proves who it is in one of three ways:
//! - a **client certificate** (mutual TLS), issued by the CA given with `--client-ca`: the
//!   subject's common name is the client's name, and its organization values carry the
//!   roles, as Kubernetes reads users and groups from client certificates
//!   (`CN=ci-reader, O=jek:reader`);
//! - a **bearer token** listed, by its SHA-256, in the file given with `--tokens`, for
//!   deployments without a PKI. The file holds digests, never tokens, so reading it grants
//!   nothing;
//! - its **uid**, on a Unix socket: the kernel's peer credentials of the connection, for
//!   the agent's local verifier (`jek-agent --listen unix:PATH --allow-uid UID`).
//!
//! Every route but the health check, the JWKS and the fleet page's document (which holds
//! no data) needs one of them, on loopback too: a local user is not trusted. This module
//! is pure but for the token file's I/O: the table of routes, the token file's parser and
//! lookup, the decision for a request, and the roles a verified certificate names.

use std::fmt;
use std::path::{Path, PathBuf};

use axum::http::Method;
use sha2::{Digest as _, Sha256};

/// A role a client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads results, pods, bundles and the fleet page.
    Reader,
    /// Everything a reader may, and registers, removes pods and reloads the policy.
    Admin,
    /// The verifier itself, as the client of an agent (nothing on the verifier's routes).
    Verifier,
}

impl Role {
    /// Its name in certificates (`O=jek:<name>`) and token files.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Admin => "admin",
            Role::Verifier => "verifier",
        }
    }

    /// The role named `name`.
    pub fn from_name(name: &str) -> Option<Role> {
        [Role::Reader, Role::Admin, Role::Verifier]
            .into_iter()
            .find(|r| r.name() == name)
    }

    /// Whether holding `self` allows what `needed` allows.
    pub fn grants(self, needed: Role) -> bool {
        self == needed || (self == Role::Admin && needed == Role::Reader)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the health check, the fleet page's empty document, and the JWKS (a relying
    /// party needs the keys to check a result it was handed).
    Public,
    /// An authenticated client holding this role.
    Needs(Role),
}

/// The agent's routes and what each needs: the health check is public, everything else
/// (identity, quotes, credential activation, the pod list) is for the verifier only.
pub fn agent_access(method: &Method, path: &str) -> Access {
    match (method.as_str(), path) {
        ("GET" | "HEAD", "/v1/health") => Access::Public,
        _ => Access::Needs(Role::Verifier),
    }
}

/// The verifier's routes and what each needs. `path` is the route as written in the
/// router (`/v1/pods/{id}`). A route missing here needs an admin: a new route is closed
/// until it is given a line.
pub fn verifier_access(method: &Method, path: &str) -> Access {
    use Access::{Needs, Public};
    match (method.as_str(), path) {
        // The fleet page's document holds no data (what it shows comes from /v1/pods).
        ("GET" | "HEAD", "/" | "/v1/health" | "/v1/jwks" | "/.well-known/jwks.json") => Public,
        (
            "GET" | "HEAD",
            "/v1/pods" | "/v1/pods/{id}" | "/v1/pods/{id}/result" | "/v1/bundles" | "/v1/audit",
        ) => Needs(Role::Reader),
        _ => Needs(Role::Admin),
    }
}

/// How a client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A client certificate.
    Certificate,
    /// A bearer token.
    Token,
    /// Its uid, on a Unix socket.
    Peer,
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::Certificate => "certificate",
            Via::Token => "token",
            Via::Peer => "Unix socket peer",
        })
    }
}

/// An authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Its name: the certificate's common name, or the token's name in the file.
    pub name: String,
    /// The roles it holds (none: authenticated, but allowed nothing).
    pub roles: Vec<Role>,
    /// How it proved it.
    pub via: Via,
}

impl Principal {
    /// Whether it may do what `needed` allows.
    pub fn may(&self, needed: Role) -> bool {
        self.roles.iter().any(|r| r.grants(needed))
    }

    /// `name (via)`, for logs and audit records.
    pub fn who(&self) -> String {
        format!("{} ({})", self.name, self.via)
    }
}

/// The client certificate a connection presented, verified against the client CA by the
/// TLS layer, with the client it names: in the extensions of every request on a TLS
/// connection that presented one (`http::Listener`).
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Result<Principal, CertNameError>);

/// The kernel's credentials of a Unix socket's client, taken when it connected: in the
/// extensions of every request on that connection (`http::Listener`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Its effective uid.
    pub uid: u32,
    /// Its process, when the kernel says.
    pub pid: Option<u32>,
}

/// The uids whose processes may call over a Unix socket, and the role they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUids {
    /// The uids.
    pub uids: Vec<u32>,
    /// Their role.
    pub role: Role,
}

/// The credentials a server accepts.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    /// Bearer tokens (`--tokens`).
    pub tokens: Option<TokenFile>,
    /// Whether client certificates are asked for (`--client-ca`).
    pub certificates: bool,
    /// Unix socket clients by uid (`jek-agent --allow-uid`).
    pub peers: Option<PeerUids>,
}

/// Why a request is refused before it reaches its route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No credential, or one that proves nothing (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A known client without the role the route needs (403).
    #[error("{who} holds {held}; this needs the {needed} role")]
    Forbidden {
        /// The client.
        who: String,
        /// Its roles, as a phrase.
        held: String,
        /// The role needed.
        needed: Role,
    },
}

impl Clients {
    /// Whether any credential is accepted at all.
    pub fn any(&self) -> bool {
        self.certificates || self.tokens.is_some() || self.peers.is_some()
    }

    /// Decides a request for a route with `access`, given the connection's verified
    /// client certificate or peer credentials and the request's `Authorization` header. A
    /// bearer token, when sent, must be valid and is who the client is; otherwise the
    /// certificate is, otherwise the peer's uid. Returns the client (none on a public
    /// route, which needs none).
    pub fn authorize(
        &self,
        access: Access,
        cert: Option<&ClientCertificate>,
        peer: Option<&PeerCredentials>,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Principal>, Refusal> {
        let needed = match access {
            // A public route ignores credentials, even bad ones, and names no client.
            Access::Public => return Ok(None),
            Access::Needs(role) => role,
        };
        let principal = self.identify(cert, peer, authorization)?.ok_or_else(|| {
            Refusal::Unauthenticated(format!(
                "this needs an authenticated client with the {needed} role: {}",
                self.how()
            ))
        })?;
        if !principal.may(needed) {
            let held = if principal.roles.is_empty() {
                "no jek role".to_string()
            } else {
                let names: Vec<&str> = principal.roles.iter().map(|r| r.name()).collect();
                format!("the role {}", names.join(", "))
            };
            return Err(Refusal::Forbidden {
                who: principal.who(),
                held,
                needed,
            });
        }
        Ok(Some(principal))
    }

    /// The credentials this server takes, as a phrase.
    fn how(&self) -> &'static str {
        match (self.certificates, self.tokens.is_some()) {
            _ if self.peers.is_some() => "connect over the Unix socket as a uid it allows",
            (true, true) => "present a client certificate or a bearer token",
            (true, false) => "present a client certificate",
            (false, true) => "send `Authorization: Bearer <token>`",
            (false, false) => "this server accepts no credential",
        }
    }

    fn identify(
        &self,
        cert: Option<&ClientCertificate>,
        peer: Option<&PeerCredentials>,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Principal>, Refusal> {
        let refuse = |why: &str| Err(Refusal::Unauthenticated(why.to_string()));
        if let Some(header) = authorization {
            let Some(token) = header
                .strip_prefix(b"Bearer ")
                .and_then(|t| std::str::from_utf8(t).ok())
                .map(str::trim)
            else {
                return refuse("the Authorization header is not `Bearer <token>`");
            };
            let Some(tokens) = &self.tokens else {
                return refuse("this server takes no bearer tokens");
            };
            return match tokens.find(token) {
                Some(p) => Ok(Some(p)),
                None => refuse("the bearer token is not one this server lists"),
            };
        }
        match (cert, peer, &self.peers) {
            (Some(ClientCertificate(Ok(p))), _, _) => Ok(Some(p.clone())),
            (Some(ClientCertificate(Err(e))), _, _) => refuse(&e.to_string()),
            // Known by its uid: the listed uids hold the role, any other holds none (and
            // is told so by name, as a certificate without a jek role is).
            (None, Some(peer), Some(grant)) => Ok(Some(Principal {
                name: format!("uid {}", peer.uid),
                roles: if grant.uids.contains(&peer.uid) {
                    vec![grant.role]
                } else {
                    Vec::new()
                },
                via: Via::Peer,
            })),
            _ => Ok(None),
        }
    }
}

/// A client name: printable, without spaces, so that logs and the token file stay one
/// line per client.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@:/".contains(&b))
}

/// Why a client certificate names no usable client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertNameError {
    /// It does not parse (the TLS layer accepted it, so this is unexpected).
    #[error("the client certificate does not parse: {0}")]
    Parse(String),
    /// The subject has no common name, or one that is not a client name.
    #[error("the client certificate's subject has no usable common name (CN)")]
    NoName,
}

/// OID of the common name (CN).
const CN: &str = "2.5.4.3";
/// OID of the organization (O).
const O: &str = "2.5.4.10";

/// The client a certificate names: its subject's CN, and a role for each organization
/// value `jek:<role>` (other values are ignored). The chain was verified by the TLS layer
/// against the client CA; this only reads the names.
pub fn principal_from_cert(der: &[u8]) -> Result<Principal, CertNameError> {
    use der::Decode as _;
    let cert =
        x509_cert::Certificate::from_der(der).map_err(|e| CertNameError::Parse(e.to_string()))?;
    let mut name = None;
    let mut roles = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            let oid = atv.oid.to_string();
            let Some(value) = directory_string(&atv.value) else {
                continue;
            };
            if oid == CN {
                name = Some(value);
            } else if oid == O {
                if let Some(role) = value.strip_prefix("jek:").and_then(Role::from_name) {
                    if !roles.contains(&role) {
                        roles.push(role);
                    }
                }
            }
        }
    }
    let name = name
        .filter(|n| valid_name(n))
        .ok_or(CertNameError::NoName)?;
    roles.sort();
    Ok(Principal {
        name,
        roles,
        via: Via::Certificate,
    })
}

/// A DirectoryString's text (UTF8String, PrintableString or IA5String).
fn directory_string(value: &der::Any) -> Option<String> {
    use der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    if let Ok(s) = value.decode_as::<Utf8StringRef<'_>>() {
        return Some(s.as_str().to_string());
    }
    if let Ok(s) = value.decode_as::<PrintableStringRef<'_>>() {
        return Some(s.as_str().to_string());
    }
    if let Ok(s) = value.decode_as::<Ia5StringRef<'_>>() {
        return Some(s.as_str().to_string());
    }
    None
}

/// The bearer tokens a verifier accepts: one line per client, `ROLE NAME sha256:HEX`
/// (the SHA-256 of the token), `#` comments and blank lines allowed.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
    entries: Vec<TokenEntry>,
}

#[derive(Debug, Clone)]
struct TokenEntry {
    role: Role,
    name: String,
    digest: [u8; 32],
}

/// The shortest token `new_token` makes, and the shortest a client may present.
pub const MIN_TOKEN_LEN: usize = 32;

/// Why a token file is refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It cannot be read.
    #[error("tokens file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_fsio::ReadError,
    },
    /// Another user could change it (it decides who may do what).
    #[error("tokens file")]
    Untrusted {
        /// Why.
        #[source]
        source: jek_fsio::StrictError,
    },
    /// A line is not `ROLE NAME sha256:HEX`.
    #[error("tokens file {path} line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// It lists no token.
    #[error("tokens file {path} lists no token (lines of `ROLE NAME sha256:HEX`)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// It cannot be written.
    #[error("tokens file")]
    Write {
        /// Why.
        #[source]
        source: jek_fsio::WriteError,
    },
}

/// The largest token file read.
const MAX_TOKEN_FILE: u64 = 1 << 20;

impl TokenFile {
    /// Reads `path`, refusing it when another user owns it or could write it (or a
    /// directory above it).
    pub fn load(path: &Path) -> Result<TokenFile, TokenFileError> {
        jek_fsio::check_strict(path).map_err(|source| TokenFileError::Untrusted { source })?;
        let bytes = jek_fsio::read_regular(path, MAX_TOKEN_FILE).map_err(|source| {
            TokenFileError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let file = Self::parse(path, &bytes)?;
        if file.entries.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(file)
    }

    /// Parses the text of `path` (which may list nothing).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<TokenFile, TokenFileError> {
        let bad = |line: usize, reason: String| TokenFileError::Line {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            bad(line, "not UTF-8".into())
        })?;
        let mut entries: Vec<TokenEntry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, name, digest] = fields[..] else {
                return Err(bad(
                    n,
                    format!(
                        "{} fields; expected three: ROLE NAME sha256:HEX",
                        fields.len()
                    ),
                ));
            };
            let role = match Role::from_name(role) {
                Some(r @ (Role::Reader | Role::Admin)) => r,
                _ => {
                    return Err(bad(
                        n,
                        format!("role {role:?} is not one of: reader, admin"),
                    ))
                }
            };
            if !valid_name(name) {
                return Err(bad(
                    n,
                    format!("name {name:?} is not 1-128 of A-Z a-z 0-9 . _ - @ : /"),
                ));
            }
            let digest = digest
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode(h).ok())
                .and_then(|d| <[u8; 32]>::try_from(d).ok())
                .ok_or_else(|| bad(n, "the digest is not sha256: and 64 hex digits".into()))?;
            if let Some(other) = entries.iter().find(|e| e.digest == digest) {
                return Err(bad(n, format!("the same token digest as {:?}", other.name)));
            }
            if entries.iter().any(|e| e.name == name) {
                return Err(bad(n, format!("the name {name:?} is listed twice")));
            }
            entries.push(TokenEntry {
                role,
                name: name.to_string(),
                digest,
            });
        }
        Ok(TokenFile {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many tokens it lists.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it lists none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The client `token` belongs to. Every entry is compared, in constant time, so the
    /// time taken says nothing about which digest came close.
    pub fn find(&self, token: &str) -> Option<Principal> {
        if token.len() < MIN_TOKEN_LEN {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            let diff = entry
                .digest
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(entry);
            }
        }
        found.map(|e| Principal {
            name: e.name.clone(),
            roles: vec![e.role],
            via: Via::Token,
        })
    }

    /// The line that lists `token` for `name` with `role`.
    pub fn line(role: Role, name: &str, token: &str) -> String {
        format!(
            "{} {} sha256:{}\n",
            role.name(),
            name,
            hex::encode(Sha256::digest(token.as_bytes()))
        )
    }
}

/// A new random token: 32 bytes from the system's generator, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    hex::encode(bytes)
}

/// Adds a new token for `name` with `role` to the file at `path` (created with mode 0600
/// if missing; rewritten atomically) and returns the token, which is stored nowhere else.
/// Refuses a name already listed, and a file another user could change.
pub fn add_token(path: &Path, role: Role, name: &str) -> Result<String, TokenFileError> {
    let bad = |reason: String| TokenFileError::Line {
        path: path.to_path_buf(),
        line: 0,
        reason,
    };
    if !matches!(role, Role::Reader | Role::Admin) {
        return Err(bad(format!("role {role} cannot be given a token")));
    }
    if !valid_name(name) {
        return Err(bad(format!(
            "name {name:?} is not 1-128 of A-Z a-z 0-9 . _ - @ : /"
        )));
    }
    let mut text = match jek_fsio::read_regular(path, MAX_TOKEN_FILE) {
        Ok(bytes) => {
            jek_fsio::check_strict(path).map_err(|source| TokenFileError::Untrusted { source })?;
            let existing = TokenFile::parse(path, &bytes)?;
            if existing.entries.iter().any(|e| e.name == name) {
                return Err(bad(format!("the name {name:?} is already listed")));
            }
            String::from_utf8(bytes).unwrap_or_default()
        }
        Err(e) if e.is_not_found() => {
            jek_fsio::check_strict_or_nearest(path)
                .map_err(|source| TokenFileError::Untrusted { source })?;
            "# jek-verifier --tokens: ROLE NAME sha256:HEX (the SHA-256 of the token)\n".into()
        }
        Err(source) => {
            return Err(TokenFileError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let token = new_token();
    text.push_str(&TokenFile::line(role, name, &token));
    jek_fsio::write_atomic(path, text.as_bytes(), 0o600, jek_fsio::Overwrite::Allow)
        .map_err(|source| TokenFileError::Write { source })?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn file(text: &str) -> Result<TokenFile, TokenFileError> {
        TokenFile::parse(Path::new("tokens"), text.as_bytes())
    }

    #[test]
    fn the_route_table_is_closed_by_default() {
        use Access::{Needs, Public};
        assert_eq!(verifier_access(&Method::GET, "/v1/health"), Public);
        assert_eq!(verifier_access(&Method::GET, "/"), Public);
        assert_eq!(verifier_access(&Method::GET, "/v1/jwks"), Public);
        assert_eq!(
            verifier_access(&Method::GET, "/.well-known/jwks.json"),
            Public
        );
        for path in [
            "/v1/pods",
            "/v1/pods/{id}",
            "/v1/pods/{id}/result",
            "/v1/bundles",
            "/v1/audit",
        ] {
            assert_eq!(
                verifier_access(&Method::GET, path),
                Needs(Role::Reader),
                "{path}"
            );
        }
        assert_eq!(
            verifier_access(&Method::POST, "/v1/pods"),
            Needs(Role::Admin)
        );
        assert_eq!(
            verifier_access(&Method::DELETE, "/v1/pods/{id}"),
            Needs(Role::Admin)
        );
        assert_eq!(
            verifier_access(&Method::POST, "/v1/policy/reload"),
            Needs(Role::Admin)
        );
        // Not in the table: closed.
        assert_eq!(
            verifier_access(&Method::GET, "/v1/new-thing"),
            Needs(Role::Admin)
        );
        assert_eq!(
            verifier_access(&Method::POST, "/v1/health"),
            Needs(Role::Admin)
        );
    }

    /// The certificates of `service-server/tests/fixtures/clients/recipe.sh`.
    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/clients")
            .join(format!("{name}.der"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn a_certificate_names_its_client_by_cn_and_its_roles_by_o() {
        let p = principal_from_cert(&fixture("admin-reader")).unwrap();
        assert_eq!(p.name, "ops");
        assert_eq!(p.roles, vec![Role::Reader, Role::Admin]);
        assert_eq!(p.via, Via::Certificate);
        let p = principal_from_cert(&fixture("multi")).unwrap();
        assert_eq!((p.name.as_str(), p.roles), ("ops2", vec![Role::Reader]));
        // OU is not where roles are read; an unknown jek role gives nothing.
        let p = principal_from_cert(&fixture("ou-only")).unwrap();
        assert_eq!((p.name.as_str(), p.roles), ("ci", vec![]));
        for refused in ["no-cn", "spaced", "utf8"] {
            assert_eq!(
                principal_from_cert(&fixture(refused)),
                Err(CertNameError::NoName),
                "{refused}"
            );
        }
        assert!(matches!(
            principal_from_cert(b"not a certificate"),
            Err(CertNameError::Parse(_))
        ));
    }

    #[test]
    fn roles_grant_what_they_should_and_no_more() {
        assert!(Role::Admin.grants(Role::Reader));
        assert!(Role::Admin.grants(Role::Admin));
        assert!(Role::Reader.grants(Role::Reader));
        assert!(!Role::Reader.grants(Role::Admin));
        assert!(!Role::Verifier.grants(Role::Reader));
        assert!(!Role::Admin.grants(Role::Verifier));
        assert!(!Role::Reader.grants(Role::Verifier));
    }

    fn principal(name: &str, roles: &[Role]) -> ClientCertificate {
        ClientCertificate(Ok(Principal {
            name: name.into(),
            roles: roles.to_vec(),
            via: Via::Certificate,
        }))
    }

    #[test]
    fn authorize_answers_each_kind_of_client() {
        let admin_token = "t".repeat(40);
        let reader_token = "r".repeat(40);
        let text = format!(
            "{}{}",
            TokenFile::line(Role::Admin, "ops", &admin_token),
            TokenFile::line(Role::Reader, "ci", &reader_token)
        );
        let clients = Clients {
            tokens: Some(file(&text).unwrap()),
            certificates: true,
            peers: None,
        };
        let bearer = |t: &str| format!("Bearer {t}").into_bytes();
        let read = Access::Needs(Role::Reader);
        let admin = Access::Needs(Role::Admin);
        // Anonymous: public only.
        assert_eq!(
            clients.authorize(Access::Public, None, None, None),
            Ok(None)
        );
        assert!(matches!(
            clients.authorize(read, None, None, None),
            Err(Refusal::Unauthenticated(_))
        ));
        // Tokens.
        let ops = clients
            .authorize(admin, None, None, Some(&bearer(&admin_token)))
            .unwrap()
            .unwrap();
        assert_eq!(ops.who(), "ops (token)");
        assert!(clients
            .authorize(read, None, None, Some(&bearer(&reader_token)))
            .is_ok());
        let err = clients
            .authorize(admin, None, None, Some(&bearer(&reader_token)))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ci (token) holds the role reader; this needs the admin role"
        );
        for bad in [
            bearer(&"x".repeat(40)),
            format!("Basic {admin_token}").into_bytes(),
            b"Bearer \xff".to_vec(),
        ] {
            assert!(matches!(
                clients.authorize(read, None, None, Some(&bad)),
                Err(Refusal::Unauthenticated(_))
            ));
        }
        // A bad token is refused even with a good certificate beside it.
        let cert_admin = principal("ops-cert", &[Role::Admin]);
        assert!(clients
            .authorize(
                read,
                Some(&cert_admin),
                None,
                Some(&bearer(&"x".repeat(40)))
            )
            .is_err());
        // Certificates.
        assert_eq!(
            clients
                .authorize(admin, Some(&cert_admin), None, None)
                .unwrap()
                .unwrap()
                .who(),
            "ops-cert (certificate)"
        );
        let none = principal("someone", &[]);
        assert!(matches!(
            clients.authorize(read, Some(&none), None, None),
            Err(Refusal::Forbidden { .. })
        ));
        let verifier = principal("verifier", &[Role::Verifier]);
        assert!(clients
            .authorize(read, Some(&verifier), None, None)
            .is_err());
        let unnamed = ClientCertificate(Err(CertNameError::NoName));
        assert!(matches!(
            clients.authorize(read, Some(&unnamed), None, None),
            Err(Refusal::Unauthenticated(_))
        ));
        // A server without tokens refuses any bearer token.
        let certs_only = Clients {
            tokens: None,
            certificates: true,
            peers: None,
        };
        assert_eq!(
            certs_only.authorize(read, None, None, Some(&bearer(&admin_token))),
            Err(Refusal::Unauthenticated(
                "this server takes no bearer tokens".into()
            ))
        );
    }

    #[test]
    fn the_agent_serves_the_verifier_only() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(agent_access(&get, "/v1/health"), Access::Public);
        for (m, path) in [
            (&get, "/v1/pods"),
            (&get, "/v1/pods/{id}/identity"),
            (&post, "/v1/pods/{id}/quote"),
            (&post, "/v1/pods/{id}/activate"),
            (&post, "/v1/health"),
            (&get, "/v1/unknown"),
        ] {
            assert_eq!(
                agent_access(m, path),
                Access::Needs(Role::Verifier),
                "{m} {path}"
            );
        }
        let needs = Access::Needs(Role::Verifier);
        // On its Unix socket: the allowed uid, and no other.
        let local = Clients {
            peers: Some(PeerUids {
                uids: vec![1000],
                role: Role::Verifier,
            }),
            ..Clients::default()
        };
        let peer = |uid| PeerCredentials { uid, pid: Some(7) };
        let ok = local
            .authorize(needs, None, Some(&peer(1000)), None)
            .unwrap()
            .unwrap();
        assert_eq!(ok.who(), "uid 1000 (Unix socket peer)");
        assert_eq!(
            local
                .authorize(needs, None, Some(&peer(65534)), None)
                .unwrap_err()
                .to_string(),
            "uid 65534 (Unix socket peer) holds no jek role; this needs the verifier role"
        );
        // A token sent to a server that takes none is refused, whoever the peer is.
        assert!(local
            .authorize(needs, None, Some(&peer(1000)), Some(b"Bearer xxxxxxxx"))
            .is_err());
        assert!(matches!(
            local.authorize(needs, None, None, None),
            Err(Refusal::Unauthenticated(_))
        ));
        // Over mutual TLS: a certificate naming the verifier role, and no other role.
        let tls = Clients {
            certificates: true,
            ..Clients::default()
        };
        let verifier = principal("verifier-1", &[Role::Verifier]);
        assert!(tls.authorize(needs, Some(&verifier), None, None).is_ok());
        for roles in [&[Role::Admin][..], &[Role::Reader], &[]] {
            assert!(matches!(
                tls.authorize(needs, Some(&principal("x", roles)), None, None),
                Err(Refusal::Forbidden { .. })
            ));
        }
        // Peer credentials count for nothing where no uid is allowed.
        assert!(matches!(
            tls.authorize(needs, None, Some(&peer(0)), None),
            Err(Refusal::Unauthenticated(_))
        ));
    }

    #[test]
    fn tokens_are_found_by_their_digest_only() {
        let token = "a".repeat(40);
        let text = format!(
            "# comment\n\n{}{}",
            TokenFile::line(Role::Admin, "ops", &token),
            TokenFile::line(Role::Reader, "ci", &"b".repeat(40)),
        );
        let f = file(&text).unwrap();
        assert_eq!(f.len(), 2);
        let p = f.find(&token).unwrap();
        assert_eq!(p.name, "ops");
        assert_eq!(p.roles, vec![Role::Admin]);
        assert_eq!(p.via, Via::Token);
        assert_eq!(f.find(&"b".repeat(40)).unwrap().roles, vec![Role::Reader]);
        assert!(f.find(&"a".repeat(39)).is_none());
        assert!(f.find(&"c".repeat(40)).is_none());
        // The digest itself is not a token.
        let digest = hex::encode(Sha256::digest(token.as_bytes()));
        assert!(f.find(&digest).is_none());
        assert!(f.find(&format!("sha256:{digest}")).is_none());
    }

    #[test]
    fn bad_token_lines_are_refused_by_line() {
        let d = format!("sha256:{}", "ab".repeat(32));
        for (text, line, says) in [
            ("reader ci".to_string(), 1, "2 fields"),
            (format!("\nroot ci {d}"), 2, "role \"root\""),
            (format!("verifier v {d}"), 1, "role \"verifier\""),
            (format!("reader c\u{1b}i {d}"), 1, "name"),
            ("reader ci sha256:abc".to_string(), 1, "64 hex digits"),
            (format!("reader ci {}", "ab".repeat(32)), 1, "sha256:"),
            (
                format!("reader ci {d}\nadmin ops {d}"),
                2,
                "same token digest as \"ci\"",
            ),
            (
                format!("reader ci {d}\nadmin ci sha256:{}", "cd".repeat(32)),
                2,
                "listed twice",
            ),
        ] {
            let err = file(&text).unwrap_err();
            let TokenFileError::Line {
                line: l, reason, ..
            } = &err
            else {
                panic!("{err}")
            };
            assert_eq!(*l, line, "{text:?}: {err}");
            assert!(reason.contains(says), "{text:?}: {reason}");
        }
        let err = TokenFile::parse(Path::new("t"), b"reader ci x\n\xff").unwrap_err();
        assert!(err.to_string().contains("line 2: not UTF-8"), "{err}");
    }

    #[test]
    fn add_token_creates_the_file_private_and_refuses_a_second_name() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let t1 = add_token(&path, Role::Admin, "ops").unwrap();
        let t2 = add_token(&path, Role::Reader, "ci").unwrap();
        assert_ne!(t1, t2);
        assert!(t1.len() >= MIN_TOKEN_LEN);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let f = TokenFile::load(&path).unwrap();
        assert_eq!(f.find(&t1).unwrap().name, "ops");
        assert_eq!(f.find(&t2).unwrap().roles, vec![Role::Reader]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&t1) && !text.contains(&t2), "{text}");
        let err = add_token(&path, Role::Reader, "ops").unwrap_err();
        assert!(err.to_string().contains("already listed"), "{err}");
        assert!(add_token(&path, Role::Verifier, "v").is_err());
    }
}
