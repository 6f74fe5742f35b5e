#!/usr/bin/env python3
"""The kernel section of docs/benchmarks.md (issue 38): today's default kernel beside the
kernel before the trim, built in the same run from git history, and Firecracker's CI guest
config for 6.1 for scale.

Usage: bench_kernel.py JEK KEY CACHE WORKDIR BUNDLE RUNS RELIABILITY_RUNS

BUNDLE is today's default bundle; its initramfs and command line boot both kernels, so only
the kernel differs. The old kernel is the default recipe at OLD_REV, built with the same
jek and cache (about 10 minutes the first time on 2 cores, a cache hit afterwards; it needs
the repository's history, not a shallow clone). Boots
are timed by ci/bench_boot.py (`-M microvm` with the instruction clock, docs/design.md).
Reliability: RELIABILITY_RUNS boots under `-M microvm` and as many `jek boot --vmm qemu`
runs of BUNDLE (jek's QEMU path), each counted for calibration stalls, hangs and restarts.
Prints the markdown section on stdout."""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

# The last commit before issue 38's trim (a0ecbd6): 775 symbols =y, LZ4, 3,818,496 bytes.
OLD_REV = "a0ecbd6^"
# Firecracker's CI guest configuration for Linux 6.1 on x86_64
# (resources/guest_configs/microvm-kernel-ci-x86_64-6.1.config at 9157a0c), counted once:
# the file is not fetched at bench time (no network but the package registries). The issue
# quoted 1,238 from another version of the file.
FIRECRACKER = {"path": "resources/guest_configs/microvm-kernel-ci-x86_64-6.1.config",
               "commit": "9157a0c", "y": 1161}
STALL = b"tsc: Marking TSC unstable due to could not calculate TSC khz"
# Printed when the early PIT poll (quick_pit_calibrate) worked; a boot without it went on to
# the late calibration (PIT loops checked against the HPET on -M pc).
EARLY_OK = b"tsc: Fast TSC calibration using PIT"

jek, key, cache, work, bundle = sys.argv[1:6]
runs, rel_runs = int(sys.argv[6]), int(sys.argv[7])
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.makedirs(work, exist_ok=True)


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, **kw)
    if p.returncode != 0:
        sys.exit(f"bench_kernel: {' '.join(map(str, cmd))} exited {p.returncode}:\n"
                 f"{p.stderr.decode(errors='replace')}")
    return p.stdout


def git_show(path):
    return run(["git", "-C", repo, "show", f"{OLD_REV}:{path}"])


