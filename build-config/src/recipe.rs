//! The build recipe: YAML in, a validated [`Recipe`] with absolute paths out.
//!
//! ```yaml
//! name: demo
//! version: 1.0.0
//! security_version: 1
//! kernel:
//!   source: /usr/src/linux-source-6.1.tar.xz   # default; or a source directory
//!   fragments: [../kernel-config/base.config, ../kernel-config/virtio.config]
//!   policy: ../kernel-config/policy.yaml
//!   vmlinux: true                               # also carry the ELF vmlinux
//! cmdline: console=ttyS0 reboot=k panic=-1
//! init: ../target/x86_64-unknown-linux-gnu/guest/jek-init
//! files:
//!   - { src: ../target/x86_64-unknown-linux-gnu/guest/jek-sample-app, dst: /bin/jek-sample-app }
//! app:
//!   command: [/bin/jek-sample-app]
//!   args: [--exit-code, "0"]
//!   env: { GREETING: hello }
//! signing:
//!   keys: [../.jek/dev.key]
//! source_date_epoch: 1700000000   # optional: the build time when SOURCE_DATE_EPOCH is unset
//! ```
//!
//! Without `SOURCE_DATE_EPOCH` and without `source_date_epoch`, the build time is the
//! kernel source's modification time: the inputs alone decide it, so a second build of
//! the same inputs hits the kernel cache.
//!
//! Relative paths are resolved against the recipe file's directory. The kconfig policy it
//! names is read and validated here too, so a bad one is reported before any compile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jek_builder::recipe::{App, ExtraFile, Recipe, DEFAULT_KERNEL_SOURCE};
use serde::{Deserialize, Serialize};

use jek_config::MAX_CONFIG_SIZE;

