//! The run record: `pod.json` in a run directory, and what `jek boot --json` prints. One
//! serde type, written by the loader and read back by attestation, so neither side indexes
//! JSON by strings. The shape is documented in `docs/cli.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jek_pod::console::Ready;
use jek_verifier::{Bundle, KeyId, Sha256Digest, Verified};
use serde::{Deserialize, Serialize};

use crate::report::BootReport;
use crate::vm::Vmm;

/// The largest run record read back (a real one is about 1 KiB).
pub const MAX_RECORD_SIZE: u64 = 1 << 20;

/// The run record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRecord {
    /// What was booted.
    pub bundle: BundleRecord,
    /// The pod's name, when a pod spec was given.
    pub pod: Option<String>,
    /// `kvm` or `qemu`.
    pub vmm: String,
    /// The kernel format booted (`bzimage` or `vmlinux`).
    pub kernel: String,
    /// PCR values after measurement, by index.
    pub pcrs: BTreeMap<u32, Sha256Digest>,
    /// The pod's TPM.
    pub tpm: TpmRecord,
    /// The pod's exit status.
    pub status: i32,
    /// The init's ready line, if it got that far.
    pub ready: Option<Ready>,
    /// Step durations in milliseconds.
    pub timings_ms: TimingsMs,
    /// The loader's resident memory (KVM backend).
    pub memory_kib: Option<MemoryKib>,
}

/// The bundle a pod booted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleRecord {
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: String,
    /// Anti-rollback version.
    pub security_version: u64,
    /// Kernel release.
    pub kernel_release: String,
    /// SHA-256 of the signed statement.
    pub manifest_digest: Sha256Digest,
    /// The trusted keys whose signatures were accepted.
    pub signers: Vec<KeyId>,
}

impl BundleRecord {
    /// The record of a verified bundle.
    pub fn of(bundle: &Verified<Bundle>) -> Self {
        let m = bundle.manifest();
        BundleRecord {
            name: m.name.clone(),
            version: m.version.clone(),
            security_version: m.security_version,
            kernel_release: m.kernel_release.clone(),
            manifest_digest: bundle.manifest_digest(),
            signers: bundle.signers().to_vec(),
        }
    }
}

/// The pod's TPM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TpmRecord {
    /// The TCTI the loader measured through.
    pub tcti: String,
    /// Whether the TPM was given an EK certificate and an AK.
    pub attestable: bool,
    /// The swtpm left running (`--keep-tpm`).
    pub kept: Option<KeptRecord>,
    /// The pod's registration in the verifier store (`--keep-tpm`).
    #[serde(default)]
    pub registration: Option<String>,
}

/// A swtpm left running after the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeptRecord {
    /// Its process id.
    pub pid: u32,
    /// Its private socket directory (`data.sock`, `ctrl.sock`; mode 0700).
    pub socket_dir: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
}

impl KeptRecord {
    /// The kept swtpm this record names.
    pub fn swtpm(&self) -> jek_tpm::swtpm::KeptSwtpm {
        jek_tpm::swtpm::KeptSwtpm {
            pid: self.pid,
            sockets: jek_tpm::swtpm::Sockets {
                dir: self.socket_dir.clone(),
            },
            state_dir: self.state_dir.clone(),
        }
    }
}

/// Step durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimingsMs {
    /// Reading and verifying the bundle.
    pub verify: f64,
    /// From the command's start to the first guest instruction (KVM).
    pub start_to_guest: Option<f64>,
    /// Payload and plan.
    pub prepare: f64,
    /// Starting the swtpm.
    pub tpm_start: f64,
    /// Extends, read-back and the event log.
    pub measure: f64,
    /// The guest's run.
    pub run: f64,
    /// VMM set-up before the first guest instruction (KVM).
    pub vm_setup: Option<f64>,
    /// The loader's CPU time at the first guest instruction (KVM).
    pub cpu_at_guest_entry: Option<f64>,
}

/// The loader's resident memory, KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryKib {
    /// Peak resident set (`VmHWM`).
    pub peak_rss: u64,
    /// Resident guest RAM.
    pub guest_rss: u64,
    /// The difference: the loader's own memory.
    pub overhead: u64,
}

