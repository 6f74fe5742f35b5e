//! Compiling a just-enough kernel out of tree, cached by the digest of every input.
//!
//! Steps: `make tinyconfig`, apply the fragments ([`kconfig::merge`]), `make olddefconfig`,
//! check the resolved `.config` against the policy and the fragments (before spending
//! minutes compiling), `make bzImage`. The result is stored under
//! `CACHE/kernel/<key>/` where `key` is the SHA-256 of [`InputRecord`]: the source digest,
//! each fragment's name and digest, the toolchain versions, `SOURCE_DATE_EPOCH` and this
//! module's recipe version. An unchanged recipe finds its entry and builds nothing.
//!
//! A cache entry is checked, not trusted: the cache directory may be restored from a CI
//! cache or written by another job. On every hit the entry's resolved `.config` is checked
//! against the fragments and the policy again, and its bzImage, vmlinux and config are
//! hashed and compared with the digests recorded (`outputs.json`) when it was built. Any
//! difference refuses the build before anything is signed, and the provenance records
//! that the kernel came from the cache. (Whoever can write the cache can also rewrite
//! `outputs.json`: a signing job builds without a restored cache or with
//! `--check-reproducible`, which rebuilds from source and compares.)

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::kconfig::{self, Config, Finding};

/// Bumped whenever the build steps change in a way that changes the output.
const BUILD_RECIPE_VERSION: u32 = 1;
/// Tools the kernel build runs.
pub const REQUIRED_TOOLS: [&str; 9] = [
    "make", "gcc", "ld", "tar", "xz", "flex", "bison", "bc", "lz4",
];

/// What the kernel is built from.
#[derive(Debug, Clone)]
pub struct KernelInputs {
    /// Source tarball (`.tar.xz`/`.tar.gz`) or an unpacked source directory.
    pub source: PathBuf,
    /// Fragments as (name, text), in order.
    pub fragments: Vec<(String, String)>,
    /// The kconfig policy.
    pub policy: Option<kconfig::Policy>,
    /// Build timestamp, from `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: u64,
    /// `make -j`.
    pub jobs: usize,
}

/// Everything that determines the output; its SHA-256 is the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputRecord {
    /// Build steps version.
    pub build_recipe_version: u32,
    /// Source path and digest.
    pub source: NamedDigest,
    /// Fragment names and digests, in order.
    pub fragments: Vec<NamedDigest>,
    /// First line of `gcc --version`, `ld --version`, `make --version`.
    pub toolchain: Vec<String>,
    /// Build timestamp.
    pub source_date_epoch: u64,
}

/// The digests of a cache entry's outputs, recorded when it was built (`outputs.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputRecord {
    /// SHA-256 of `bzImage` (hex).
    pub bzimage: String,
    /// SHA-256 of `vmlinux` (hex).
    pub vmlinux: String,
    /// SHA-256 of `config` (hex).
    pub config: String,
}

/// A name and a SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedDigest {
    /// Name or path.
    pub name: String,
    /// Hex SHA-256.
    pub sha256: String,
}

/// A built kernel.
#[derive(Debug, Clone)]
pub struct KernelArtifacts {
    /// The cache entry directory.
    pub entry: PathBuf,
    /// bzImage path.
    pub bzimage: PathBuf,
    /// ELF vmlinux path.
    pub vmlinux: PathBuf,
    /// Resolved `.config` path.
    pub config: PathBuf,
    /// The full make log.
    pub log: PathBuf,
    /// Cache key (hex).
    pub key: String,
    /// The inputs.
    pub inputs: InputRecord,
    /// Whether the entry already existed.
    pub cached: bool,
}

/// Progress reports for a live status line.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A named step begins.
    Step(&'a str),
    /// The number of files the coming `make bzImage` compiles, as counted by the last
    /// build of the same resolved config (none on a first build).
    Expect {
        /// Files.
        total: usize,
    },
    /// Another file compiled or linked during `make bzImage`.
    Compiled {
        /// Files so far.
        files: usize,
        /// What make just printed (e.g. `CC kernel/fork.o`).
        current: &'a str,
    },
}

