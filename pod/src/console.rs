//! The init's console protocol: one line per event, a fixed tag, a space, then compact
//! JSON. The init writes each line in a single `write` so kernel messages cannot split it;
//! the loader reads them out of the serial transcript.
//!
//! ```text
//! JEK-READY {"pod":"demo","kernel":"6.1.192-jek","loopback":"ok","containers":1}
//! JEK-EXIT {"container":"app","status":0}
//! JEK-ERROR {"stage":"mount /proc","error":"EPERM: Operation not permitted"}
//! JEK-POWEROFF {"status":0}
//! ```
//!
//! A line is at most [`MAX_LINE`] bytes including its newline. The strings in it (pod
//! name, stage, error text) are cut at character boundaries until it fits, so an encoded
//! line is always valid JSON, whatever the guest was given.

use serde::{Deserialize, Serialize};

/// The longest line the init writes, newline included.
pub const MAX_LINE: usize = 4096;

/// `JEK-READY`: the init mounted everything, brought up loopback and read the pod spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// The pod's name.
    pub pod: String,
    /// The running kernel's release (`uname -r`).
    pub kernel: String,
    /// `ok` once 127.0.0.1 answered.
    pub loopback: String,
    /// How many containers the init is about to start.
    pub containers: usize,
}

/// `JEK-EXIT`: one container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerExit {
    /// The container's name.
    pub container: String,
    /// Its exit status (128 + signal number when killed by a signal).
    pub status: i32,
}

/// `JEK-ERROR`: a step of the init failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitError {
    /// The step, e.g. `mount proc on /proc`.
    pub stage: String,
    /// What went wrong.
    pub error: String,
}

/// `JEK-POWEROFF`: the pod is over; its status is the first non-zero container status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerOff {
    /// The pod's exit status.
    pub status: i32,
}

/// One status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleLine {
    /// `JEK-READY`.
    Ready(Ready),
    /// `JEK-EXIT`.
    Exit(ContainerExit),
    /// `JEK-ERROR`.
    Error(InitError),
    /// `JEK-POWEROFF`.
    PowerOff(PowerOff),
}

/// A line that carries a jek tag but not the JSON that tag requires.
#[derive(Debug, thiserror::Error)]
#[error("console line {tag} does not carry a valid {tag} object")]
pub struct ConsoleError {
    /// The tag.
    pub tag: &'static str,
    /// Why the JSON was refused.
    #[source]
    pub source: serde_json::Error,
}

const TAGS: [&str; 4] = ["JEK-READY", "JEK-EXIT", "JEK-ERROR", "JEK-POWEROFF"];

/// Cuts `s` to at most `max` bytes, at a character boundary.
pub fn clip(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl ConsoleLine {
    /// The line's tag.
    pub fn tag(&self) -> &'static str {
        match self {
            ConsoleLine::Ready(_) => TAGS[0],
            ConsoleLine::Exit(_) => TAGS[1],
            ConsoleLine::Error(_) => TAGS[2],
            ConsoleLine::PowerOff(_) => TAGS[3],
        }
    }

    fn json(&self) -> String {
        // Derived Serialize of strings and integers cannot fail.
        match self {
            ConsoleLine::Ready(v) => serde_json::to_string(v),
            ConsoleLine::Exit(v) => serde_json::to_string(v),
            ConsoleLine::Error(v) => serde_json::to_string(v),
            ConsoleLine::PowerOff(v) => serde_json::to_string(v),
        }
        .unwrap_or_default()
    }

    fn clip_strings(&mut self, max: usize) {
        match self {
            ConsoleLine::Ready(r) => {
                clip(&mut r.pod, max);
                clip(&mut r.kernel, max);
                clip(&mut r.loopback, max);
            }
            ConsoleLine::Exit(e) => clip(&mut e.container, max),
            ConsoleLine::Error(e) => {
                clip(&mut e.stage, max);
                clip(&mut e.error, max);
            }
            ConsoleLine::PowerOff(_) => {}
        }
    }

    /// The line as the init writes it: tag, space, JSON, newline; at most [`MAX_LINE`]
    /// bytes (long strings are cut at character boundaries until it fits).
    pub fn encode(&self) -> String {
        let mut line = self.clone();
        let mut max = MAX_LINE;
        loop {
            let s = format!("{} {}\n", line.tag(), line.json());
            if s.len() <= MAX_LINE || max == 0 {
                return s;
            }
            max /= 2;
            line.clip_strings(max);
        }
    }

    /// Reads one console line (trailing `\r` and `\n` ignored). `None` for a line that is
    /// not a jek status line; an error for one that has a tag but not its JSON.
    pub fn parse(line: &str) -> Option<Result<ConsoleLine, ConsoleError>> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (tag, json) = line.split_once(' ')?;
        let tag = TAGS.into_iter().find(|t| *t == tag)?;
        let err = |source| ConsoleError { tag, source };
        Some(match tag {
            "JEK-READY" => serde_json::from_str(json)
                .map(ConsoleLine::Ready)
                .map_err(err),
            "JEK-EXIT" => serde_json::from_str(json)
                .map(ConsoleLine::Exit)
                .map_err(err),
            "JEK-ERROR" => serde_json::from_str(json)
                .map(ConsoleLine::Error)
                .map_err(err),
            _ => serde_json::from_str(json)
                .map(ConsoleLine::PowerOff)
                .map_err(err),
        })
    }
}