def build_old():
    """Writes the recipe and fragments of OLD_REV under WORK/old and builds them."""
    if subprocess.run(["git", "-C", repo, "cat-file", "-e", f"{OLD_REV}^{{commit}}"],
                      capture_output=True).returncode != 0:
        sys.exit(f"bench_kernel: {OLD_REV} is not in this clone's history (a shallow clone?): "
                 "the kernel before the trim is built from it; fetch the full history")
    root = os.path.join(work, "old")
    os.makedirs(os.path.join(root, "recipes"), exist_ok=True)
    os.makedirs(os.path.join(root, "kernel-config"), exist_ok=True)
    names = run(["git", "-C", repo, "ls-tree", "--name-only", OLD_REV, "kernel-config/"])
    for name in names.decode().split():
        with open(os.path.join(root, name), "wb") as f:
            f.write(git_show(name))
    # The guest binaries are today's (same initramfs contents); only the kernel is old.
    recipe = git_show("recipes/default.yaml").decode().replace(
        "../target/", os.path.join(repo, "target") + "/")
    path = os.path.join(root, "recipes", "default.yaml")
    with open(path, "w") as f:
        f.write(recipe)
    out = run([jek, "build", path, "--key", key, "--cache-dir", cache, "--out-dir",
               os.path.join(root, "out"), "--json", "--no-progress"],
              env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    return os.path.join(cache, "kernel", json.loads(out)["cacheKey"])


def extract(what, dest):
    run([jek, "extract", bundle, what, "--out", dest, "--force"])
    return dest


def facts(bz, config):
    text = open(config).read()
    comp = re.search(r"^CONFIG_KERNEL_(\w+)=y$", text, re.M)
    return {"y": len(re.findall(r"=y$", text, re.M)), "bytes": os.path.getsize(bz),
            "compression": comp.group(1).lower() if comp else "?"}


def boots(n, machine, kernel, initrd, cmdline):
    out = run(["python3", os.path.join(repo, "ci", "bench_boot.py"), str(n), machine,
               kernel, initrd, cmdline])
    return json.loads(out)


def jek_qemu_path(n):
    """RELIABILITY_RUNS `jek boot --vmm qemu` runs of BUNDLE: stalls, hangs, restarts."""
    d = os.path.join(work, "jek-qemu")
    # jek boot refuses a run directory that holds a pod already: start from nothing, so no
    # console of an earlier bench run is read as this one's.
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    policy, pod = os.path.join(d, "policy.yaml"), os.path.join(d, "pod.yaml")
    with open(policy, "w") as f:
        f.write(f"trusted_keys: [{key.removesuffix('.key')}.pub]\nmin_security_version: 1\n")
    with open(pod, "w") as f:
        f.write("apiVersion: v1\nkind: Pod\nmetadata: {name: bench}\nspec:\n  containers:\n"
                "    - name: app\n      command: [/bin/jek-sample-app]\n")
    stalls = hangs = restarts = failed = early_failed = 0
    wall = []
    for i in range(n):
        rd = os.path.join(d, f"run-{i}")
        t0 = time.monotonic()
        try:
            p = subprocess.run([jek, "boot", bundle, "--policy", policy, "--pod", pod,
                                "--vmm", "qemu", "--json", "--run-dir", rd],
                               capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
            code = p.returncode
        except subprocess.TimeoutExpired:
            code = None
            hangs += 1
        if code == 0:
            wall.append(time.monotonic() - t0)
        console = open(os.path.join(rd, "console.log"), "rb").read() \
            if os.path.exists(os.path.join(rd, "console.log")) else b""
        stalls += STALL in console
        early_failed += EARLY_OK not in console
        restarts += console.count(b"Linux version") > 1
        if code not in (0, None):
            failed += 1
            print(f"bench_kernel: jek boot run {i} exited {code}: "
                  f"{p.stderr.decode(errors='replace')[-400:]}", file=sys.stderr)
    return {"runs": n, "stalls": stalls, "hangs": hangs, "restarts": restarts,
            "failed": failed, "early_failed": early_failed,
            "wall_s": statistics.median(wall) if wall else float("nan")}


old_entry = build_old()
new = {"bz": extract("bzimage", os.path.join(work, "bzImage")),
       "config": extract("config", os.path.join(work, "config"))}
initrd = extract("initramfs", os.path.join(work, "initramfs"))
cmdline = open(extract("cmdline", os.path.join(work, "cmdline"))).read().strip()
old = {"bz": os.path.join(old_entry, "bzImage"), "config": os.path.join(old_entry, "config")}
for k in (old, new):
    k.update(facts(k["bz"], k["config"]))
    k["pc"] = boots(runs, "pc", k["bz"], initrd, cmdline)
# Today's kernel under -M microvm: the reliability count and the median in one series.
old["microvm"] = boots(runs, "microvm", old["bz"], initrd, cmdline)
new["microvm"] = boots(max(runs, rel_runs), "microvm", new["bz"], initrd, cmdline)
jq = jek_qemu_path(rel_runs)


def ratio(m):
    return new[m]["ready_s"] / old[m]["ready_s"]


def bad(b):
    return (f"{b['stalls']} stalls, {b['hangs']} hangs, {b['restarts']} restarts in {b['runs']} "
            f"({b['early_poll_failed']} early PIT polls failed and the late calibration took "
            "over)")


print(f"""## The kernel (issue 38)

Today's default kernel beside the default kernel before the trim (`{OLD_REV}`, built in
this run from git history with the same jek and toolchain), booted with today's initramfs
and command line (`{cmdline}`) under QEMU with TCG. Boot = QEMU start to jek-init's
`JEK-READY` line, median of {runs} (today's kernel under `-M microvm`:
{max(runs, rel_runs)}). `-M microvm` runs with `-icount shift=auto,sleep=on` for both
kernels (docs/design.md, "Clock calibration"). Targets: at most 625 symbols `=y`, a bzImage
of at most 3.3 MB, boot at most 0.8x the old kernel's, no stall and no restart in
{rel_runs} boots.

| | today's default | before the trim | Firecracker CI 6.1 |
|---|---|---|---|
| symbols `=y` | {new['y']} | {old['y']} | {FIRECRACKER['y']} (`{FIRECRACKER['path']}` at {FIRECRACKER['commit']}) |
| bzImage | {new['bytes']:,} bytes ({new['compression']}) | {old['bytes']:,} bytes ({old['compression']}) | |
| boot, `-M pc` | {new['pc']['ready_s']:.2f} s ({ratio('pc'):.2f}x) | {old['pc']['ready_s']:.2f} s | |
| boot, `-M microvm` | {new['microvm']['ready_s']:.2f} s ({ratio('microvm'):.2f}x) | {old['microvm']['ready_s']:.2f} s | |
| `-M pc` boots gone wrong | {bad(new['pc'])} | {bad(old['pc'])} | |
| `-M microvm` boots gone wrong | {bad(new['microvm'])} | {bad(old['microvm'])} | |

jek's QEMU path (`jek boot --vmm qemu` of the default bundle: `-M pc` with qboot, verify,
measure, boot to the pod's exit): {jq['runs'] - jq['failed'] - jq['hangs']} of {jq['runs']}
runs ended with status 0; {jq['stalls']} calibration stalls, {jq['hangs']} hangs,
{jq['restarts']} restarts ({jq['early_failed']} early PIT polls failed and the late
calibration took over); median {jq['wall_s']:.2f} s start to exit. A stall is a boot with no TSC frequency
at all ("Marking TSC unstable due to could not calculate TSC khz"), which hangs under
`-M microvm`.""")