/// Why a kernel build failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelBuildError {
    /// A tool is not installed.
    #[error("{tool} is not installed (run ci/install-deps.sh, or apt-get install the kernel build dependencies)")]
    MissingTool {
        /// The tool.
        tool: &'static str,
    },
    /// The kernel source is missing.
    #[error("kernel source {path} not found (install Debian's linux-source-6.1 package, or set kernel.source)")]
    MissingSource {
        /// The path.
        path: PathBuf,
    },
    /// A fragment does not parse.
    #[error("invalid kconfig fragment")]
    Fragment(#[source] kconfig::KconfigError),
    /// The resolved config violates the policy or drops requested symbols.
    #[error("kernel config check failed ({count} findings; resolved config kept at {config}):\n{list}", count = findings.len(), list = listed(findings))]
    ConfigCheck {
        /// The findings.
        findings: Vec<Finding>,
        /// Where the resolved config was saved.
        config: PathBuf,
    },
    /// A cache entry whose outputs are not the ones recorded when it was built.
    #[error("kernel cache entry {entry} is not what was built: {file} has sha256 {actual}, its build recorded {expected} (delete the entry to rebuild it)")]
    CacheTampered {
        /// The entry directory.
        entry: PathBuf,
        /// The file that differs.
        file: &'static str,
        /// The recorded digest.
        expected: String,
        /// The file's digest now.
        actual: String,
    },
    /// A fragment asks for what the policy refuses (found before anything is unpacked).
    #[error("the kernel fragments ask for what the kconfig policy refuses ({count} findings; nothing was built):\n{list}", count = findings.len(), list = listed(findings))]
    PolicyRequest {
        /// The findings.
        findings: Vec<Finding>,
    },
    /// A cache entry whose resolved config the policy or the fragments refuse.
    #[error("kernel cache entry {entry} was not built from these fragments under this policy ({count} findings):\n{list}\n(delete the entry to rebuild it)", count = findings.len(), list = listed(findings))]
    CachePolicy {
        /// The entry directory.
        entry: PathBuf,
        /// The findings.
        findings: Vec<Finding>,
    },
    /// A make step failed.
    #[error("`make {step}` failed with {status}; full log: {log}\n{tail}")]
    Make {
        /// The target.
        step: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// Log path.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// A file system operation failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl KernelBuildError {
    /// The kind of failure.
    pub fn class(&self) -> jek_errors::Class {
        use jek_errors::Class;
        match self {
            KernelBuildError::ConfigCheck { .. }
            | KernelBuildError::PolicyRequest { .. }
            | KernelBuildError::CacheTampered { .. }
            | KernelBuildError::CachePolicy { .. } => Class::Rejected,
            KernelBuildError::Fragment(_) | KernelBuildError::MissingSource { .. } => {
                Class::Invalid
            }
            KernelBuildError::MissingTool { .. }
            | KernelBuildError::Make { .. }
            | KernelBuildError::Io { .. } => Class::Environment,
        }
    }
}

/// Findings as the build errors show them: one `  - ` line each.
fn listed(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("  - {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KernelBuildError {
    let path = path.to_path_buf();
    move |source| KernelBuildError::Io { what, path, source }
}

/// Whether an executable named `tool` is on `PATH`.
pub fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or(&[]));
    }
    Ok(hex::encode(h.finalize()))
}

