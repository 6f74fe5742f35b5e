//! `jek build`: recipe -> kernel (cached) -> initramfs -> signed bundle, provenance and
//! checksums. Also the reproducibility check.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use jek_verifier::format::Role;
use jek_verifier::{Sha256Digest, UnixTime};

use crate::cpio::{self, Entry, Kind};
use crate::kconfig;
use crate::kernel::{self, KernelArtifacts, KernelBuildError, KernelInputs, Progress};
use crate::pack::{pack, PackError, PackRequest};
use crate::provenance::{self, Dependency, ProvenanceInput};
use crate::recipe::Recipe;
use jek_errors::Class;
use jek_fsio::{write_atomic, Overwrite, WriteError};

/// Where and how to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Cache root (kernel builds and logs).
    pub cache: PathBuf,
    /// Output directory for the bundle, provenance and SHA256SUMS.
    pub out_dir: PathBuf,
    /// `SOURCE_DATE_EPOCH`: build timestamp, manifest time and initramfs mtimes.
    pub source_date_epoch: u64,
    /// `make -j`.
    pub jobs: usize,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The signed bundle.
    pub bundle: PathBuf,
    /// The signed SLSA provenance.
    pub provenance: PathBuf,
    /// The checksum file.
    pub sums: PathBuf,
    /// The kernel build.
    pub kernel: KernelArtifacts,
    /// SHA-256 of the bundle file.
    pub bundle_sha256: Sha256Digest,
    /// Bundle size.
    pub bundle_size: usize,
    /// Symbols `=y` in the resolved config.
    pub builtin_symbols: usize,
    /// Kernel release.
    pub kernel_release: String,
}

/// What `jek build --json` prints of a build.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildSummary<'a> {
    /// The signed bundle.
    pub bundle: &'a Path,
    /// The signed provenance.
    pub provenance: &'a Path,
    /// The checksum file.
    pub sha256sums: &'a Path,
    /// SHA-256 of the bundle file.
    pub bundle_sha256: Sha256Digest,
    /// Its size.
    pub bundle_size: usize,
    /// Kernel release.
    pub kernel_release: &'a str,
    /// Symbols `=y`.
    pub builtin_symbols: usize,
    /// Whether the kernel came from the cache.
    pub kernel_cached: bool,
    /// The kernel cache key.
    pub cache_key: &'a str,
    /// The kernel build log.
    pub build_log: &'a Path,
}

impl BuildOutput {
    /// The JSON view of the build.
    pub fn summary(&self) -> BuildSummary<'_> {
        BuildSummary {
            bundle: &self.bundle,
            provenance: &self.provenance,
            sha256sums: &self.sums,
            bundle_sha256: self.bundle_sha256,
            bundle_size: self.bundle_size,
            kernel_release: &self.kernel_release,
            builtin_symbols: self.builtin_symbols,
            kernel_cached: self.kernel.cached,
            cache_key: &self.kernel.key,
            build_log: &self.kernel.log,
        }
    }

    /// What `jek build` prints: the files written and where the kernel came from.
    pub fn text(&self) -> String {
        let source = if self.kernel.cached {
            "from cache"
        } else {
            "built"
        };
        format!(
            "bundle      {} ({} bytes, sha256:{})\nprovenance  {}\nchecksums   {}\nkernel      {} ({} symbols =y, {source})",
            self.bundle.display(),
            self.bundle_size,
            self.bundle_sha256,
            self.provenance.display(),
            self.sums.display(),
            self.kernel_release,
            self.builtin_symbols,
        )
    }
}

/// What `jek build --check-reproducible` reports.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reproducibility<'a> {
    /// Whether every component agrees.
    pub reproducible: bool,
    /// The first component that differs.
    pub first_difference: Option<&'static str>,
    /// Every comparison.
    pub components: &'a [Comparison],
}

impl<'a> Reproducibility<'a> {
    /// The report of these comparisons.
    pub fn of(components: &'a [Comparison]) -> Self {
        let first_difference = components
            .iter()
            .find(|c| !c.identical())
            .map(|c| c.component);
        Reproducibility {
            reproducible: first_difference.is_none(),
            first_difference,
            components,
        }
    }