use crate::BuildConfigError;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RecipeDoc {
    name: String,
    version: String,
    security_version: u64,
    kernel: KernelDoc,
    cmdline: String,
    init: PathBuf,
    #[serde(default)]
    files: Vec<FileDoc>,
    app: AppDoc,
    #[serde(default)]
    signing: Option<SigningDoc>,
    #[serde(default)]
    source_date_epoch: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KernelDoc {
    #[serde(default)]
    source: Option<PathBuf>,
    fragments: Vec<PathBuf>,
    #[serde(default)]
    policy: Option<PathBuf>,
    #[serde(default = "yes")]
    vmlinux: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    src: PathBuf,
    dst: String,
    #[serde(default)]
    mode: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AppDoc {
    #[serde(default = "app_name")]
    name: String,
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

fn app_name() -> String {
    "app".into()
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SigningDoc {
    keys: Vec<PathBuf>,
}

/// Why a recipe is invalid.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// Not YAML of the recipe's shape.
    #[error("not a valid recipe")]
    Yaml(#[source] serde_yaml::Error),
    /// A field with an invalid value.
    #[error("recipe field {field}: {reason}")]
    Field {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> RecipeError {
    RecipeError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parses recipe YAML; relative paths are resolved against `base`. The kconfig policy is
/// not read: [`load`] does that.
pub fn parse(text: &str, base: &Path) -> Result<Recipe, RecipeError> {
    let doc: RecipeDoc = serde_yaml::from_str(text).map_err(RecipeError::Yaml)?;
    let as_json = serde_json::to_value(&doc).map_err(|e| field("(recipe)", e.to_string()))?;
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    if doc.kernel.fragments.is_empty() {
        return Err(field(
            "kernel.fragments",
            "at least one fragment is required",
        ));
    }
    if doc.app.command.is_empty() {
        return Err(field("app.command", "must name an executable"));
    }
    // The recipe's name and app name become the default pod and container names the
    // guest init checks (and the name of the run directory).
    for (f, value) in [("name", &doc.name), ("app.name", &doc.app.name)] {
        jek_pod::spec::check_label(value).map_err(|e| {
            field(
                f,
                format!("{value:?} is not a DNS-1123 label (a-z, 0-9, '-'): {e}"),
            )
        })?;
    }
    if doc.cmdline.len() > 2047 || !doc.cmdline.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(field(
            "cmdline",
            "must be at most 2047 printable ASCII characters",
        ));
    }
    let mut files = Vec::new();
    for (i, f) in doc.files.iter().enumerate() {
        let dst = f.dst.strip_prefix('/').unwrap_or(&f.dst).to_string();
        if dst.is_empty()
            || dst
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            || dst == "init"
        {
            return Err(field(
                format!("files[{i}].dst"),
                format!("{:?} is not a usable guest path", f.dst),
            ));
        }
        let mode = f.mode.unwrap_or(0o755);
        if mode > 0o7777 {
            return Err(field(
                format!("files[{i}].mode"),
                "must be permission bits (at most 0o7777)",
            ));
        }
        files.push(ExtraFile {
            src: abs(&f.src),
            dst,
            mode,
        });
    }
    Ok(Recipe {
        name: doc.name,
        version: doc.version,
        security_version: doc.security_version,
        source: doc
            .kernel
            .source
            .as_deref()
            .map_or_else(|| PathBuf::from(DEFAULT_KERNEL_SOURCE), abs),
        fragments: doc.kernel.fragments.iter().map(|p| abs(p)).collect(),
        policy: doc.kernel.policy.as_deref().map(abs),
        vmlinux: doc.kernel.vmlinux,
        cmdline: doc.cmdline,
        init: abs(&doc.init),
        files,
        app: App {
            name: doc.app.name,
            command: doc.app.command,
            args: doc.app.args,
            env: doc.app.env,
        },
        keys: doc
            .signing
            .map(|s| s.keys.iter().map(|p| abs(p)).collect())
            .unwrap_or_default(),
        source_date_epoch: doc.source_date_epoch,
        as_json,
        kconfig_policy: None,
    })
}

/// Reads a recipe file and the kconfig policy it names.
pub fn load(path: &Path) -> Result<Recipe, BuildConfigError> {
    let text = jek_config::read_text("recipe", path, MAX_CONFIG_SIZE)?;
    let base = jek_config::base_dir(path);
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let mut recipe = parse(&text, &base).map_err(|source| BuildConfigError::Recipe {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(p) = &recipe.policy {
        recipe.kconfig_policy = Some(crate::kconfig::load(p)?);
    }
    Ok(recipe)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MIN: &str = "name: d\nversion: '1'\nsecurity_version: 1\nkernel: {fragments: [a.config]}\ncmdline: console=ttyS0\ninit: init\napp: {command: [/bin/x]}\n";

    #[test]
    fn resolves_paths_and_defaults() {
        let r = parse(MIN, Path::new("/r")).unwrap();
        assert_eq!(r.source, PathBuf::from(DEFAULT_KERNEL_SOURCE));
        assert_eq!(r.fragments, vec![PathBuf::from("/r/a.config")]);
        assert_eq!(r.init, PathBuf::from("/r/init"));
        assert!(r.vmlinux);
        assert_eq!(r.app.name, "app");
    }

    #[test]
    fn names_the_bad_field() {
        let e = parse(&format!("{MIN}colour: red\n"), Path::new("/")).unwrap_err();
        assert!(
            matches!(e, RecipeError::Yaml(ref y) if y.to_string().contains("unknown field `colour`"))
        );
        let e = parse(&MIN.replace("console=ttyS0", "\"a\\tb\""), Path::new("/")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "recipe field cmdline: must be at most 2047 printable ASCII characters"
        );
        let e = parse(
            &format!("{MIN}files: [{{src: a, dst: /x/../y}}]\n"),
            Path::new("/"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "recipe field files[0].dst: \"/x/../y\" is not a usable guest path"
        );
        let e = parse(&MIN.replace("[a.config]", "[]"), Path::new("/")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "recipe field kernel.fragments: at least one fragment is required"
        );
    }
}
