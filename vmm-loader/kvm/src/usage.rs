//! What a VM run cost the host: process CPU time when the guest was first entered, and the
//! loader's resident memory beyond guest RAM. These are the figures Firecracker's
//! specification sets targets for (VMM start CPU time, memory overhead); `jek boot --json`
//! reports them and `ci/bench.sh` collects them.
//!
//! The parsers are pure and take the text of `/proc/self/status` and `/proc/self/smaps`.

use std::time::Duration;

/// Resident memory of the loader process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// Peak resident set of the whole process (`VmHWM`).
    pub peak_rss_kib: u64,
    /// Resident pages of guest RAM (the `Rss` of the guest memory mappings).
    pub guest_rss_kib: u64,
}

impl MemoryUse {
    /// Resident memory that is not guest RAM: the loader's own overhead.
    pub fn overhead_kib(&self) -> u64 {
        self.peak_rss_kib.saturating_sub(self.guest_rss_kib)
    }

    /// Reads the figures of this process; `guest` are the host addresses where guest RAM
    /// mappings start. `None` when `/proc` cannot be read or lacks a mapping.
    pub fn of_this_process(guest: &[usize]) -> Option<MemoryUse> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let peak_rss_kib = status_kib(&status, "VmHWM")?;
        let mut guest_rss_kib = 0;
        for &start in guest {
            guest_rss_kib += mapping_rss_kib(&smaps, start)?;
        }
        Some(MemoryUse {
            peak_rss_kib,
            guest_rss_kib,
        })
    }
}

/// CPU time (user + system, all threads) this process has used so far.
pub fn process_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// A `Name:   N kB` field of `/proc/self/status`.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The `Rss:` of the mapping in `/proc/self/smaps` that starts at host address `start`.
pub fn mapping_rss_kib(smaps: &str, start: usize) -> Option<u64> {
    let mut in_mapping = false;
    for line in smaps.lines() {
        if let Some(range) = mapping_header(line) {
            in_mapping = range == start;
        } else if in_mapping {
            if let Some(v) = line.strip_prefix("Rss:") {
                return v.trim().strip_suffix("kB")?.trim().parse().ok();
            }
        }
    }
    None
}

/// The start address of a mapping header line (`7f00-7f10 rw-p 0 00:00 0 ...`).
fn mapping_header(line: &str) -> Option<usize> {
    let (range, _) = line.split_once(' ')?;
    let (start, end) = range.split_once('-')?;
    if start.is_empty() || end.is_empty() {
        return None;
    }
    usize::from_str_radix(start, 16).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 42  /usr/bin/jek
Size:               1024 kB
Rss:                 900 kB
7f0000000000-7f0010000000 rw-p 00000000 00:00 0
Size:             262144 kB
KernelPageSize:        4 kB
Rss:                5120 kB
Pss:                5120 kB
7fff00000000-7fff00021000 rw-p 00000000 00:00 0  [stack]
Rss:                  12 kB
";

    #[test]
    fn finds_the_guest_mapping_rss() {
        assert_eq!(mapping_rss_kib(SMAPS, 0x7f00_0000_0000), Some(5120));
        assert_eq!(mapping_rss_kib(SMAPS, 0x55d0_c000_0000), Some(900));
        assert_eq!(mapping_rss_kib(SMAPS, 0x1234), None);
    }

    #[test]
    fn reads_status_fields() {
        let status = "Name:\tjek\nVmHWM:\t   12345 kB\nVmRSS:\t    2000 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(12345));
        assert_eq!(status_kib(status, "VmRSS"), Some(2000));
        assert_eq!(status_kib(status, "VmSwap"), None);
        let m = MemoryUse {
            peak_rss_kib: 12345,
            guest_rss_kib: 5120,
        };
        assert_eq!(m.overhead_kib(), 7225);
    }

    #[test]
    fn this_process_has_a_peak_and_cpu_time() {
        let m = MemoryUse::of_this_process(&[]).unwrap();
        assert!(m.peak_rss_kib > 0);
        assert_eq!(m.guest_rss_kib, 0);
        let spin = (0..200_000u64).fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b));
        assert_ne!(spin, 1);
        assert!(process_cpu_time() > Duration::ZERO);
    }
}
