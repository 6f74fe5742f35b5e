#!/usr/bin/env python3
"""Times QEMU (TCG) from process start to the first serial byte and to jek-init's
JEK-READY line. Usage: bench_boot.py RUNS MACHINE KERNEL INITRD CMDLINE
Prints one JSON object: medians and all samples, in seconds."""
import json
import os
import select
import statistics
import subprocess
import sys
import time

runs, machine, kernel, initrd, cmdline = int(sys.argv[1]), *sys.argv[2:6]
first, ready = [], []
hangs = 0
for _ in range(runs):
    t0 = time.monotonic()
    p = subprocess.Popen(
        ["qemu-system-x86_64", "-M", machine, "-m", "256", "-smp", "1", "-nodefaults",
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
            break
    p.kill()
    p.wait()
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
    "machine": machine, "runs": runs, "hangs": hangs,
    "first_output_s": statistics.median(first), "ready_s": statistics.median(ready),
    "ready_samples": [round(x, 3) for x in ready],
}))
