//! The guest's serial console: copied to the terminal and to `console.log`, and read for
//! the init's status lines ([`jek_pod::console`]: `JEK-READY`, `JEK-EXIT`, `JEK-ERROR`,
//! `JEK-POWEROFF`).

use std::io::{BufRead, Write};

use jek_pod::console::{ConsoleLine, ContainerExit, InitError, Ready};

/// What the console showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleOutcome {
    /// The `JEK-READY` line, if the init got that far.
    pub ready: Option<Ready>,
    /// Each container's `JEK-EXIT`, in the order they ended.
    pub exits: Vec<ContainerExit>,
    /// The pod's exit status from `JEK-POWEROFF`.
    pub status: Option<i32>,
    /// A `JEK-ERROR` line from the init.
    pub error: Option<InitError>,
    /// The last line of output (for errors when nothing else was seen).
    pub last_line: Option<String>,
}

impl ConsoleOutcome {
    /// Takes in one console line. A tagged line whose JSON does not parse is kept only as
    /// the last line: the guest cannot fake a status with a malformed one.
    pub fn observe(&mut self, line: &str) {
        let line = line.trim_end_matches(['\r', '\n']);
        match ConsoleLine::parse(line) {
            Some(Ok(ConsoleLine::Ready(r))) => self.ready = Some(r),
            Some(Ok(ConsoleLine::Exit(e))) => self.exits.push(e),
            Some(Ok(ConsoleLine::Error(e))) => self.error = Some(e),
            Some(Ok(ConsoleLine::PowerOff(p))) => self.status = Some(p.status),
            Some(Err(_)) | None => {}
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
            b"Linux version 6.1\r\nJEK-READY {\"pod\":\"p\",\"kernel\":\"6.1\",\"loopback\":\"ok\",\"containers\":1}\r\nJEK-EXIT {\"container\":\"a\",\"status\":7}\r\nJEK-POWEROFF {\"status\":7}\r\n";
        let mut log = Vec::new();
        let o = pump(&text[..], &mut log, true).unwrap();
        assert_eq!(o.status, Some(7));
        assert_eq!(o.ready.unwrap().pod, "p");
        assert_eq!(o.exits[0].container, "a");
        assert_eq!(log, text);
    }
}
