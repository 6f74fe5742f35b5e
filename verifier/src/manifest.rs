//! The signed manifest: an in-toto Statement v1 whose subjects are the bundle's components
//! and whose predicate describes the bundle.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::format::{Role, FORMAT_VERSION};

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of a jek bundle manifest, version 1.
pub const PREDICATE_TYPE: &str = "https://jek.dev/BundleManifest/v1";

/// One component as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Its role.
    pub role: Role,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: Sha256Digest,
}

/// Facts about the kernel image read from it at build time (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KernelInfo {
    /// bzImage boot protocol version, e.g. `"2.15"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_protocol: Option<String>,
    /// Compression of the bzImage payload, e.g. `"lz4"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_format: Option<String>,
    /// ELF entry point of `vmlinux`, as `0x`-prefixed hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elf_entry: Option<String>,
}

impl KernelInfo {
    fn is_empty(&self) -> bool {
        self == &KernelInfo::default()
    }
}

/// The validated content of a bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Bundle name: 1 to 128 of `[A-Za-z0-9._-]`.
    pub name: String,
    /// Bundle version: 1 to 64 printable ASCII characters without spaces.
    pub version: String,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// The kernel's `uname -r` (at most 64 characters).
    pub kernel_release: String,
    /// Creation time, RFC 3339 UTC (from `SOURCE_DATE_EPOCH` when set).
    pub created: String,
    /// Components in bundle order.
    pub components: Vec<Component>,
    /// Facts about the kernel image.
    pub kernel: KernelInfo,
}

/// Why a statement is not a valid jek manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid statement JSON (or unknown or duplicate fields).
    #[error("manifest is not valid statement JSON")]
    Json(#[source] serde_json::Error),
    /// `_type` is not in-toto Statement v1.
    #[error("statement _type is {actual:?}, expected {STATEMENT_TYPE:?}")]
    StatementType {
        /// The value found.
        actual: String,
    },
    /// `predicateType` is not a jek manifest.
    #[error("predicateType is {actual:?}, expected {PREDICATE_TYPE:?}")]
    PredicateType {
        /// The value found.
        actual: String,
    },
    /// The manifest's format version is not the container's.
    #[error("manifest formatVersion is {actual}, expected {FORMAT_VERSION}")]
    FormatVersion {
        /// The value found.
        actual: u64,
    },
    /// A component role that does not exist.
    #[error("manifest lists unknown component role {name:?}")]
    UnknownRole {
        /// The name found.
        name: String,
    },
    /// A role listed twice.
    #[error("manifest lists component {role} twice")]
    DuplicateRole {
        /// The role.
        role: Role,
    },
    /// Subjects and components are not the same list.
    #[error("subject {index} does not name the same component as predicate.components[{index}]")]
    SubjectsDisagree {
        /// Position of the first disagreement.
        index: usize,
    },
    /// A subject without a well-formed SHA-256.
    #[error("subject {name:?} has no valid sha256 digest")]
    BadDigest {
        /// The subject's name.
        name: String,
    },
    /// A field value out of its allowed shape.
    #[error("manifest field {field} is invalid: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementJson {
    #[serde(rename = "_type")]
    type_: String,
    subject: Vec<SubjectJson>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: PredicateJson,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectJson {
    name: String,
    digest: DigestJson,
}

/// A subject's digest set. A struct rather than a map: serde rejects a field given twice
/// (`{"sha256":A,"sha256":B}` has no "last value wins") and any other algorithm.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestJson {
    sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PredicateJson {
    format_version: u64,
    name: String,
    version: String,
    security_version: u64,
    kernel_release: String,
    created: String,
    components: Vec<ComponentJson>,
    #[serde(default, skip_serializing_if = "KernelInfo::is_empty")]
    kernel: KernelInfo,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentJson {
    role: String,
    size: u64,
}

fn check_field(
    field: &'static str,
    value: &str,
    max: usize,
    ok: impl Fn(u8) -> bool,
) -> Result<(), ManifestError> {
    if value.is_empty() || value.len() > max {
        return Err(ManifestError::Field {
            field,
            reason: "empty or too long",
        });
    }
    if !value.bytes().all(ok) {
        return Err(ManifestError::Field {
            field,
            reason: "contains a character that is not allowed",
        });
    }
    Ok(())
}

/// Whether `s` is exactly `YYYY-MM-DDTHH:MM:SSZ` naming a real instant: UTC with a `Z`
/// (no offsets, not even `+00:00`), no fraction, month 1-12, a day that exists in that
/// month (30 February does not), hour below 24, minute and second below 60. One instant
/// has one spelling, so one signed manifest has one encoding.
pub fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(r)?;
        digits.iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit()
                .then(|| acc.saturating_mul(10).saturating_add(u32::from(d - b'0')))
        })
    };
    if b.len() != 20
        || [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'Z'),
        ]
        .iter()
        .any(|&(i, c)| b.get(i) != Some(&c))
    {
        return false;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day) && hour < 24 && minute < 60 && second < 60
}

