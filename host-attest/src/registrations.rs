//! The verifier's registration store on this host: one JSON file per registered pod
//! (`<id>.json`, mode 0600) in a directory only its owner can enter (mode 0700). `jek boot
//! --keep-tpm` registers a pod here; `jek attest` reads the AK, EK and epoch it must find
//! from here, never from the run directory, and records the highest clock it has seen.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use jek_attest::registration::{AkName, Epoch};
use jek_attest::Registration;
use jek_fsio::{write_atomic, Overwrite, ReadError, WriteError};
use jek_verifier::Sha256Digest;
use serde::{Deserialize, Serialize};

/// The largest registration file read.
const MAX_REGISTRATION: u64 = 64 << 10;

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationStoreError {
    /// The directory cannot be created or is not private.
    #[error("registration store {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A registration cannot be read.
    #[error("cannot read registration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ReadError,
    },
    /// A registration does not parse.
    #[error("{path} is not a registration")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A registration cannot be written.
    #[error("cannot write the registration")]
    Write(#[source] WriteError),
    /// An identifier that is not one this store issues.
    #[error("{0:?} is not a registration identifier (32 lowercase hex digits)")]
    BadId(String),
}

impl RegistrationStoreError {
    /// The kind of failure.
    pub fn class(&self) -> jek_errors::Class {
        use jek_errors::Class;
        match self {
            RegistrationStoreError::BadId(_) | RegistrationStoreError::Parse { .. } => {
                Class::Invalid
            }
            RegistrationStoreError::Read { source, .. } => source.class(),
            RegistrationStoreError::Write(e) => e.class(),
            RegistrationStoreError::Dir { .. } => Class::Environment,
        }
    }
}

/// Where this host reaches a registered pod's TPM: known here only, and no part of an
/// appraisal (a remote verifier has no such thing to make up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TpmLocation {
    /// The swtpm's process id.
    pub pid: u32,
    /// Its private socket directory. While the pod's QEMU runs, the loader's proxy serves
    /// the TPM to other clients from `side/` in it, interleaved with the guest's commands.
    pub socket_dir: PathBuf,
    /// The pod's run directory (AK blobs, EK chain, event log), for the host's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
}

/// A pod registered on this host: its TPM's identity and epoch, which every attestation
/// checks, and where its TPM is. Stored as one JSON object (`<id>.json`): the
/// registration's fields and `tpm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored", into = "Stored")]
pub struct HostRegistration {
    /// What the appraisal checks.
    pub registration: Registration,
    /// Where the TPM is.
    pub tpm: TpmLocation,
}

/// A registration file's shape.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Stored {
    id: String,
    pod: String,
    ak_name: AkName,
    ek_cert_sha256: Sha256Digest,
    epoch: Epoch,
    last_clock: u64,
    tpm: TpmLocation,
}

impl From<Stored> for HostRegistration {
    fn from(s: Stored) -> Self {
        HostRegistration {
            registration: Registration {
                id: s.id,
                pod: s.pod,
                ak_name: s.ak_name,
                ek_cert_sha256: s.ek_cert_sha256,
                epoch: s.epoch,
                last_clock: s.last_clock,
            },
            tpm: s.tpm,
        }
    }
}

impl From<HostRegistration> for Stored {
    fn from(h: HostRegistration) -> Self {
        let r = h.registration;
        Stored {
            id: r.id,
            pod: r.pod,
            ak_name: r.ak_name,
            ek_cert_sha256: r.ek_cert_sha256,
            epoch: r.epoch,
            last_clock: r.last_clock,
            tpm: h.tpm,
        }
    }
}

impl HostRegistration {
    /// Its identifier.
    pub fn id(&self) -> &str {
        &self.registration.id
    }
}

/// A registration store.
#[derive(Debug, Clone)]
pub struct RegistrationStore {
    dir: PathBuf,
}

