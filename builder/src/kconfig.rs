//! Kconfig files: parsing `.config` files and fragments, merging fragments, and checking a
//! resolved configuration against a policy and against what the fragments asked for.
//!
//! Kconfig silently drops a symbol whose dependencies are missing; [`check`] reports every
//! such symbol, so a fragment never claims something the kernel does not have.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// A symbol's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// `=y`, `=m` or any other literal (string, number), as written.
    Set(String),
    /// `# CONFIG_X is not set`.
    NotSet,
}

impl Value {
    /// Built in or modular.
    pub fn is_enabled(&self) -> bool {
        matches!(self, Value::Set(v) if v == "y" || v == "m")
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Set(v) => f.write_str(v),
            Value::NotSet => f.write_str("is not set"),
        }
    }
}

/// Two fragments that disagree about a symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The symbol.
    pub symbol: String,
    /// First request, as a kconfig line.
    pub a: String,
    /// Where.
    pub a_origin: String,
    /// Second request, as a kconfig line.
    pub b: String,
    /// Where.
    pub b_origin: String,
}

/// A parsed configuration or fragment: symbol (without `CONFIG_`) to value and line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    symbols: BTreeMap<String, (Value, usize)>,
    order: Vec<String>,
}

/// Why a config file or policy is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KconfigError {
    /// A line that is neither blank, a comment, `CONFIG_X=v` nor `# CONFIG_X is not set`.
    #[error("{origin}:{line}: not a kconfig line: {text:?}")]
    Line {
        /// File name.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A symbol set twice in one file.
    #[error("{origin}:{line}: CONFIG_{symbol} is already set on line {first}")]
    Duplicate {
        /// File name.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// First line.
        first: usize,
        /// The symbol.
        symbol: String,
    },
    /// Two fragments set a symbol to different values.
    #[error("fragments disagree: `{a}` in {a_origin} but `{b}` in {b_origin}", a = .0.a, a_origin = .0.a_origin, b = .0.b, b_origin = .0.b_origin)]
    Conflict(Box<Conflict>),
    /// A policy symbol name that is not `[A-Za-z0-9_]+`.
    #[error("policy symbol {0:?} is not a kconfig symbol name (write it without CONFIG_)")]
    PolicySymbol(String),
    /// A symbol both required and forbidden.
    #[error("policy symbol {0} is both required and forbidden")]
    PolicyContradiction(String),
}

fn is_symbol(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Config {
    /// Parses a `.config` or fragment. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, KconfigError> {
        let mut cfg = Config::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let t = raw.trim();
            let bad = || KconfigError::Line {
                origin: origin.into(),
                line,
                text: raw.into(),
            };
            let (symbol, value) = if let Some(rest) = t.strip_prefix("CONFIG_") {
                let (s, v) = rest.split_once('=').ok_or_else(bad)?;
                (s, Value::Set(v.to_string()))
            } else if let Some(rest) = t.strip_prefix("# CONFIG_") {
                match rest.strip_suffix(" is not set") {
                    Some(s) => (s, Value::NotSet),
                    None => return Err(bad()),
                }
            } else if t.is_empty() || t.starts_with('#') {
                continue;
            } else {
                return Err(bad());
            };
            if !is_symbol(symbol) {
                return Err(bad());
            }
            if let Some((_, first)) = cfg.symbols.get(symbol) {
                return Err(KconfigError::Duplicate {
                    origin: origin.into(),
                    line,
                    first: *first,
                    symbol: symbol.into(),
                });
            }
            cfg.order.push(symbol.to_string());
            cfg.symbols.insert(symbol.to_string(), (value, line));
        }
        Ok(cfg)
    }

    /// The value of a symbol (absent symbols are `None`).
    pub fn get(&self, symbol: &str) -> Option<&Value> {
        self.symbols.get(symbol).map(|(v, _)| v)
    }

    /// Symbols in file order with their values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.order
            .iter()
            .filter_map(|s| self.symbols.get(s).map(|(v, _)| (s.as_str(), v)))
    }

    /// Number of symbols that are `=y`.
    pub fn count_builtin(&self) -> usize {
        self.symbols
            .values()
            .filter(|(v, _)| matches!(v, Value::Set(s) if s == "y"))
            .count()
    }
}

