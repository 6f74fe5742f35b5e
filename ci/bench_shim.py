#!/usr/bin/env python3
"""The containerd runtime: `ctr run` to the container's first output line with
`--runtime io.containerd.jek.v2`, next to the same `ctr run` with runc (containerd's
default, io.containerd.runc.v2) for the same image in the same run, and each shim's memory.

Usage: bench_shim.py RUNS BUNDLE KEY_PUB SHIM LAYOUT_TOOL WORKDIR

Starts a containerd of its own (own root, state and sockets; CRI off), imports the busybox
image made by `busybox-layout` with `ctr image import`, then for each runtime runs
`ctr run --rm IMAGE ID sh -c 'echo up; sleep 1'` RUNS times: the time from starting ctr to
the line `up` on its stdout, and to ctr's exit. While the container sleeps, the shim
serving it is read from /proc: VmRSS and VmHWM (for jek, the shim alone: QEMU and swtpm are
its children, reported apart). Prints a Markdown section with medians."""
import os, shutil, statistics, subprocess, sys, tempfile, time

runs = int(sys.argv[1])
bundle, key_pub, shim, tool, work = sys.argv[2:7]
os.makedirs(work, exist_ok=True)
d = tempfile.mkdtemp(dir=work)
p = lambda n: os.path.join(d, n)
os.makedirs(p("bin"))
os.symlink(os.path.abspath(shim), p("bin/containerd-shim-jek-v2"))
open(p("policy.yaml"), "w").write(
    f"trusted_keys: [{key_pub}]\nmin_security_version: 1\n"
    "images:\n  allow:\n    - repository: docker.io/library/busybox\n")
open(p("runtime.yaml"), "w").write(f"bundle: {bundle}\npolicy: policy.yaml\nrunRoot: run\n")
open(p("config.toml"), "w").write(
    f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
    f'[grpc]\n  address = "{d}/c.sock"\n[ttrpc]\n  address = "{d}/c.sock.ttrpc"\n')
env = dict(os.environ, PATH=p("bin") + ":" + os.environ["PATH"], JEK_RUNTIME_CONFIG=p("runtime.yaml"))
log = open(p("containerd.log"), "w")
cd = subprocess.Popen(["containerd", "--config", p("config.toml")], env=env, stdout=log, stderr=log)
ctr = ["ctr", "--address", p("c.sock")]


def status_kib(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def shim_of(cid):
    needle = f"-id {cid} -address {d}/c.sock"
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                cmd = open(f"/proc/{e}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if needle in cmd and "containerd-shim" in cmd:
                return int(e)
    return None


def children_rss(pid):
    total = 0
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                ppid = int(open(f"/proc/{e}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                total += status_kib(int(e), "VmRSS") or 0
    return total


try:
    for _ in range(200):
        if subprocess.run(ctr + ["version"], capture_output=True).returncode == 0:
            break
        time.sleep(0.05)
    layout = p("layout")
    subprocess.run([tool, layout], check=True, capture_output=True)
    subprocess.run(["tar", "-C", layout, "-cf", p("busybox.tar"), "."], check=True)
    subprocess.run(ctr + ["image", "import", "--base-name", "docker.io/library/busybox", p("busybox.tar")],
                   check=True, capture_output=True)
    image = "docker.io/library/busybox:jek-test"
    results = {}
    for name, runtime in [("runc", "io.containerd.runc.v2"), ("jek", "io.containerd.jek.v2")]:
        first, total, rss, hwm, kids = [], [], [], [], []
        for i in range(runs):
            cid = f"{name}{i}"
            t0 = time.perf_counter()
            proc = subprocess.Popen(ctr + ["run", "--rm", "--runtime", runtime, image, cid, "sh", "-c", "echo up; sleep 1"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = proc.stdout.readline()
            t1 = time.perf_counter()
            pid = shim_of(cid)
            if pid:
                rss.append(status_kib(pid, "VmRSS")); hwm.append(status_kib(pid, "VmHWM")); kids.append(children_rss(pid))
            out, err = proc.communicate(timeout=120)
            t2 = time.perf_counter()
            if line.strip() != "up" or proc.returncode != 0:
                sys.exit(f"{name} run {i}: {line!r} {err} (exit {proc.returncode})")
            first.append((t1 - t0) * 1e3); total.append((t2 - t0) * 1e3)
        med = lambda v: statistics.median([x for x in v if x is not None]) if any(x is not None for x in v) else float("nan")
        results[name] = dict(first=med(first), total=med(total), rss=med(rss), hwm=med(hwm), kids=med(kids))
finally:
    cd.kill(); cd.wait()
    shutil.rmtree(d, ignore_errors=True)

r, j = results["runc"], results["jek"]
print(f"""## containerd runtime (`containerd-shim-jek-v2`)

`ci/bench_shim.py`: a containerd of its own (Debian's 1.6), the busybox image imported with
`ctr image import`, `ctr run --rm IMAGE ID sh -c 'echo up; sleep 1'` {runs} times per runtime,
medians. jek's pod: the bundle `{os.path.basename(bundle)}` ({os.path.getsize(bundle)} bytes) verified, a fresh swtpm, the container segment
measured, QEMU with TCG (no hardware virtualization here); runc: a namespace container.

| runtime | `ctr run` to the first output line | `ctr run` to exit (includes the 1 s sleep) | shim RSS while the container runs | shim peak RSS | its children (QEMU, swtpm) RSS |
|---|---|---|---|---|---|
| runc (`io.containerd.runc.v2`, peer) | {r['first']:.0f} ms | {r['total']:.0f} ms | {r['rss']:.0f} KiB | {r['hwm']:.0f} KiB | (the container) |
| jek (`io.containerd.jek.v2`) | {j['first']:.0f} ms | {j['total']:.0f} ms | {j['rss']:.0f} KiB | {j['hwm']:.0f} KiB | {j['kids']:.0f} KiB |

The isolation cost is the difference in the first column: a verified, measured VM boot
(kernel under TCG emulation here; a host with hardware virtualization boots in a fraction of
it) against a process in namespaces. The jek shim holds the verified bundle and the packed
root file system while it boots the pod; its children's RSS is mostly QEMU's guest RAM.""")
