//! The run directory of a pod: everything a boot leaves for the operator and for attestation.
//!
//! ```text
//! RUN-DIR/
//!   tpm/                          swtpm state and log (tpm/swtpm.log)
//!   binary_bios_measurements      TCG PC Client crypto-agile event log
//!   console.log                   the guest's serial console
//!   pod.json                      the run record (bundle, PCRs, TPM, VMM, outcome)
//!   pod.yaml                      the pod file a pod was made from, when jek made it
//!                                 (the containerd shim), for registering the pod
//!   measure.lock                  held while the pod's measurements change (exclusive)
//!                                 or are read with a quote (shared)
//! ```

use std::path::{Path, PathBuf};

/// File names inside a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The default run directory of a pod (or bundle) `name`:
    /// `jek-run/<name>-<unix time>-<pid>`.
    pub fn default_path(name: &str) -> PathBuf {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("jek-run").join(format!("{name}-{now}-{}", std::process::id()))
    }

    /// A run directory at `root` (created by [`RunDir::create`]).
    pub fn new(root: &Path) -> Self {
        RunDir {
            root: root.to_path_buf(),
        }
    }

    /// Creates the directory (and parents) with mode 0700: the TPM state, the AK blobs and
    /// the console are the pod owner's alone. An existing run directory must be empty of a
    /// previous pod's record, so two pods never share a TPM state or log.
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&self.root)?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))?;
        if self.record().exists() || self.event_log().exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} already holds a pod (pod.json or an event log); use a new run directory",
                    self.root.display()
                ),
            ));
        }
        // The measurement lock exists before any measurement: a quote that finds no lock
        // file knows nothing can be added to the pod's measurements.
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or(0))
            .open(self.measure_lock())?;
        Ok(())
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pod file a made-up pod was booted from (the containerd shim writes it).
    pub fn pod_file(&self) -> PathBuf {
        self.root.join("pod.yaml")
    }

    /// The swtpm state directory.
    pub fn tpm_state(&self) -> PathBuf {
        self.root.join("tpm")
    }

    /// The event log, named like the securityfs file firmware logs appear in.
    pub fn event_log(&self) -> PathBuf {
        self.root.join("binary_bios_measurements")
    }

    /// The guest console transcript.
    pub fn console(&self) -> PathBuf {
        self.root.join("console.log")
    }

    /// The lock file of the pod's measurements.
    pub fn measure_lock(&self) -> PathBuf {
        self.root.join("measure.lock")
    }

    /// Holds the pod's measurements still while the lock lives: `exclusive` to add to them
    /// (the TPM's PCRs and the event log together, as a container joins a running pod),
    /// shared to read them (the event log, then a quote), so no quote is taken between an
    /// extend and the log that explains it. The lock file is made with the run directory;
    /// without it (a run directory of an older jek) nothing can be added, so a shared lock
    /// is `None` and an exclusive one an error. A shared lock opens the file read-only.
    pub fn lock_measurements(&self, exclusive: bool) -> std::io::Result<Option<MeasurementLock>> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(exclusive)
            .custom_flags(i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).unwrap_or(0))
            .open(self.measure_lock());
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !exclusive => return Ok(None),
            Err(e) => return Err(e),
        };
        let how = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&file, how)?;
        Ok(Some(MeasurementLock { _file: file }))
    }

    /// The run record.
    pub fn record(&self) -> PathBuf {
        self.root.join("pod.json")
    }

    /// The attestation key's public area (TPMT_PUBLIC).
    pub fn ak_public(&self) -> PathBuf {
        self.tpm_state().join("ak.tpmt")
    }

    /// The attestation key's private blob (wrapped by the EK: usable only in this TPM).
    pub fn ak_private(&self) -> PathBuf {
        self.tpm_state().join("ak.priv")
    }

    /// The certificates that issued the EK certificate (PEM).
    pub fn ek_chain(&self) -> PathBuf {
        self.tpm_state().join("ek-chain.pem")
    }
}

/// A held lock on a pod's measurements ([`RunDir::lock_measurements`]): released when
/// dropped.
#[derive(Debug)]
pub struct MeasurementLock {
    _file: std::fs::File,
}