impl Manifest {
    /// Checks every field's shape. Called by both the reader and the writer, so that a
    /// manifest this crate writes is always one it reads back.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_field("name", &self.name, 128, |b| {
            b.is_ascii_alphanumeric() || b"._-".contains(&b)
        })?;
        check_field("version", &self.version, 64, |b| b.is_ascii_graphic())?;
        check_field("kernelRelease", &self.kernel_release, 64, |b| {
            b.is_ascii_graphic()
        })?;
        if !is_rfc3339_utc(&self.created) {
            return Err(ManifestError::Field {
                field: "created",
                reason: "not an RFC 3339 UTC time of the form YYYY-MM-DDTHH:MM:SSZ",
            });
        }
        let mut seen = Vec::new();
        for c in &self.components {
            if seen.contains(&c.role) {
                return Err(ManifestError::DuplicateRole { role: c.role });
            }
            seen.push(c.role);
        }
        Ok(())
    }

    /// Parses and validates the statement bytes.
    pub fn from_statement_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let st: StatementJson = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        if st.type_ != STATEMENT_TYPE {
            return Err(ManifestError::StatementType { actual: st.type_ });
        }
        if st.predicate_type != PREDICATE_TYPE {
            return Err(ManifestError::PredicateType {
                actual: st.predicate_type,
            });
        }
        let p = st.predicate;
        if p.format_version != u64::from(FORMAT_VERSION) {
            return Err(ManifestError::FormatVersion {
                actual: p.format_version,
            });
        }
        if st.subject.len() != p.components.len() {
            return Err(ManifestError::SubjectsDisagree {
                index: st.subject.len().min(p.components.len()),
            });
        }
        let mut components = Vec::with_capacity(p.components.len());
        for (index, (subject, comp)) in st.subject.iter().zip(&p.components).enumerate() {
            let role = Role::from_name(&comp.role).ok_or_else(|| ManifestError::UnknownRole {
                name: comp.role.clone(),
            })?;
            if subject.name != comp.role {
                return Err(ManifestError::SubjectsDisagree { index });
            }
            let sha256 = Sha256Digest::from_hex(&subject.digest.sha256).ok_or_else(|| {
                ManifestError::BadDigest {
                    name: subject.name.clone(),
                }
            })?;
            components.push(Component {
                role,
                size: comp.size,
                sha256,
            });
        }
        let m = Manifest {
            name: p.name,
            version: p.version,
            security_version: p.security_version,
            kernel_release: p.kernel_release,
            created: p.created,
            components,
            kernel: p.kernel,
        };
        m.validate()?;
        Ok(m)
    }

    /// Writes the statement as compact JSON. Field order is fixed, so equal manifests give
    /// equal bytes.
    pub fn to_statement_json(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        let st = StatementJson {
            type_: STATEMENT_TYPE.into(),
            subject: self
                .components
                .iter()
                .map(|c| SubjectJson {
                    name: c.role.name().into(),
                    digest: DigestJson {
                        sha256: c.sha256.to_hex(),
                    },
                })
                .collect(),
            predicate_type: PREDICATE_TYPE.into(),
            predicate: PredicateJson {
                format_version: u64::from(FORMAT_VERSION),
                name: self.name.clone(),
                version: self.version.clone(),
                security_version: self.security_version,
                kernel_release: self.kernel_release.clone(),
                created: self.created.clone(),
                components: self
                    .components
                    .iter()
                    .map(|c| ComponentJson {
                        role: c.role.name().into(),
                        size: c.size,
                    })
                    .collect(),
                kernel: self.kernel.clone(),
            },
        };
        serde_json::to_vec(&st).map_err(ManifestError::Json)
    }

    /// The listed component with this role.
    pub fn component(&self, role: Role) -> Option<&Component> {
        self.components.iter().find(|c| c.role == role)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            name: "demo".into(),
            version: "1.0.0".into(),
            security_version: 3,
            kernel_release: "6.1.0-jek".into(),
            created: "2026-01-01T00:00:00Z".into(),
            components: vec![
                Component {
                    role: Role::BzImage,
                    size: 5,
                    sha256: Sha256Digest::of(b"k"),
                },
                Component {
                    role: Role::Cmdline,
                    size: 1,
                    sha256: Sha256Digest::of(b"c"),
                },
            ],
            kernel: KernelInfo {
                boot_protocol: Some("2.15".into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn round_trips_and_is_an_in_toto_statement() {
        let m = sample();
        let json = m.to_statement_json().unwrap();
        assert_eq!(Manifest::from_statement_json(&json).unwrap(), m);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["_type"], STATEMENT_TYPE);
        assert_eq!(v["subject"][0]["name"], "bzimage");
        assert_eq!(
            v["subject"][0]["digest"]["sha256"],
            Sha256Digest::of(b"k").to_hex()
        );
    }

    #[test]
    fn created_is_strict_rfc3339_utc() {
        for ok in [
            "2026-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "2000-02-29T12:00:00Z",
        ] {
            assert!(is_rfc3339_utc(ok), "{ok}");
        }
        for bad in [
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T00:00:00-01:00",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:60Z",
            "2026-01-01t00:00:00z",
            "2026-01-01T00:00:00.5Z",
            "2026-01-01 00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "+026-01-01T00:00:00Z",
            "",
        ] {
            assert!(!is_rfc3339_utc(bad), "{bad}");
        }
        let mut m = sample();
        m.created = "2026-02-30T00:00:00Z".into();
        assert!(m.to_statement_json().is_err());
        let json = String::from_utf8(sample().to_statement_json().unwrap()).unwrap();
        let bad = json.replace("2026-01-01T00:00:00Z", "2026-01-01T00:00:00+00:00");
        assert!(matches!(
            Manifest::from_statement_json(bad.as_bytes()),
            Err(ManifestError::Field {
                field: "created",
                ..
            })
        ));
    }

    #[test]
    fn rejects_inconsistent_statements() {
        let json = String::from_utf8(sample().to_statement_json().unwrap()).unwrap();
        let cases = [
            (
                json.replace("Statement/v1", "Statement/v0"),
                "StatementType",
            ),
            (
                json.replace("BundleManifest/v1", "Other/v1"),
                "PredicateType",
            ),
            (
                json.replace("\"formatVersion\":1", "\"formatVersion\":2"),
                "FormatVersion",
            ),
            (
                json.replace("\"role\":\"cmdline\"", "\"role\":\"bzimage\""),
                "SubjectsDisagree",
            ),
            (
                json.replace("{\"name\":\"cmdline\"", "{\"name\":\"bzimage\""),
                "SubjectsDisagree",
            ),
            (
                json.replace("\"name\":\"demo\"", "\"name\":\"de mo\""),
                "Field",
            ),
            (
                json.replace("\"role\":\"cmdline\"", "\"role\":\"fw\""),
                "UnknownRole",
            ),
            (json.replace("\"sha256\"", "\"sha512\""), "Json"),
            (
                json.replacen("{\"sha256\":", "{\"sha256\":\"00\",\"sha256\":", 1),
                "Json",
            ),
            (
                json.replacen("\"sha256\":\"", "\"sha256\":\"zz", 1),
                "BadDigest",
            ),
            (
                json.replace("\"created\"", "\"extra\":1,\"created\""),
                "Json",
            ),
        ];
        for (text, want) in cases {
            let err = Manifest::from_statement_json(text.as_bytes()).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{want}: got {err:?}");
        }
    }
}
