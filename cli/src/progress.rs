//! A live status line on stderr for long steps (the kernel build). On a terminal it redraws
//! one line; otherwise it prints each step and a summary line every 15 seconds.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use jek_builder::kernel::Progress;

/// Renders [`Progress`] reports.
pub struct StatusLine {
    tty: bool,
    quiet: bool,
    start: Instant,
    step: String,
    last: Instant,
}

impl StatusLine {
    /// A status line on stderr; `quiet` prints nothing.
    pub fn new(quiet: bool) -> Self {
        let now = Instant::now();
        StatusLine {
            tty: std::io::stderr().is_terminal(),
            quiet,
            start: now,
            step: String::new(),
            last: now,
        }
    }

    fn elapsed(&self) -> String {
        let s = self.start.elapsed().as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }

    /// Handles one report.
    pub fn report(&mut self, p: Progress<'_>) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        match p {
            Progress::Step(s) => {
                self.step = s.to_string();
                if self.tty {
                    let _ = write!(err, "\r\x1b[K[{}] {s}", self.elapsed());
                } else {
                    let _ = writeln!(err, "[{}] {s}", self.elapsed());
                }
            }
            Progress::Compiled { files, current } => {
                let now = Instant::now();
                if self.tty && now.duration_since(self.last) >= Duration::from_millis(100) {
                    self.last = now;
                    let mut cur = current.to_string();
                    cur.truncate(60);
                    let _ = write!(
                        err,
                        "\r\x1b[K[{}] {}: {files} files  {cur}",
                        self.elapsed(),
                        self.step
                    );
                } else if !self.tty && now.duration_since(self.last) >= Duration::from_secs(15) {
                    self.last = now;
                    let _ = writeln!(
                        err,
                        "[{}] {}: {files} files compiled",
                        self.elapsed(),
                        self.step
                    );
                }
            }
        }
        let _ = err.flush();
    }

    /// Ends the status line.
    pub fn finish(&mut self) {
        if self.tty && !self.quiet {
            let _ = writeln!(std::io::stderr(), "\r\x1b[K[{}] done", self.elapsed());
        }
    }
}
