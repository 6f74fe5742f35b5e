//! The guest's serial console: copied to the terminal and to `console.log`, and read for
//! the init's status lines (`JEK-READY`, `JEK-POWEROFF {"status":N}`, `JEK-ERROR`).

use std::io::{BufRead, Write};

/// What the console showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleOutcome {
    /// The `JEK-READY` JSON, if the init got that far.
    pub ready: Option<String>,
    /// The pod's exit status from `JEK-POWEROFF`.
    pub status: Option<i32>,
    /// A `JEK-ERROR` line from the init.
    pub error: Option<String>,
    /// The last line of output (for errors when nothing else was seen).
    pub last_line: Option<String>,
}

impl ConsoleOutcome {
    /// Takes in one console line.
    pub fn observe(&mut self, line: &str) {
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(json) = line.strip_prefix("JEK-READY ") {
            self.ready = Some(json.to_string());
        } else if let Some(json) = line.strip_prefix("JEK-POWEROFF ") {
            self.status = serde_json::from_str::<serde_json::Value>(json)
                .ok()
                .and_then(|v| v.get("status").and_then(serde_json::Value::as_i64))
                .and_then(|s| i32::try_from(s).ok());
        } else if let Some(json) = line.strip_prefix("JEK-ERROR ") {
            self.error = Some(json.to_string());
        }
        if !line.trim().is_empty() {
            self.last_line = Some(line.to_string());
        }
    }
}

/// Copies `from` line by line to `log` and (unless `quiet`) to stdout until end of input.
pub fn pump(
    from: impl std::io::Read,
    mut log: impl Write,
    quiet: bool,
) -> std::io::Result<ConsoleOutcome> {
    let mut reader = std::io::BufReader::new(from);
    let mut outcome = ConsoleOutcome::default();
    let mut line = Vec::new();
    let stdout = std::io::stdout();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        log.write_all(&line)?;
        if !quiet {
            let mut out = stdout.lock();
            out.write_all(&line)?;
            out.flush()?;
        }
        outcome.observe(&String::from_utf8_lossy(&line));
    }
    log.flush()?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_status_lines() {
        let text =
            b"Linux version 6.1\r\nJEK-READY {\"pod\":\"p\"}\r\nJEK-POWEROFF {\"status\":7}\r\n";
        let mut log = Vec::new();
        let o = pump(&text[..], &mut log, true).unwrap();
        assert_eq!(o.status, Some(7));
        assert_eq!(o.ready.as_deref(), Some("{\"pod\":\"p\"}"));
        assert_eq!(log, text);
    }
}