/// SHA-256 over every regular file of a directory tree (sorted relative paths and contents).
fn sha256_tree(root: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                files.push(e.path());
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(
            f.strip_prefix(root)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update([0]);
        h.update(sha256_file(&f)?.as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

fn first_line(cmd: &str) -> String {
    Command::new(cmd)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("{cmd}: unknown"))
}

/// Computes the input record (hashing the source) and its cache key.
pub fn input_record(inputs: &KernelInputs) -> Result<(InputRecord, String), KernelBuildError> {
    if !inputs.source.exists() {
        return Err(KernelBuildError::MissingSource {
            path: inputs.source.clone(),
        });
    }
    let source_digest = if inputs.source.is_dir() {
        sha256_tree(&inputs.source)
    } else {
        sha256_file(&inputs.source)
    }
    .map_err(io("cannot hash kernel source", &inputs.source))?;
    let record = InputRecord {
        build_recipe_version: BUILD_RECIPE_VERSION,
        source: NamedDigest {
            name: inputs.source.display().to_string(),
            sha256: source_digest,
        },
        fragments: inputs
            .fragments
            .iter()
            .map(|(n, t)| NamedDigest {
                name: n.clone(),
                sha256: hex::encode(Sha256::digest(t.as_bytes())),
            })
            .collect(),
        toolchain: ["gcc", "ld", "make"]
            .iter()
            .map(|c| first_line(c))
            .collect(),
        source_date_epoch: inputs.source_date_epoch,
    };
    // The source path itself is not part of the key: the same bytes elsewhere are the same input.
    let mut keyed = record.clone();
    keyed.source.name = String::new();
    let key = hex::encode(Sha256::digest(
        serde_json::to_vec(&keyed).unwrap_or_default(),
    ));
    Ok((record, key))
}

fn entry_artifacts(
    entry: &Path,
    key: &str,
    inputs: InputRecord,
    cached: bool,
    logs: &Path,
) -> KernelArtifacts {
    KernelArtifacts {
        entry: entry.to_path_buf(),
        bzimage: entry.join("bzImage"),
        vmlinux: entry.join("vmlinux"),
        config: entry.join("config"),
        log: logs.join(format!("{key}.log")),
        key: key.to_string(),
        inputs,
        cached,
    }
}

/// Parses every fragment and checks that no two disagree and that none asks for what the
/// policy refuses, before anything is unpacked or compiled.
fn parse_fragments(inputs: &KernelInputs) -> Result<Vec<(String, Config)>, KernelBuildError> {
    let fragments = inputs
        .fragments
        .iter()
        .map(|(n, t)| Config::parse(t, n).map(|c| (n.clone(), c)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(KernelBuildError::Fragment)?;
    kconfig::merge_requests(&fragments).map_err(KernelBuildError::Fragment)?;
    if let Some(policy) = &inputs.policy {
        let findings = kconfig::check_requests(&fragments, policy);
        if !findings.is_empty() {
            return Err(KernelBuildError::PolicyRequest { findings });
        }
    }
    Ok(fragments)
}

/// Builds the kernel, or returns the cached build of the same inputs. Concurrent callers
/// with the same inputs wait for each other (a lock file per key).
pub fn build(
    inputs: &KernelInputs,
    cache: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<KernelArtifacts, KernelBuildError> {
    for tool in REQUIRED_TOOLS {
        if !have_tool(tool) {
            return Err(KernelBuildError::MissingTool { tool });
        }
    }
    let fragments = parse_fragments(inputs)?;
    progress(Progress::Step("hashing inputs"));
    let (record, key) = input_record(inputs)?;
    let kdir = cache.join("kernel");
    let logs = cache.join("logs");
    for d in [&kdir, &logs] {
        std::fs::create_dir_all(d).map_err(io("cannot create cache directory", d))?;
    }
    let lock_path = kdir.join(format!("{key}.lock"));
    let lock = std::fs::File::create(&lock_path).map_err(io("cannot create lock", &lock_path))?;
    lock.lock().map_err(io("cannot lock", &lock_path))?;
    let entry = kdir.join(&key);
    if entry.join("complete").is_file() {
        if entry.join(OUTPUTS_FILE).is_file() {
            progress(Progress::Step("checking the cached kernel"));
            check_entry(&entry, &fragments, inputs.policy.as_ref())?;
            tracing::info!(key = %key, "kernel cache hit (checked)");
            crate::cache::touch(&entry);
            return Ok(entry_artifacts(&entry, &key, record, true, &logs));
        }
        tracing::warn!(entry = %entry.display(), "kernel cache entry has no output record (made by an older jek): rebuilding it");
    }
    // Removed however the build ends: success, failure, or a signal (with
    // `interrupt_builds`); a SIGKILL leaves it for `jek cache prune`.
    let work = WorkDir::new(cache.join("work").join(&key));
    let out = compile(
        inputs,
        &fragments,
        &work.0,
        &logs.join(format!("{key}.log")),
        progress,
    )?;
    progress(Progress::Step("writing the cache entry"));
    let tmp_dir = WorkDir::new(kdir.join(format!(".{key}.tmp")));
    let tmp = &tmp_dir.0;
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp).map_err(io("cannot create", tmp))?;
    for (from, to) in [
        (&out.bzimage, "bzImage"),
        (&out.vmlinux, "vmlinux"),
        (&out.config, "config"),
    ] {
        std::fs::copy(from, tmp.join(to)).map_err(io("cannot copy build output", from))?;
    }
    let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
    std::fs::write(tmp.join("inputs.json"), json).map_err(io("cannot write", tmp))?;
    let hash = |name: &str| {
        let p = tmp.join(name);
        sha256_file(&p).map_err(io("cannot read", &p))
    };
    let outputs = OutputRecord {
        bzimage: hash("bzImage")?,
        vmlinux: hash("vmlinux")?,
        config: hash("config")?,
    };
    let json = serde_json::to_vec_pretty(&outputs).unwrap_or_default();
    std::fs::write(tmp.join(OUTPUTS_FILE), json).map_err(io("cannot write", tmp))?;
    let _ = std::fs::remove_dir_all(&entry);
    std::fs::rename(tmp, &entry).map_err(io("cannot move cache entry into place", &entry))?;
    std::fs::write(entry.join("complete"), b"").map_err(io("cannot write", &entry))?;
    drop(work);
    Ok(entry_artifacts(&entry, &key, record, false, &logs))
}

/// The output record's file name in a cache entry.
pub const OUTPUTS_FILE: &str = "outputs.json";

/// Checks a cache entry before it is used: its outputs are the ones its build recorded,
/// and its resolved config passes the fragments and the policy (as a fresh build's would).
pub fn check_entry(
    entry: &Path,
    fragments: &[(String, Config)],
    policy: Option<&kconfig::Policy>,
) -> Result<(), KernelBuildError> {
    let record_path = entry.join(OUTPUTS_FILE);
    let bytes =
        jek_fsio::read_regular(&record_path, 64 << 10).map_err(|e| KernelBuildError::Io {
            what: "cannot read the cache entry's output record",
            path: record_path.clone(),
            source: std::io::Error::other(jek_errors::chain_line(&e)),
        })?;
    let recorded: OutputRecord =
        serde_json::from_slice(&bytes).map_err(|e| KernelBuildError::Io {
            what: "invalid output record",
            path: record_path.clone(),
            source: std::io::Error::other(e),
        })?;
    for (file, expected) in [
        ("bzImage", &recorded.bzimage),
        ("vmlinux", &recorded.vmlinux),
        ("config", &recorded.config),
    ] {
        let path = entry.join(file);
        let actual = sha256_file(&path).map_err(io("cannot read", &path))?;
        if &actual != expected {
            return Err(KernelBuildError::CacheTampered {
                entry: entry.to_path_buf(),
                file,
                expected: expected.clone(),
                actual,
            });
        }
    }
    let config_path = entry.join("config");
    let text = std::fs::read_to_string(&config_path).map_err(io("cannot read", &config_path))?;
    let resolved = Config::parse(&text, ".config").map_err(KernelBuildError::Fragment)?;
    let findings = kconfig::check(&resolved, fragments, policy);
    if !findings.is_empty() {
        return Err(KernelBuildError::CachePolicy {
            entry: entry.to_path_buf(),
            findings,
        });
    }
    Ok(())
}

struct Outputs {
    bzimage: PathBuf,
    vmlinux: PathBuf,
    config: PathBuf,
}

/// What a signal must clean up: the work directories of builds in progress and the
/// process groups of their `make`s.
#[derive(Default)]
struct Active {
    dirs: Vec<PathBuf>,
    groups: Vec<u32>,
}

/// Set by the signal handler before it stops the builds: a make that then fails was
/// stopped by it, and its build waits for the handler to exit the process.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

static ACTIVE: std::sync::Mutex<Active> = std::sync::Mutex::new(Active {
    dirs: Vec::new(),
    groups: Vec::new(),
});

fn active() -> std::sync::MutexGuard<'static, Active> {
    ACTIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A work directory, removed when dropped, and by the signal handler while it lives.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(path: PathBuf) -> Self {
        active().dirs.push(path.clone());
        WorkDir(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        active().dirs.retain(|d| *d != self.0);
    }
}

/// A running make's process group, for the signal handler.
struct ChildGroup(u32);

impl ChildGroup {
    fn new(pid: u32) -> Self {
        active().groups.push(pid);
        ChildGroup(pid)
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        active().groups.retain(|g| *g != self.0);
    }
}

/// Stops every build in progress in this process: marks it interrupted, stops the running
/// `make` process groups (SIGTERM, then SIGKILL after 5 s) and removes the work directories
/// of builds in progress. Returns how many work directories were removed. For a binary's
/// signal handler, which then exits (`jek build`): nothing here ends the process.
pub fn interrupt_builds() -> usize {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
    let (dirs, groups) = {
        let a = active();
        (a.dirs.clone(), a.groups.clone())
    };
    stop_groups(&groups);
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    dirs.len()
}

fn stop_groups(groups: &[u32]) {
    use rustix::process::{kill_process_group, test_kill_process_group, Pid, Signal};
    let pids: Vec<Pid> = groups
        .iter()
        .filter_map(|g| i32::try_from(*g).ok().and_then(Pid::from_raw))
        .collect();
    for p in &pids {
        let _ = kill_process_group(*p, Signal::TERM);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pids.iter().any(|p| test_kill_process_group(*p).is_ok()) {
        if std::time::Instant::now() > deadline {
            for p in &pids {
                let _ = kill_process_group(*p, Signal::KILL);
            }
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs the make steps in `work` (wiped first). Public through [`build_uncached`] for the
/// reproducibility check.
fn compile(
    inputs: &KernelInputs,
    fragments: &[(String, Config)],
    work: &Path,
    log_path: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Outputs, KernelBuildError> {
    // make runs in the source tree, so a relative O= (a relative --cache-dir) would be
    // taken from there.
    let work = &std::path::absolute(work).map_err(io("cannot resolve", work))?;
    let _ = std::fs::remove_dir_all(work);
    let obj = work.join("obj");
    std::fs::create_dir_all(&obj).map_err(io("cannot create", &obj))?;
    let src = if inputs.source.is_dir() {
        inputs.source.clone()
    } else {
        let src = work.join("src");
        std::fs::create_dir_all(&src).map_err(io("cannot create", &src))?;
        progress(Progress::Step("unpacking kernel source"));
        let st = Command::new("tar")
            .arg("-xf")
            .arg(&inputs.source)
            .arg("-C")
            .arg(&src)
            .arg("--strip-components=1")
            .status()
            .map_err(io("cannot run tar on", &inputs.source))?;
        if !st.success() {
            return Err(KernelBuildError::Io {
                what: "tar failed to unpack",
                path: inputs.source.clone(),
                source: std::io::Error::other(st.to_string()),
            });
        }
        src
    };
    let mut log = std::fs::File::create(log_path).map_err(io("cannot create log", log_path))?;
    let timestamp = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(inputs.source_date_epoch),
    )
    .to_string();
    let kcflags = format!(
        "-ffile-prefix-map={}=linux -ffile-prefix-map={}=linux-obj",
        src.display(),
        obj.display()
    );
    let mut make = |target: &str,
                    progress: &mut dyn FnMut(Progress<'_>)|
     -> Result<usize, KernelBuildError> {
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg(&src)
            .arg(format!("O={}", obj.display()))
            .arg("ARCH=x86_64")
            .arg(format!("-j{}", inputs.jobs.max(1)))
            .arg(target)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env("SOURCE_DATE_EPOCH", inputs.source_date_epoch.to_string())
            .env("KBUILD_BUILD_TIMESTAMP", &timestamp)
            .env("KBUILD_BUILD_USER", "jek")
            .env("KBUILD_BUILD_HOST", "jek")
            .env("KBUILD_BUILD_VERSION", "1")
            .env("KCFLAGS", &kcflags)
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL")
            .stdin(Stdio::null());
        let (reader, writer) = std::io::pipe().map_err(io("cannot create pipe for", log_path))?;
        let writer2 = writer
            .try_clone()
            .map_err(io("cannot create pipe for", log_path))?;
        cmd.stdout(writer).stderr(writer2);
        // A group of its own, so that a signal handler can stop make and every compiler
        // it started (`interrupt_builds`) before removing the work directory.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let _ = writeln!(log, "### make {target}");
        let mut child = cmd.spawn().map_err(io("cannot run make in", &src))?;
        let _group = ChildGroup::new(child.id());
        drop(cmd);
        let mut files = 0usize;
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            let t = line.trim_start();
            if ["CC ", "AS ", "LD ", "AR ", "HOSTCC ", "OBJCOPY ", "LZ4 "]
                .iter()
                .any(|p| t.starts_with(p))
            {
                files += 1;
                progress(Progress::Compiled { files, current: t });
            }
        }
        let status = child.wait().map_err(io("cannot wait for make in", &src))?;
        if status.success() {
            return Ok(files);
        }
        while INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            // The signal handler stopped this make and exits the process shortly.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        Err(KernelBuildError::Make {
            step: target.into(),
            status,
            log: log_path.to_path_buf(),
            tail,
        })
    };
    progress(Progress::Step("make tinyconfig"));
    make("tinyconfig", progress)?;
    let config_path = obj.join(".config");
    let base = std::fs::read_to_string(&config_path).map_err(io("cannot read", &config_path))?;
    let merged = kconfig::merge(&base, fragments).map_err(KernelBuildError::Fragment)?;
    std::fs::write(&config_path, merged).map_err(io("cannot write", &config_path))?;
    progress(Progress::Step("make olddefconfig"));
    make("olddefconfig", progress)?;
    let resolved_text =
        std::fs::read_to_string(&config_path).map_err(io("cannot read", &config_path))?;
    let resolved = Config::parse(&resolved_text, ".config").map_err(KernelBuildError::Fragment)?;
    let findings = kconfig::check(&resolved, fragments, inputs.policy.as_ref());
    if !findings.is_empty() {
        let kept = log_path.with_extension("config");
        let _ = std::fs::write(&kept, &resolved_text);
        return Err(KernelBuildError::ConfigCheck {
            findings,
            config: kept,
        });
    }
    progress(Progress::Step("make bzImage"));
    // The file count of the last build of this resolved config, for a progress bar.
    let counted = log_path.with_file_name(format!(
        "{}.files",
        hex::encode(Sha256::digest(resolved_text.as_bytes()))
    ));
    if let Some(total) = std::fs::read_to_string(&counted)
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        progress(Progress::Expect { total });
    }
    let files = make("bzImage", progress)?;
    let _ = std::fs::write(&counted, files.to_string());
    Ok(Outputs {
        bzimage: obj.join("arch/x86/boot/bzImage"),
        vmlinux: obj.join("vmlinux"),
        config: config_path,
    })
}

/// Builds from clean in `work` without touching the cache, for the reproducibility check.
/// Returns the bzImage, vmlinux and config bytes.
pub fn build_uncached(
    inputs: &KernelInputs,
    work: &Path,
    log: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<[Vec<u8>; 3], KernelBuildError> {
    let fragments = parse_fragments(inputs)?;
    let work = WorkDir::new(work.to_path_buf());
    let out = compile(inputs, &fragments, &work.0, log, progress)?;
    let read = |p: &Path| std::fs::read(p).map_err(io("cannot read", p));
    Ok([read(&out.bzimage)?, read(&out.vmlinux)?, read(&out.config)?])
}
