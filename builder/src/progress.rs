//! The build's progress on stderr, for `jek build`. On a terminal, an indicatif bar: files compiled out of
//! the count of the last build of the same config, with an ETA (a spinner on a first
//! build). Otherwise, one line per step and a summary line every 15 seconds.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use crate::kernel::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Renders [`Progress`] reports.
pub struct StatusLine {
    bar: Option<ProgressBar>,
    quiet: bool,
    start: Instant,
    step: String,
    total: Option<usize>,
    last: Instant,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl StatusLine {
    /// A status line on stderr; `quiet` prints nothing.
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(style("[{elapsed}] {spinner} {msg}"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        StatusLine {
            bar,
            quiet,
            start: now,
            step: String::new(),
            total: None,
            last: now,
        }
    }

    fn line(&self, text: &str) {
        use std::io::Write as _;
        let s = self.start.elapsed().as_secs();
        let text = jek_fsio::terminal::escape(text);
        let _ = writeln!(std::io::stderr(), "[{}m{:02}s] {text}", s / 60, s % 60);
    }

    /// Handles one report.
    pub fn report(&mut self, p: Progress<'_>) {
        if self.quiet {
            return;
        }
        match (p, &self.bar) {
            (Progress::Step(s), Some(bar)) => {
                self.step = s.to_string();
                bar.set_style(style("[{elapsed}] {spinner} {msg}"));
                bar.set_message(s.to_string());
            }
            (Progress::Step(s), None) => {
                self.step = s.to_string();
                self.total = None;
                self.line(s);
            }
            (Progress::Expect { total }, Some(bar)) => {
                bar.set_length(total as u64);
                bar.set_position(0);
                bar.set_style(style(
                    "[{elapsed}] {msg} {wide_bar} {pos}/{len} files, ETA {eta}",
                ));
            }
            (Progress::Expect { total }, None) => self.total = Some(total),
            (Progress::Compiled { files, current }, Some(bar)) => {
                bar.set_position(files as u64);
                if bar.length().is_none() {
                    let cur: String = jek_fsio::terminal::escape(current)
                        .chars()
                        .take(50)
                        .collect();
                    bar.set_message(format!("{}: {files} files  {cur}", self.step));
                }
            }
            (Progress::Compiled { files, .. }, None) => {
                if self.last.elapsed() >= Duration::from_secs(15) {
                    self.last = Instant::now();
                    let of = self
                        .total
                        .map(|t| format!(" of about {t}"))
                        .unwrap_or_default();
                    self.line(&format!("{}: {files}{of} files compiled", self.step));
                }
            }
        }
    }

    /// Ends the status line.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            self.line("done");
        }
    }
}