    /// One line per component: `NAME identical|DIFFERS FIRST SECOND`.
    pub fn text(&self) -> String {
        let line = |c: &Comparison| {
            let mark = if c.identical() {
                "identical"
            } else {
                "DIFFERS"
            };
            format!("{:<10} {mark}  {} {}", c.component, c.first, c.second)
        };
        self.components
            .iter()
            .map(line)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An input file cannot be read.
    #[error("cannot read {what} {path}")]
    Read {
        /// What it is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel build failed.
    #[error("kernel build failed")]
    Kernel(#[source] Box<KernelBuildError>),
    /// A binary for the initramfs is dynamically linked.
    #[error("{path} is dynamically linked (interpreter {interp}); the initramfs has no dynamic loader: build it static")]
    NotStatic {
        /// The binary.
        path: PathBuf,
        /// Its PT_INTERP.
        interp: String,
    },
    /// The initramfs cannot be written.
    #[error("cannot assemble the initramfs")]
    Initramfs(#[source] cpio::CpioError),
    /// Packing failed.
    #[error("cannot pack the bundle")]
    Pack(#[source] PackError),
    /// An output cannot be written.
    #[error("cannot write build output")]
    Write(#[source] WriteError),
    /// The bundle just written does not parse (a bug, reported rather than hidden).
    #[error("cannot re-read the bundle just built")]
    Reread(#[source] jek_verifier::format::FormatError),
    /// The recipe names no key and none was given.
    #[error("no signing key: name one in the recipe (signing.keys) or pass --key / --key-env")]
    NoKeys,
}

impl BuildError {
    /// The kind of failure: a kernel config that fails its policy is rejected; a bad input
    /// (missing file, fragment, dynamically linked binary, no key) is invalid; a failed
    /// tool, compile or write is the environment's.
    pub fn class(&self) -> Class {
        match self {
            BuildError::Kernel(k) => k.class(),
            BuildError::Read { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => Class::Invalid,
                _ => Class::Environment,
            },
            BuildError::NotStatic { .. }
            | BuildError::Pack(_)
            | BuildError::Initramfs(_)
            | BuildError::NoKeys => Class::Invalid,
            BuildError::Write(e) => e.class(),
            BuildError::Reread(_) => Class::Environment,
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Rejects ELF executables with an interpreter: they cannot run from the initramfs.
fn require_static(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    if let Ok(elf) = goblin::elf::Elf::parse(bytes) {
        if let Some(interp) = elf.interpreter {
            return Err(BuildError::NotStatic {
                path: path.to_path_buf(),
                interp: interp.to_string(),
            });
        }
    }
    Ok(())
}

/// The pod spec the init reads when the loader supplies none (`/etc/jek/app.json`).
pub fn app_spec_json(recipe: &Recipe) -> Vec<u8> {
    let spec = jek_pod::spec::PodSpec {
        agent: false,
        name: recipe.name.clone(),
        hostname: None,
        containers: vec![jek_pod::spec::Container {
            name: recipe.app.name.clone(),
            image: None,
            working_dir: None,
            command: recipe.app.command.clone(),
            args: recipe.app.args.clone(),
            env: recipe
                .app
                .env
                .iter()
                .map(|(name, value)| jek_pod::spec::EnvVar {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        }],
    };
    // Serializing strings and vectors into a Vec cannot fail.
    serde_json::to_vec(&spec).unwrap_or_default()
}

/// Builds the initramfs: `/init`, `/dev/console`, the mount points, `/etc/jek/app.json` and
/// the recipe's files. Returns the archive and the digests of its inputs.
pub fn initramfs(recipe: &Recipe, mtime: u32) -> Result<(Vec<u8>, Vec<Dependency>), BuildError> {
    let init = read("init binary", &recipe.init)?;
    require_static(&recipe.init, &init)?;
    let mut deps = vec![Dependency::file(
        recipe.init.display().to_string(),
        &recipe.init,
        Sha256Digest::of(&init).to_hex(),
    )];
    let dir = |p: &str| Entry {
        path: p.into(),
        perm: 0o755,
        kind: Kind::Dir,
    };
    let mut entries = vec![
        Entry {
            path: "init".into(),
            perm: 0o755,
            kind: Kind::File(init),
        },
        Entry {
            path: "dev/console".into(),
            perm: 0o600,
            kind: Kind::CharDev { major: 5, minor: 1 },
        },
        dir("proc"),
        dir("sys"),
        dir("run"),
        dir("tmp"),
        Entry {
            path: "etc/jek/app.json".into(),
            perm: 0o644,
            kind: Kind::File(app_spec_json(recipe)),
        },
    ];
    for f in &recipe.files {
        let data = read("initramfs file", &f.src)?;
        if f.mode & 0o111 != 0 {
            require_static(&f.src, &data)?;
        }
        deps.push(Dependency::file(
            f.src.display().to_string(),
            &f.src,
            Sha256Digest::of(&data).to_hex(),
        ));
        entries.push(Entry {
            path: f.dst.clone(),
            perm: f.mode,
            kind: Kind::File(data),
        });
    }
    let bytes = cpio::write(&entries, mtime).map_err(BuildError::Initramfs)?;
    Ok((bytes, deps))
}

/// Reads fragments and policy named by the recipe into kernel build inputs.
pub fn kernel_inputs(recipe: &Recipe, opts: &BuildOptions) -> Result<KernelInputs, BuildError> {
    let fragments = recipe
        .fragments
        .iter()
        .map(|p| {
            let text =
                String::from_utf8(read("kconfig fragment", p)?).map_err(|_| BuildError::Read {
                    what: "kconfig fragment",
                    path: p.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"),
                })?;
            Ok((file_name(p), text))
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    let policy = recipe.kconfig_policy.clone();
    Ok(KernelInputs {
        source: recipe.source.clone(),
        fragments,
        policy,
        source_date_epoch: opts.source_date_epoch,
        jobs: opts.jobs,
    })
}

struct Parts {
    bzimage: Vec<u8>,
    vmlinux: Option<Vec<u8>>,
    config: Vec<u8>,
    initramfs: Vec<u8>,
}

fn pack_parts(
    recipe: &Recipe,
    parts: &Parts,
    keys: &[SigningKey],
    created: u64,
) -> Result<Vec<u8>, BuildError> {
    let req = PackRequest {
        kernel: &parts.bzimage,
        vmlinux: parts.vmlinux.as_deref(),
        initramfs: Some(&parts.initramfs),
        cmdline: &recipe.cmdline,
        config: Some(&parts.config),
        name: recipe.name.clone(),
        version: recipe.version.clone(),
        security_version: recipe.security_version,
        kernel_release: None,
        created: UnixTime(created),
    };
    pack(&req, keys).map_err(BuildError::Pack)
}

fn mtime(opts: &BuildOptions) -> u32 {
    u32::try_from(opts.source_date_epoch).unwrap_or(u32::MAX)
}

/// Runs the whole build.
pub fn build(
    recipe: &Recipe,
    keys: &[SigningKey],
    opts: &BuildOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<BuildOutput, BuildError> {
    if keys.is_empty() {
        return Err(BuildError::NoKeys);
    }
    let inputs = kernel_inputs(recipe, opts)?;
    // Every recipe input is read before the kernel compiles: a missing init or file is
    // reported in a second, not after minutes of make.
    progress(Progress::Step("initramfs"));
    let (initramfs, init_deps) = initramfs(recipe, mtime(opts))?;
    let kernel = kernel::build(&inputs, &opts.cache, progress)
        .map_err(|e| BuildError::Kernel(Box::new(e)))?;
    let parts = Parts {
        bzimage: read("bzImage", &kernel.bzimage)?,
        vmlinux: if recipe.vmlinux {
            Some(read("vmlinux", &kernel.vmlinux)?)
        } else {
            None
        },
        config: read("kernel config", &kernel.config)?,
        initramfs,
    };
    progress(Progress::Step("pack and sign"));
    let bundle = pack_parts(recipe, &parts, keys, opts.source_date_epoch)?;
    let facts = crate::kernel_image::examine(&parts.bzimage).ok();
    let config = kconfig::Config::parse(&String::from_utf8_lossy(&parts.config), "config")
        .unwrap_or_default();

    std::fs::create_dir_all(&opts.out_dir).map_err(|source| {
        BuildError::Write(WriteError::Write {
            path: opts.out_dir.clone(),
            source,
        })
    })?;
    let bundle_name = format!("{}-{}.jek", recipe.name, recipe.version);
    let bundle_path = opts.out_dir.join(&bundle_name);
    let bundle_sha256 = Sha256Digest::of(&bundle);
    write_atomic(&bundle_path, &bundle, 0o644, Overwrite::Allow).map_err(BuildError::Write)?;

    let mut deps = vec![Dependency::file(
        kernel.inputs.source.name.clone(),
        &recipe.source,
        kernel.inputs.source.sha256.clone(),
    )];
    for (p, f) in recipe.fragments.iter().zip(&kernel.inputs.fragments) {
        deps.push(Dependency::file(
            p.display().to_string(),
            p,
            f.sha256.clone(),
        ));
    }
    deps.extend(init_deps);
    let prov = provenance::signed(
        &ProvenanceInput {
            subject_name: &bundle_name,
            subject_sha256: &bundle_sha256.to_hex(),
            recipe: &recipe.as_json,
            dependencies: deps,
            toolchain: &kernel.inputs.toolchain,
            invocation_id: &kernel.key,
            source_date_epoch: opts.source_date_epoch,
            kernel_from_cache: kernel.cached,
        },
        keys,
    );
    let prov_name = format!("{}-{}.provenance.intoto.json", recipe.name, recipe.version);
    let prov_path = opts.out_dir.join(&prov_name);
    write_atomic(&prov_path, &prov, 0o644, Overwrite::Allow).map_err(BuildError::Write)?;
    let mut sums = [
        (bundle_sha256.to_hex(), bundle_name),
        (Sha256Digest::of(&prov).to_hex(), prov_name),
    ];
    sums.sort_by(|a, b| a.1.cmp(&b.1));
    let sums_text: String = sums.iter().map(|(h, n)| format!("{h}  {n}\n")).collect();
    let sums_path = opts.out_dir.join("SHA256SUMS");
    write_atomic(&sums_path, sums_text.as_bytes(), 0o644, Overwrite::Allow)
        .map_err(BuildError::Write)?;
    Ok(BuildOutput {
        bundle: bundle_path,
        provenance: prov_path,
        sums: sums_path,
        bundle_sha256,
        bundle_size: bundle.len(),
        builtin_symbols: config.count_builtin(),
        kernel_release: facts.and_then(|f| f.release).unwrap_or_default(),
        kernel,
    })
}

/// One component compared by the reproducibility check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    /// Component name.
    pub component: &'static str,
    /// Digest of the first build.
    pub first: Sha256Digest,
    /// Digest of the second build.
    pub second: Sha256Digest,
}

impl Comparison {
    /// Whether both builds agree.
    pub fn identical(&self) -> bool {
        self.first == self.second
    }
}

/// Builds twice from clean and compares every component and the bundle. The cached build
/// (itself built from clean) counts as the first when present; the second is always a new
/// build in a different directory, so path leaks show up too.
pub fn check_reproducible(
    recipe: &Recipe,
    keys: &[SigningKey],
    opts: &BuildOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<Comparison>, BuildError> {
    let first = build(recipe, keys, opts, progress)?;
    let inputs = kernel_inputs(recipe, opts)?;
    let work = opts
        .cache
        .join("work")
        .join(format!("repro-{}", std::process::id()));
    let log = opts
        .cache
        .join("logs")
        .join(format!("{}-repro.log", first.kernel.key));
    progress(Progress::Step("second build from clean"));
    let [bz, vm, cfg] = kernel::build_uncached(&inputs, &work, &log, progress)
        .map_err(|e| BuildError::Kernel(Box::new(e)))?;
    let (initramfs, _) = initramfs(recipe, mtime(opts))?;
    let second = Parts {
        bzimage: bz,
        vmlinux: if recipe.vmlinux { Some(vm) } else { None },
        config: cfg,
        initramfs,
    };
    let bundle2 = pack_parts(recipe, &second, keys, opts.source_date_epoch)?;
    let bundle1 = read("bundle", &first.bundle)?;
    let raw1 = jek_verifier::format::parse(&bundle1).map_err(BuildError::Reread)?;
    let digest_of = |role: Role| {
        raw1.section(role)
            .map(|s| Sha256Digest::of(s.data))
            .unwrap_or(Sha256Digest([0; 32]))
    };
    let mut out = vec![Comparison {
        component: "bzimage",
        first: digest_of(Role::BzImage),
        second: Sha256Digest::of(&second.bzimage),
    }];
    if let Some(vm) = &second.vmlinux {
        out.push(Comparison {
            component: "vmlinux",
            first: digest_of(Role::Vmlinux),
            second: Sha256Digest::of(vm),
        });
    }
    out.push(Comparison {
        component: "config",
        first: digest_of(Role::Config),
        second: Sha256Digest::of(&second.config),
    });
    out.push(Comparison {
        component: "initramfs",
        first: digest_of(Role::Initramfs),
        second: Sha256Digest::of(&second.initramfs),
    });
    out.push(Comparison {
        component: "bundle",
        first: Sha256Digest::of(&bundle1),
        second: Sha256Digest::of(&bundle2),
    });
    Ok(out)
}