/// A symbol and value as a kconfig line.
fn line(sym: &str, v: &Value) -> String {
    match v {
        Value::Set(v) => format!("CONFIG_{sym}={v}"),
        Value::NotSet => format!("# CONFIG_{sym} is not set"),
    }
}

/// Checks that no two fragments disagree, and returns the merged requests in order.
pub fn merge_requests(
    fragments: &[(String, Config)],
) -> Result<Vec<(&str, &Value, &str)>, KconfigError> {
    let mut seen: BTreeMap<&str, (&Value, &str)> = BTreeMap::new();
    let mut out = Vec::new();
    for (origin, cfg) in fragments {
        for (sym, val) in cfg.iter() {
            match seen.get(sym) {
                Some((prev, prev_origin)) if *prev != val => {
                    return Err(KconfigError::Conflict(Box::new(Conflict {
                        symbol: sym.into(),
                        a: line(sym, prev),
                        a_origin: (*prev_origin).into(),
                        b: line(sym, val),
                        b_origin: origin.clone(),
                    })))
                }
                Some(_) => {}
                None => {
                    seen.insert(sym, (val, origin));
                    out.push((sym, val, origin.as_str()));
                }
            }
        }
    }
    Ok(out)
}

/// Applies fragments to a base `.config` text (as `merge_config.sh -m` does): every symbol a
/// fragment names has its old line removed and the fragment's line appended.
pub fn merge(base: &str, fragments: &[(String, Config)]) -> Result<String, KconfigError> {
    let requests = merge_requests(fragments)?;
    let named: std::collections::BTreeSet<&str> = requests.iter().map(|(s, _, _)| *s).collect();
    let mut out = String::with_capacity(base.len() + 4096);
    for line in base.lines() {
        let t = line.trim();
        let sym = t
            .strip_prefix("CONFIG_")
            .and_then(|r| r.split_once('=').map(|(s, _)| s))
            .or_else(|| {
                t.strip_prefix("# CONFIG_")
                    .and_then(|r| r.strip_suffix(" is not set"))
            });
        if sym.is_some_and(|s| named.contains(s)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("# --- jek fragments ---\n");
    for (sym, val, _) in requests {
        out.push_str(&line(sym, val));
        out.push('\n');
    }
    Ok(out)
}

/// What must and must not be in a resolved configuration (the file format is read by
/// `jek-config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Symbols that must be `=y`.
    pub required: Vec<String>,
    /// Symbols that must be neither `=y` nor `=m`.
    pub forbidden: Vec<String>,
}

impl Policy {
    /// A validated policy: symbol names without `CONFIG_`, none both required and forbidden.
    pub fn new(required: Vec<String>, forbidden: Vec<String>) -> Result<Self, KconfigError> {
        let p = Policy {
            required,
            forbidden,
        };
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), KconfigError> {
        for s in self.required.iter().chain(&self.forbidden) {
            if !is_symbol(s) || s.starts_with("CONFIG_") {
                return Err(KconfigError::PolicySymbol(s.clone()));
            }
        }
        if let Some(s) = self.required.iter().find(|s| self.forbidden.contains(s)) {
            return Err(KconfigError::PolicyContradiction(s.clone()));
        }
        Ok(())
    }
}

/// One problem in a resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// A forbidden symbol is enabled.
    Forbidden {
        /// The symbol.
        symbol: String,
        /// Its value.
        actual: String,
    },
    /// A required symbol is not `=y`.
    RequiredMissing {
        /// The symbol.
        symbol: String,
        /// Its value (`"absent"` when the symbol does not appear).
        actual: String,
    },
    /// A fragment asked for a value that the resolved configuration does not have.
    Dropped {
        /// The symbol.
        symbol: String,
        /// Requested value.
        requested: String,
        /// Resolved value (`"absent"` when the symbol does not appear).
        actual: String,
        /// The fragment that asked.
        fragment: String,
    },
    /// A fragment asks for a forbidden symbol to be enabled (found before anything runs).
    ForbiddenRequested {
        /// The symbol.
        symbol: String,
        /// The value asked for (`y` or `m`).
        requested: String,
        /// The fragment that asked.
        fragment: String,
    },
    /// A fragment asks for a required symbol to be other than `=y` (found before anything
    /// runs).
    RequiredRefused {
        /// The symbol.
        symbol: String,
        /// The value asked for (`m`, `is not set`, ...).
        requested: String,
        /// The fragment that asked.
        fragment: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Forbidden { symbol, actual } => {
                write!(f, "CONFIG_{symbol}={actual} is forbidden by the policy")
            }
            Finding::RequiredMissing { symbol, actual } => {
                write!(f, "CONFIG_{symbol} is required by the policy but is {actual}")
            }
            Finding::Dropped { symbol, requested, actual, fragment } => write!(
                f,
                "CONFIG_{symbol} was requested as {requested} by {fragment} but the resolved config has {actual} (a dependency is missing)"
            ),
            Finding::ForbiddenRequested { symbol, requested, fragment } => write!(
                f,
                "CONFIG_{symbol}={requested} is forbidden by the policy (asked for by {fragment})"
            ),
            Finding::RequiredRefused { symbol, requested, fragment } => {
                let line = if requested == "is not set" {
                    format!("# CONFIG_{symbol} is not set")
                } else {
                    format!("CONFIG_{symbol}={requested}")
                };
                write!(
                    f,
                    "CONFIG_{symbol} is required by the policy to be y but {fragment} asks for `{line}`"
                )
            }
        }
    }
}

