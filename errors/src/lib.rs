//! # jek-errors: failure classes, exit codes and error chains
//!
//! Every library error in jek says what kind of failure it is ([`Class`]) with an
//! exhaustive `match`; a binary turns the class into its exit code ([`Exit`]) in one
//! place, and prints the error with its causes ([`chain_lines`], or [`chain_line`] where
//! one line must do). No I/O and no dependencies: every crate can classify its errors
//! without linking anything else.
#![forbid(unsafe_code)]

/// What kind of failure an error is, for the exit code a binary gives it. Every library
/// error in jek classifies each of its variants with an exhaustive `match` (no wildcard),
/// so a new variant that nobody classified does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A check said no: a bundle, a signature, a config or a pod failed what it must pass.
    Rejected,
    /// The input is unusable: bad usage, an invalid or missing input file.
    Invalid,
    /// The environment failed: a missing tool, an I/O error, an unreachable service.
    Environment,
}

/// The exit codes of jek's programs, documented in the README and `docs/cli.md`; tests
/// check them. Each library error's [`Class`] maps to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Something was rejected: a bundle failed verification, a pod did not attest as
    /// affirming, a signed result does not verify.
    Rejected = 1,
    /// Bad usage or an invalid input file (policy, key, recipe, component).
    Usage = 2,
    /// The environment failed: a missing tool, an I/O error, an unreachable TPM or service.
    Environment = 3,
    /// `jek boot`: the pod ran and its init reported a non-zero exit status.
    PodFailed = 4,
}

impl From<Class> for Exit {
    fn from(c: Class) -> Exit {
        match c {
            Class::Rejected => Exit::Rejected,
            Class::Invalid => Exit::Usage,
            Class::Environment => Exit::Environment,
        }
    }
}

/// An error and its whole `source()` chain on one line, `: `-separated (for a per-pod
/// error field in a result, where a multi-line chain does not fit).
pub fn chain_line(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// An error and its whole `source()` chain, one cause per line (`caused by: ...`): what a
/// command prints when it fails.
pub fn chain_lines(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str("\n  caused by: ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
