//! A guest that writes without newlines cannot grow the host's memory: 256 MiB of console
//! output with no line feed go through the pump while the process's peak RSS (VmHWM, read
//! from /proc/self/status; this binary holds only this test) stays under 64 MiB. With a
//! line buffer that grows until the newline, the peak would pass 256 MiB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;

/// `remaining` bytes of `b'A'`, produced without holding them.
struct Endless {
    remaining: u64,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        buf.iter_mut().take(n).for_each(|b| *b = b'A');
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[test]
fn console_output_without_newlines_is_bounded_in_memory() {
    const TOTAL: u64 = 256 << 20;
    let mut logged = 0u64;
    struct Counter<'a>(&'a mut u64);
    impl std::io::Write for Counter<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            *self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let outcome = jek_loader::console::pump(
        Endless { remaining: TOTAL },
        Counter(&mut logged),
        true,
        None,
    )
    .unwrap();
    // Every byte reached the log, in pieces.
    assert_eq!(logged, TOTAL);
    assert!(outcome.last_line.unwrap().len() <= jek_loader::console::MAX_PIECE);
    let peak = peak_rss_kib();
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}