/// A new registration identifier: 16 random bytes as hex.
pub fn new_id() -> String {
    use rand_core::RngCore;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl RegistrationStore {
    /// Opens (creating it if needed) the store in `dir`: it must be a real directory owned
    /// by this user, and is set to mode 0700.
    pub fn open(dir: &Path) -> Result<Self, RegistrationStoreError> {
        let err = |source| RegistrationStoreError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let meta = std::fs::symlink_metadata(dir).map_err(err)?;
        if !meta.is_dir() || meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "not a directory owned by this user",
            )));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        Ok(RegistrationStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &str) -> Result<PathBuf, RegistrationStoreError> {
        if !valid_id(id) {
            return Err(RegistrationStoreError::BadId(id.to_string()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// Stores (or replaces) a registration.
    pub fn put(&self, reg: &HostRegistration) -> Result<(), RegistrationStoreError> {
        let path = self.path(reg.id())?;
        // A derived Serialize of strings and numbers cannot fail.
        let bytes = serde_json::to_vec_pretty(reg).unwrap_or_default();
        write_atomic(&path, &bytes, 0o600, Overwrite::Allow).map_err(RegistrationStoreError::Write)
    }

    /// The registration `id`, if the store has it.
    pub fn get(&self, id: &str) -> Result<Option<HostRegistration>, RegistrationStoreError> {
        let path = self.path(id)?;
        let bytes = match jek_fsio::read_regular(&path, MAX_REGISTRATION) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(source) => return Err(RegistrationStoreError::Read { path, source }),
        };
        let reg: HostRegistration = serde_json::from_slice(&bytes)
            .map_err(|source| RegistrationStoreError::Parse { path, source })?;
        // A file renamed to another pod's identifier is not that pod's registration.
        Ok((reg.id() == id).then_some(reg))
    }

    /// Every registration, by identifier.
    pub fn list(&self) -> Result<Vec<HostRegistration>, RegistrationStoreError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|source| RegistrationStoreError::Dir {
                path: self.dir.clone(),
                source,
            })?;
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(String::from)
            })
            .filter(|id| valid_id(id))
            .collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            if let Some(r) = self.get(&id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The registration of the AK named `ak_name`, if any.
    pub fn find_by_ak(
        &self,
        ak_name: &AkName,
    ) -> Result<Option<HostRegistration>, RegistrationStoreError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|r| r.registration.ak_name == *ak_name))
    }

    /// Forgets a registration.
    pub fn remove(&self, id: &str) -> Result<(), RegistrationStoreError> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RegistrationStoreError::Dir { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stores_privately_and_refuses_foreign_ids() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("registry");
        let store = RegistrationStore::open(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let reg = HostRegistration {
            registration: Registration {
                id: new_id(),
                pod: "p".into(),
                ak_name: AkName(vec![0, 0x0b, 1]),
                ek_cert_sha256: jek_verifier::Sha256Digest::of(b"ek"),
                epoch: Epoch {
                    reset_count: 1,
                    restart_count: 0,
                    clock: 9,
                },
                last_clock: 9,
            },
            tpm: TpmLocation {
                pid: 1,
                socket_dir: "/s".into(),
                run_dir: None,
            },
        };
        store.put(&reg).unwrap();
        let file = dir.join(format!("{}.json", reg.id()));
        // One flat object: the registration's fields and where its TPM is.
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(json["akName"], "000b01");
        assert_eq!(json["tpm"]["pid"], 1);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(store.get(reg.id()).unwrap(), Some(reg.clone()));
        assert_eq!(
            store.find_by_ak(&AkName(vec![0, 0x0b, 1])).unwrap(),
            Some(reg.clone())
        );
        assert!(matches!(
            store.get("../../etc/passwd"),
            Err(RegistrationStoreError::BadId(_))
        ));
        // Copied under another pod's identifier: not that pod's registration.
        let other = new_id();
        std::fs::copy(&file, dir.join(format!("{other}.json"))).unwrap();
        assert_eq!(store.get(&other).unwrap(), None);
        store.remove(reg.id()).unwrap();
        assert_eq!(store.get(reg.id()).unwrap(), None);
    }
}
