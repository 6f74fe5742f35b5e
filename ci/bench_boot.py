#!/usr/bin/env python3
"""Times QEMU (TCG) from process start to the first serial byte and to jek-init's
JEK-READY line, and counts the boots that went wrong. Usage:
bench_boot.py RUNS MACHINE KERNEL INITRD CMDLINE

`-M microvm` runs with `-icount shift=auto,sleep=on`, as the tests do: without it the
guest's one TSC calibration fails now and then on a busy host and the boot hangs
(docs/design.md, "Clock calibration"). Each boot is read to QEMU's exit (the init powers
off), so a second `Linux version` (the pod booted again) is seen. Prints one JSON object:
medians, all samples in seconds, and the counts of hangs (no JEK-READY within 60 s),
calibration stalls (no TSC frequency: the kernel's own message), failed early PIT polls
that the late calibration made up for, and restarts."""
import json
import os
import select
import statistics
import subprocess
import sys
import time

runs, machine, kernel, initrd, cmdline = int(sys.argv[1]), *sys.argv[2:6]
machine_args = ["-M", machine]
if machine.split(",")[0] == "microvm":
    machine_args += ["-icount", "shift=auto,sleep=on"]
first, ready = [], []
hangs = stalls = restarts = early_failed = 0
for _ in range(runs):
    t0 = time.monotonic()
    p = subprocess.Popen(
        ["qemu-system-x86_64", *machine_args, "-m", "256", "-smp", "1", "-nodefaults",
         "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
         "-kernel", kernel, "-initrd", initrd, "-append", cmdline],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    t_first = t_ready = None
    buf = b""
    deadline = t0 + 60
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([p.stdout], [], [], remaining)[0]:
            break
        chunk = os.read(p.stdout.fileno(), 4096)
        if not chunk:
            break
        if t_first is None:
            t_first = time.monotonic() - t0
        buf += chunk
        if t_ready is None and b"JEK-READY" in buf:
            t_ready = time.monotonic() - t0
    p.kill()
    p.wait()
    # No TSC frequency at all: under -M microvm the boot then hangs. A failed early PIT poll
    # alone is not that: on -M pc the late calibration (PIT loops checked against the HPET)
    # takes over. Counted apart.
    if b"tsc: Marking TSC unstable due to could not calculate TSC khz" in buf:
        stalls += 1
    if b"tsc: Fast TSC calibration using PIT" not in buf:
        early_failed += 1
    if buf.count(b"Linux version") > 1:
        restarts += 1
        print(f"bench_boot: {kernel} on {machine} booted again after the init powered off",
              file=sys.stderr)
    if t_ready is None:
        # A boot that never reaches the init is counted and reported, not timed.
        hangs += 1
        print(f"bench_boot: no JEK-READY within 60 s from {kernel} on {machine}; "
              f"last output: {buf[-300:].decode(errors='replace')!r}", file=sys.stderr)
        continue
    first.append(t_first)
    ready.append(t_ready)
if not ready:
    sys.exit(f"no run of {kernel} on {machine} reached JEK-READY")
print(json.dumps({
    "machine": machine, "runs": runs, "hangs": hangs, "stalls": stalls, "restarts": restarts,
    "early_poll_failed": early_failed,
    "first_output_s": statistics.median(first), "ready_s": statistics.median(ready),
    "ready_samples": [round(x, 3) for x in ready],
}))
