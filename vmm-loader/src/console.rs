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

/// The most bytes of console output held in memory: one line of the init's protocol
/// ([`jek_pod::console::MAX_LINE`]). A longer line is written out in pieces of this size
/// as it arrives, so a guest that never writes a newline cannot grow the host's memory,
/// and its output still reaches `console.log`.
pub const MAX_PIECE: usize = jek_pod::console::MAX_LINE;

/// Copies `from` line by line to `log` and to `sink` or else (unless `quiet`) to stdout
/// until end of input.
/// Lines longer than [`MAX_PIECE`] are passed on in pieces; what reaches the terminal has
/// its control characters escaped ([`jek_fsio::terminal::escape_console_line`]), while
/// `console.log` keeps the exact bytes.
pub fn pump(
    from: impl std::io::Read,
    mut log: impl Write,
    quiet: bool,
    sink: Option<ConsoleSink>,
) -> std::io::Result<ConsoleOutcome> {
    let mut reader = std::io::BufReader::with_capacity(MAX_PIECE, from);
    let mut outcome = ConsoleOutcome::default();
    let mut line: Vec<u8> = Vec::with_capacity(MAX_PIECE);
    let stdout = std::io::stdout();
    let echo = match (&sink, quiet) {
        (Some(sink), _) => Echo::Sink(sink),
        (None, false) => Echo::Terminal(&stdout),
        (None, true) => Echo::Nowhere,
    };
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let room = MAX_PIECE.saturating_sub(line.len());
        let (take, complete) = match buf.iter().take(room).position(|&b| b == b'\n') {
            Some(i) => (i.saturating_add(1), true),
            None => (
                buf.len().min(room),
                line.len().saturating_add(buf.len()) >= MAX_PIECE,
            ),
        };
        line.extend_from_slice(buf.get(..take).unwrap_or_default());
        reader.consume(take);
        if !complete {
            continue;
        }
        emit(&line, &mut log, echo, &mut outcome)?;
        line.clear();
    }
    if !line.is_empty() {
        emit(&line, &mut log, echo, &mut outcome)?;
    }
    log.flush()?;
    Ok(outcome)
}

/// Where a console line goes besides `console.log`.
#[derive(Clone, Copy)]
enum Echo<'a> {
    Nowhere,
    Terminal(&'a std::io::Stdout),
    Sink(&'a ConsoleSink),
}

fn emit(
    line: &[u8],
    log: &mut impl Write,
    echo: Echo<'_>,
    outcome: &mut ConsoleOutcome,
) -> std::io::Result<()> {
    log.write_all(line)?;
    let text = String::from_utf8_lossy(line);
    match echo {
        Echo::Nowhere => {}
        Echo::Sink(sink) => (sink.0)(&text),
        Echo::Terminal(stdout) => {
            let mut out = stdout.lock();
            out.write_all(jek_fsio::terminal::escape_console_line(&text).as_bytes())?;
            out.flush()?;
        }
    }
    outcome.observe(&text);
    Ok(())
}

/// Where console lines go instead of the terminal (a containerd shim's FIFOs): called
/// with every line as the guest printed it, line end included, before it is parsed.
#[derive(Clone)]
pub struct ConsoleSink(std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl ConsoleSink {
    /// A sink calling `f` for each line.
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        ConsoleSink(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for ConsoleSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleSink")
    }
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
        let o = pump(&text[..], &mut log, true, None).unwrap();
        assert_eq!(o.status, Some(7));
        assert_eq!(o.ready.unwrap().pod, "p");
        assert_eq!(o.exits[0].container, "a");
        assert_eq!(log, text);
    }

    #[test]
    fn long_lines_are_passed_on_in_pieces() {
        let mut text = vec![b'x'; MAX_PIECE * 2 + 10];
        text.extend_from_slice(b"\nJEK-POWEROFF {\"status\":3}\n");
        let mut log = Vec::new();
        let o = pump(&text[..], &mut log, true, None).unwrap();
        assert_eq!(log, text);
        assert_eq!(o.status, Some(3));
        // The last line kept is a piece, never more than the cap.
        let mut tail = vec![b'y'; MAX_PIECE * 3];
        tail.push(b'z');
        let o = pump(&tail[..], std::io::sink(), true, None).unwrap();
        assert_eq!(o.last_line.as_deref(), Some("z"));
    }
}