/// Checks what the fragments ask for against `policy`, before anything is unpacked or
/// compiled. A fragment that enables a forbidden symbol or asks for a required one to be
/// other than `=y` fails whatever kconfig resolves (the symbol is then either set as asked,
/// which the policy refuses, or dropped, which [`check`] refuses), so such a build is
/// refused at once, naming the fragment.
pub fn check_requests(fragments: &[(String, Config)], policy: &Policy) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (origin, cfg) in fragments {
        for (sym, want) in cfg.iter() {
            if want.is_enabled() && policy.forbidden.iter().any(|s| s == sym) {
                findings.push(Finding::ForbiddenRequested {
                    symbol: sym.into(),
                    requested: want.to_string(),
                    fragment: origin.clone(),
                });
            }
            if *want != Value::Set("y".into()) && policy.required.iter().any(|s| s == sym) {
                findings.push(Finding::RequiredRefused {
                    symbol: sym.into(),
                    requested: want.to_string(),
                    fragment: origin.clone(),
                });
            }
        }
    }
    findings
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "absent".to_string(), ToString::to_string)
}

/// Checks `resolved` against `policy` and against every fragment's requests. A request for
/// "is not set" is honoured by an absent symbol too.
pub fn check(
    resolved: &Config,
    fragments: &[(String, Config)],
    policy: Option<&Policy>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(p) = policy {
        for s in &p.forbidden {
            if let Some(v) = resolved.get(s).filter(|v| v.is_enabled()) {
                findings.push(Finding::Forbidden {
                    symbol: s.clone(),
                    actual: v.to_string(),
                });
            }
        }
        for s in &p.required {
            if resolved.get(s) != Some(&Value::Set("y".into())) {
                findings.push(Finding::RequiredMissing {
                    symbol: s.clone(),
                    actual: shown(resolved.get(s)),
                });
            }
        }
    }
    for (origin, cfg) in fragments {
        for (sym, want) in cfg.iter() {
            let have = resolved.get(sym);
            let honoured = match want {
                Value::NotSet => have.is_none_or(|v| !v.is_enabled()),
                Value::Set(_) => have == Some(want),
            };
            if !honoured {
                findings.push(Finding::Dropped {
                    symbol: sym.into(),
                    requested: want.to_string(),
                    actual: shown(have),
                    fragment: origin.clone(),
                });
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_set_unset_and_comments_and_rejects_junk() {
        let c = Config::parse(
            "# hi\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n\n",
            "f",
        )
        .unwrap();
        assert_eq!(c.get("A"), Some(&Value::Set("y".into())));
        assert_eq!(c.get("B"), Some(&Value::NotSet));
        assert_eq!(c.get("C"), Some(&Value::Set("\"x y\"".into())));
        assert_eq!(
            Config::parse("CONFIG_A=y\nA=y\n", "f"),
            Err(KconfigError::Line {
                origin: "f".into(),
                line: 2,
                text: "A=y".into()
            })
        );
        assert!(matches!(
            Config::parse("CONFIG_A=y\nCONFIG_A=n\n", "f"),
            Err(KconfigError::Duplicate {
                line: 2,
                first: 1,
                ..
            })
        ));
        // Real symbols have lower-case letters too (drivers/crypto/qat).
        assert_eq!(
            Config::parse("# CONFIG_CRYPTO_DEV_QAT_DH895xCC is not set\n", "f")
                .unwrap()
                .get("CRYPTO_DEV_QAT_DH895xCC"),
            Some(&Value::NotSet)
        );
    }

    #[test]
    fn merge_replaces_and_appends() {
        let frag = vec![(
            "f".to_string(),
            Config::parse("CONFIG_A=y\n# CONFIG_B is not set\n", "f").unwrap(),
        )];
        let merged = merge("CONFIG_B=y\nCONFIG_C=y\n# CONFIG_A is not set\n", &frag).unwrap();
        let m = Config::parse(&merged, "m").unwrap();
        assert_eq!(m.get("A"), Some(&Value::Set("y".into())));
        assert_eq!(m.get("B"), Some(&Value::NotSet));
        assert_eq!(m.get("C"), Some(&Value::Set("y".into())));
    }

    #[test]
    fn conflicting_fragments_are_an_error() {
        let frags = vec![
            ("a".to_string(), Config::parse("CONFIG_X=y\n", "a").unwrap()),
            (
                "b".to_string(),
                Config::parse("# CONFIG_X is not set\n", "b").unwrap(),
            ),
        ];
        assert!(matches!(
            merge("", &frags),
            Err(KconfigError::Conflict { .. })
        ));
    }

    #[test]
    fn requests_against_the_policy_are_found_before_any_build() {
        let frags = vec![
            (
                "base.config".to_string(),
                Config::parse("CONFIG_A=y\nCONFIG_B=y\n# CONFIG_VT is not set\n", "f").unwrap(),
            ),
            (
                "evil.config".to_string(),
                Config::parse(
                    "CONFIG_SOUND=m\n# CONFIG_R is not set\nCONFIG_S=m\nCONFIG_MODULES=y\n",
                    "e",
                )
                .unwrap(),
            ),
        ];
        let policy = Policy {
            required: vec!["A".into(), "R".into(), "S".into()],
            forbidden: vec!["MODULES".into(), "VT".into(), "SOUND".into()],
        };
        let f = check_requests(&frags, &policy);
        let shown: Vec<String> = f.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "CONFIG_SOUND=m is forbidden by the policy (asked for by evil.config)",
                "CONFIG_R is required by the policy to be y but evil.config asks for `# CONFIG_R is not set`",
                "CONFIG_S is required by the policy to be y but evil.config asks for `CONFIG_S=m`",
                "CONFIG_MODULES=y is forbidden by the policy (asked for by evil.config)",
            ]
        );
        // What the policy allows, and "is not set" for a forbidden symbol, pass.
        assert!(check_requests(&frags[..1], &policy).is_empty());
        assert_eq!(
            serde_json::to_value(&f[0]).unwrap(),
            serde_json::json!({"kind": "forbidden_requested", "symbol": "SOUND",
                "requested": "m", "fragment": "evil.config"})
        );
    }

    #[test]
    fn check_reports_forbidden_required_and_dropped() {
        let resolved = Config::parse(
            "CONFIG_MODULES=y\nCONFIG_A=y\n# CONFIG_VT is not set\n",
            "r",
        )
        .unwrap();
        let frags = vec![(
            "base.config".to_string(),
            Config::parse(
                "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_VT is not set\n# CONFIG_Z is not set\n",
                "f",
            )
            .unwrap(),
        )];
        let policy = Policy {
            required: vec!["A".into(), "R".into()],
            forbidden: vec!["MODULES".into(), "VT".into()],
        };
        let f = check(&resolved, &frags, Some(&policy));
        assert_eq!(
            f,
            vec![
                Finding::Forbidden {
                    symbol: "MODULES".into(),
                    actual: "y".into()
                },
                Finding::RequiredMissing {
                    symbol: "R".into(),
                    actual: "absent".into()
                },
                Finding::Dropped {
                    symbol: "B".into(),
                    requested: "y".into(),
                    actual: "absent".into(),
                    fragment: "base.config".into()
                },
            ]
        );
        assert_eq!(
            f[2].to_string(),
            "CONFIG_B was requested as y by base.config but the resolved config has absent (a dependency is missing)"
        );
    }

    #[test]
    fn policies_are_validated() {
        assert!(Policy::new(vec!["A".into()], vec!["B".into()]).is_ok());
        assert!(matches!(
            Policy::new(vec!["CONFIG_A".into()], vec![]),
            Err(KconfigError::PolicySymbol(_))
        ));
        assert!(matches!(
            Policy::new(vec!["A".into()], vec!["A".into()]),
            Err(KconfigError::PolicyContradiction(_))
        ));
    }

    #[test]
    fn the_shipped_fragments_and_policy_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernel-config");
        for name in ["base", "virtio", "containers", "tpm", "hardening"] {
            let text = std::fs::read_to_string(format!("{dir}/{name}.config")).unwrap();
            let c = Config::parse(&text, name).unwrap();
            // Every symbol line has its own comment line above it.
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                if l.starts_with("CONFIG_") || l.ends_with(" is not set") {
                    assert!(
                        i > 0
                            && lines[i - 1].starts_with("# ")
                            && !lines[i - 1].starts_with("# CONFIG_"),
                        "{name}:{}: no comment above",
                        i + 1
                    );
                }
            }
            assert!(c.iter().count() > 3);
        }
    }
}

/// What `jek kconfig check` reports of a resolved config.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport<'a> {
    /// The config file.
    pub config: &'a std::path::Path,
    /// Symbols `=y`.
    pub builtin_symbols: usize,
    /// No findings.
    pub ok: bool,
    /// Every finding.
    pub findings: Vec<Finding>,
}

impl<'a> CheckReport<'a> {
    /// Checks `resolved` (read from `path`) against the fragments and policy.
    pub fn new(
        path: &'a std::path::Path,
        resolved: &Config,
        fragments: &[(String, Config)],
        policy: Option<&Policy>,
    ) -> Self {
        let findings = check(resolved, fragments, policy);
        CheckReport {
            config: path,
            builtin_symbols: resolved.count_builtin(),
            ok: findings.is_empty(),
            findings,
        }
    }

    /// One line per finding, or the OK line.
    pub fn text(&self) -> String {
        if self.ok {
            return format!(
                "OK {}: {} symbols =y, no findings",
                self.config.display(),
                self.builtin_symbols
            );
        }
        let lines: Vec<String> = self.findings.iter().map(ToString::to_string).collect();
        lines.join("\n")
    }
}
