#!/usr/bin/env python3
"""Benchmarks `jek attest` against swtpm.

Usage: bench_attest.py RUNS WORKDIR JEK BUNDLE KEY_PUB

Boots 32 pods of BUNDLE (KVM backend, --keep-tpm, each with its own swtpm and EK
certificate), then measures: one pod's attestation (the run record's jek.timingsMs:
identity = EK certificate, AK load and credential activation; nonceToVerdict = quote, PCR
read and appraisal; appraise = the pure-Rust appraisal alone), the whole command for 1, 16
and 32 pods (pods per second), and on exported evidence `tpm2_checkquote` next to
`jek attest --evidence`. Prints one JSON object of medians. Stops every kept swtpm."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

runs, work, jek, bundle, key_pub = int(sys.argv[1]), *sys.argv[2:6]
os.makedirs(work, exist_ok=True)
ca = os.path.join(work, "ca")
policy = os.path.join(work, "policy.yaml")
with open(policy, "w") as f:
    f.write(f"trusted_keys: [{key_pub}]\nmin_security_version: 1\n"
            f"attestation:\n  ek_ca: {ca}/swtpm-localca-rootca-cert.pem\n")
POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: NAME}\nspec:\n  containers:\n    - name: app\n      command: [/bin/jek-sample-app]\n"
names = [f"p{i:02}" for i in range(32)]
pods = os.path.join(work, "pods")
shutil.rmtree(pods, ignore_errors=True)
for n in names:
    with open(os.path.join(work, f"{n}.yaml"), "w") as f:
        f.write(POD.replace("NAME", n))
kept = []


def boot(n):
    return subprocess.Popen([jek, "boot", bundle, "--policy", policy, "--pod", f"{work}/{n}.yaml",
                             "--vmm", "kvm", "--keep-tpm", "--tpm-ca", ca, "--json", "-q",
                             "--run-dir", f"{pods}/{n}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def attest(dirs, extra=()):
    args = [jek, "attest", *dirs, "--bundle", bundle, "--policy", policy, "--json"]
    for n in names:
        args += ["--pod", f"{work}/{n}.yaml"]
    t0 = time.monotonic()
    p = subprocess.run(args + list(extra), capture_output=True)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"jek attest exited {p.returncode}: {p.stderr.decode()[-2000:]}")
    return wall, json.loads(p.stdout)


try:
    # Boot in batches of 8: swtpm_setup makes an RSA EK per pod (about 1 s of CPU).
    for i in range(0, 32, 8):
        procs = [(n, boot(n)) for n in names[i:i + 8]]
        for n, p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                sys.exit(f"boot {n} exited {p.returncode}: {err.decode()[-2000:]}")
            kept.append(json.loads(out)["tpm"]["registration"])
    one = {"identity": [], "nonceToVerdict": [], "appraise": [], "total": []}
    one_wall = []
    for _ in range(runs):
        wall, v = attest([f"{pods}/p00"])
        one_wall.append(wall * 1000)
        t = v["results"][0]["result"]["submods"]["p00"]["jek.timingsMs"]
        for k in one:
            one[k].append(t[k])
    many = {}
    for count in (16, 32):
        walls = []
        for _ in range(max(1, runs // 2)):
            wall, v = attest([f"{pods}/{n}" for n in names[:count]])
            if v["summary"]["affirming"] != count:
                sys.exit(f"{count} pods: {v['summary']}")
            walls.append(wall)
        many[str(count)] = {"wallMs": statistics.median(walls) * 1000,
                            "podsPerSecond": count / statistics.median(walls)}
    ev = os.path.join(work, "evidence")
    subprocess.run(["rm", "-rf", ev], check=True)
    _, v = attest([f"{pods}/p00"], ["--export", ev])
    meta = json.load(open(f"{ev}/evidence.json"))
    check, offline = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(["tpm2_checkquote", "-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig",
                        "-f", "pcrs.ser", "-g", "sha256", "-q", meta["nonce"]],
                       cwd=ev, check=True, capture_output=True)
        check.append((time.monotonic() - t0) * 1000)
        t0 = time.monotonic()
        p = subprocess.run([jek, "attest", "--evidence", ev, "--nonce", meta["nonce"], "--ak-name",
                            meta["akName"], "--bundle", bundle, "--policy", policy, "--pod",
                            f"{work}/p00.yaml", "--json"], capture_output=True)
        if p.returncode != 0:
            sys.exit(f"jek attest --evidence exited {p.returncode}: {p.stderr.decode()}")
        offline.append((time.monotonic() - t0) * 1000)
    med = statistics.median
    print(json.dumps({
        "runs": runs,
        "one": {k: med(v) for k, v in one.items()},
        "oneWallMs": med(one_wall),
        "many": many,
        "checkquoteMs": med(check),
        "evidenceModeMs": med(offline),
    }))
finally:
    # Stops each kept swtpm, removes its socket directory and forgets its registration.
    if kept:
        subprocess.run([jek, "tpm", "stop", *kept], check=False, stdout=subprocess.DEVNULL)