/// Why a run record cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file cannot be read.
    #[error("cannot read the run record {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: jek_fsio::ReadError,
    },
    /// It is not a run record.
    #[error("{path} is not a run record")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl RunRecord {
    /// The record of a finished boot.
    pub fn new(report: &BootReport, bundle: &Verified<Bundle>, vmm: Vmm) -> Self {
        let t = &report.timings;
        RunRecord {
            bundle: BundleRecord::of(bundle),
            pod: report.pod.clone(),
            vmm: vmm.name().to_string(),
            kernel: report.kernel.name().to_string(),
            pcrs: report.pcrs.clone(),
            tpm: TpmRecord {
                tcti: report.tcti.clone(),
                attestable: report.attestable,
                kept: report.kept_tpm.as_ref().map(|k| KeptRecord {
                    pid: k.pid,
                    socket_dir: k.sockets.dir.clone(),
                    state_dir: k.state_dir.clone(),
                }),
                registration: report.registration.clone(),
            },
            status: report.status,
            ready: report.console.ready.clone(),
            timings_ms: TimingsMs {
                verify: ms(t.verify),
                start_to_guest: t
                    .guest_entered
                    .map(|g| ms(g.saturating_duration_since(t.started))),
                prepare: ms(t.prepare),
                tpm_start: ms(t.tpm_start),
                measure: ms(t.measure),
                run: ms(t.run),
                vm_setup: t.vm_setup.map(ms),
                cpu_at_guest_entry: t.cpu_at_guest_entry.map(ms),
            },
            memory_kib: report.memory.map(|m| MemoryKib {
                peak_rss: m.peak_rss_kib,
                guest_rss: m.guest_rss_kib,
                overhead: m.overhead_kib(),
            }),
        }
    }

    /// Reads `pod.json` from a run directory: a regular file (not a symlink) of at most
    /// [`MAX_RECORD_SIZE`] bytes.
    pub fn read(run_dir: &Path) -> Result<Self, RecordError> {
        let path = crate::run_dir::RunDir::new(run_dir).record();
        let bytes =
            jek_fsio::read_regular(&path, MAX_RECORD_SIZE).map_err(|source| RecordError::Read {
                path: path.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Parse { path, source })
    }

    /// The pretty JSON written to `pod.json`.
    pub fn to_json(&self) -> Vec<u8> {
        // A derived Serialize of strings, numbers and maps with integer keys cannot fail.
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_back_what_it_writes_and_refuses_unknown_fields() {
        let rec = RunRecord {
            bundle: BundleRecord {
                name: "demo".into(),
                version: "1.0.0".into(),
                security_version: 3,
                kernel_release: "6.1".into(),
                manifest_digest: Sha256Digest::of(b"m"),
                signers: vec![],
            },
            pod: Some("p".into()),
            vmm: "qemu".into(),
            kernel: "bzimage".into(),
            pcrs: [(4, Sha256Digest::of(b"k"))].into_iter().collect(),
            tpm: TpmRecord {
                tcti: "swtpm:dir=/tmp/jek-tpm-x".into(),
                attestable: true,
                kept: Some(KeptRecord {
                    pid: 7,
                    socket_dir: "/tmp/jek-tpm-x".into(),
                    state_dir: "/x".into(),
                }),
                registration: Some("00".repeat(16)),
            },
            status: 0,
            ready: None,
            timings_ms: TimingsMs {
                verify: 1.0,
                start_to_guest: None,
                prepare: 0.5,
                tpm_start: 1.0,
                measure: 2.0,
                run: 3.0,
                vm_setup: None,
                cpu_at_guest_entry: None,
            },
            memory_kib: None,
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pod.json"), rec.to_json()).unwrap();
        assert_eq!(RunRecord::read(dir.path()).unwrap(), rec);
        let text = String::from_utf8(rec.to_json()).unwrap();
        assert!(text.contains("\"4\": \""), "{text}");
        std::fs::write(
            dir.path().join("pod.json"),
            text.replacen("\"status\"", "\"extra\": 1, \"status\"", 1),
        )
        .unwrap();
        assert!(matches!(
            RunRecord::read(dir.path()),
            Err(RecordError::Parse { .. })
        ));
    }
}
