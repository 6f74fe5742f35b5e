#!/usr/bin/env python3
"""Times QEMU (TCG) from process start to the first serial byte and to jek-init's
JEK-READY line. Usage: bench_boot.py RUNS MACHINE KERNEL INITRD CMDLINE
Prints one JSON object: medians and all samples, in seconds."""
import json
import statistics
import subprocess
import sys
import time

runs, machine, kernel, initrd, cmdline = int(sys.argv[1]), *sys.argv[2:6]
first, ready = [], []
for _ in range(runs):
    t0 = time.monotonic()
    p = subprocess.Popen(
        ["qemu-system-x86_64", "-M", machine, "-m", "256", "-smp", "1", "-nodefaults",
         "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
         "-kernel", kernel, "-initrd", initrd, "-append", cmdline],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    t_first = t_ready = None
    buf = b""
    deadline = t0 + 120
    while time.monotonic() < deadline:
        chunk = p.stdout.read1(4096)
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
        sys.exit(f"no JEK-READY line from {kernel} on {machine}:\n{buf[-2000:].decode(errors='replace')}")
    first.append(t_first)
    ready.append(t_ready)
print(json.dumps({
    "machine": machine, "runs": runs,
    "first_output_s": statistics.median(first), "ready_s": statistics.median(ready),
    "ready_samples": [round(x, 3) for x in ready],
}))
