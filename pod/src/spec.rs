//! The pod specification the init reads: `/etc/jek/pod.json` (the pod segment appended by
//! the loader, if any) or else `/etc/jek/app.json` (baked into the bundle by the builder).

use serde::{Deserialize, Serialize};

/// Where the loader's pod segment puts the pod spec.
pub const POD_SPEC_PATH: &str = "/etc/jek/pod.json";
/// Where the builder puts the default application.
pub const APP_SPEC_PATH: &str = "/etc/jek/app.json";

/// A pod: a name and the containers to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    /// Pod name, printed in the ready line.
    pub name: String,
    /// Containers, started together.
    pub containers: Vec<Container>,
}

/// One process to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// Executable and leading arguments.
    pub command: Vec<String>,
    /// Further arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// One environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// Why a spec is unusable.
#[derive(Debug)]
pub enum SpecError {
    /// Not JSON of the right shape.
    Json(serde_json::Error),
    /// No containers, or a container without a command.
    Empty(&'static str),
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::Json(e) => write!(f, "invalid pod spec JSON: {e}"),
            SpecError::Empty(what) => write!(f, "invalid pod spec: {what}"),
        }
    }
}

impl std::error::Error for SpecError {}

impl PodSpec {
    /// Parses and checks a spec.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        let spec: PodSpec = serde_json::from_slice(bytes).map_err(SpecError::Json)?;
        if spec.containers.is_empty() {
            return Err(SpecError::Empty("no containers"));
        }
        if spec.containers.iter().any(|c| c.command.is_empty()) {
            return Err(SpecError::Empty("a container has an empty command"));
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let s = PodSpec::from_json(br#"{"name":"p","containers":[{"name":"a","command":["/bin/x"],"env":[{"name":"K","value":"V"}]}]}"#).unwrap();
        assert_eq!(s.containers[0].env[0].value, "V");
        assert!(matches!(
            PodSpec::from_json(br#"{"name":"p","containers":[]}"#),
            Err(SpecError::Empty(_))
        ));
        assert!(matches!(
            PodSpec::from_json(br#"{"name":"p","containers":[],"x":1}"#),
            Err(SpecError::Json(_))
        ));
    }
}