/// Fuzz entry: any line either is no status line, is refused, or round-trips.
pub fn fuzz(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(Ok(line)) = ConsoleLine::parse(text) {
        let encoded = line.encode();
        assert!(encoded.len() <= MAX_LINE, "an encoded line is too long");
        assert!(
            matches!(ConsoleLine::parse(&encoded), Some(Ok(_))),
            "an encoded line does not parse"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_the_documented_lines() {
        let ready = ConsoleLine::Ready(Ready {
            pod: "demo".into(),
            kernel: "6.1.192-jek".into(),
            loopback: "ok".into(),
            containers: 1,
        });
        assert_eq!(
            ready.encode(),
            "JEK-READY {\"pod\":\"demo\",\"kernel\":\"6.1.192-jek\",\"loopback\":\"ok\",\"containers\":1}\n"
        );
        let exit = ConsoleLine::Exit(ContainerExit {
            container: "app".into(),
            status: 0,
        });
        assert_eq!(
            exit.encode(),
            "JEK-EXIT {\"container\":\"app\",\"status\":0}\n"
        );
    }

    #[test]
    fn long_multibyte_strings_are_cut_at_character_boundaries() {
        let line = ConsoleLine::Error(InitError {
            stage: "é".repeat(5000),
            error: "\u{1}".repeat(5000),
        });
        let s = line.encode();
        assert!(s.len() <= MAX_LINE, "{}", s.len());
        let Some(Ok(ConsoleLine::Error(e))) = ConsoleLine::parse(&s) else {
            panic!("does not parse back: {s}");
        };
        assert!(e.stage.chars().all(|c| c == 'é') && !e.stage.is_empty());
    }

    #[test]
    fn tells_apart_other_lines_and_broken_ones() {
        assert!(ConsoleLine::parse("Linux version 6.1").is_none());
        assert!(ConsoleLine::parse("JEK-READYX {}").is_none());
        let err = ConsoleLine::parse("JEK-POWEROFF {\"status\":\"x\"}\r\n")
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "console line JEK-POWEROFF does not carry a valid JEK-POWEROFF object"
        );
    }

    proptest! {
        #[test]
        fn round_trips(pod in ".{0,64}", stage in ".{0,3000}", status in any::<i32>()) {
            for line in [
                ConsoleLine::Ready(Ready { pod: pod.clone(), kernel: "k".into(), loopback: "ok".into(), containers: 2 }),
                ConsoleLine::Exit(ContainerExit { container: pod.clone(), status }),
                ConsoleLine::Error(InitError { stage: stage.clone(), error: pod.clone() }),
                ConsoleLine::PowerOff(PowerOff { status }),
            ] {
                let encoded = line.encode();
                prop_assert!(encoded.len() <= MAX_LINE);
                let back = ConsoleLine::parse(&encoded).unwrap().unwrap();
                if line.tag().len() + line.json().len() + 2 <= MAX_LINE {
                    prop_assert_eq!(back, line);
                }
            }
        }
    }
}
