#!/usr/bin/env python3
"""Times `jek boot` and collects the loader's own figures from its run record.

Usage: bench_loader.py RUNS WORKDIR -- JEK BOOT-ARGS...

Runs `JEK boot BOOT-ARGS --json --run-dir WORKDIR/run-N` RUNS times. Prints one JSON object:
the median of every timing in the record's timingsMs and memoryKib, the wall time from
process start to exit measured here, and all wall samples. A run that does not end with
status 0 fails the benchmark."""
import json
import statistics
import subprocess
import sys
import time

runs, work = int(sys.argv[1]), sys.argv[2]
if sys.argv[3] != "--":
    sys.exit("usage: bench_loader.py RUNS WORKDIR -- JEK BOOT-ARGS...")
cmd = sys.argv[4:]
wall, timings, memory = [], {}, {}
for i in range(runs):
    t0 = time.monotonic()
    p = subprocess.run(cmd + ["--json", "--run-dir", f"{work}/run-{i}"],
                       capture_output=True, stdin=subprocess.DEVNULL)
    wall.append((time.monotonic() - t0) * 1000)
    if p.returncode != 0:
        sys.exit(f"jek boot exited {p.returncode}:\n{p.stderr.decode(errors='replace')}")
    record = json.loads(p.stdout)
    if record.get("status") != 0:
        sys.exit(f"pod status {record.get('status')}: {record}")
    for k, v in record["timingsMs"].items():
        if v is not None:
            timings.setdefault(k, []).append(v)
    for k, v in (record.get("memoryKib") or {}).items():
        memory.setdefault(k, []).append(v)
med = lambda xs: statistics.median(xs)
print(json.dumps({
    "runs": runs,
    "wallMs": med(wall),
    "wallSamplesMs": [round(x, 1) for x in wall],
    "timingsMs": {k: med(v) for k, v in timings.items()},
    "memoryKib": {k: med(v) for k, v in memory.items()},
}))
