#!/usr/bin/env python3
"""Benchmarks the attestation service (jek-agent + jek-attestation-verifier) against swtpm.

Usage: bench_service.py RUNS WORKDIR JEK AGENT VERIFIER BUNDLE KEY_PUB

Boots 64 pods of BUNDLE (KVM backend, --keep-tpm, each with its own swtpm), starts one
jek-agent, and for each store (SQLite, then a PostgreSQL server of Debian's package started
here) starts jek-attestation-verifier and measures:
- registration per pod (POST /v1/pods: identity, EK chain, credential activation, first
  quote, store), wall time, median over the 64 pods;
- nonce to signed verdict per pod (the EAR's jek.timingsMs.nonceToVerdict: quote through
  the agent, appraisal, before signing), median over RUNS rounds of every pod;
- sustained re-attestations per second with the 64 pods registered: the verifier restarted
  on the same store with a 20 ms interval, rounds counted from /v1/health over 10 s;
- verifier memory per registered pod: resident set after registering 64 pods minus before,
  divided by 64.
Prints one JSON object. Stops every process and kept swtpm it started."""
import http.client as httpclient
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

runs, work, jek, agent_bin, verifier_bin, bundle, key_pub = int(sys.argv[1]), *sys.argv[2:8]
N = 64
os.makedirs(work, exist_ok=True)
ca = os.path.join(work, "ca")
reg = os.path.join(work, "reg")
policy = os.path.join(work, "policy.yaml")
with open(policy, "w") as f:
    f.write(f"trusted_keys: [{key_pub}]\nmin_security_version: 1\n"
            f"attestation:\n  ek_ca: {ca}/swtpm-localca-rootca-cert.pem\n")
POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: NAME}\nspec:\n  containers:\n    - name: app\n      command: [/bin/jek-sample-app]\n"
names = [f"s{i:02}" for i in range(N)]
pods = os.path.join(work, "pods")
shutil.rmtree(pods, ignore_errors=True)
shutil.rmtree(reg, ignore_errors=True)
for n in names:
    with open(os.path.join(work, f"{n}.yaml"), "w") as f:
        f.write(POD.replace("NAME", n))
procs = []
kept = []
# The verifier needs an authenticated client: the bench is its admin (a bearer token).
tokens = os.path.join(work, "tokens")
if os.path.exists(tokens):
    os.remove(tokens)
ADMIN_TOKEN = subprocess.run([verifier_bin, "add-token", "--tokens", tokens, "--role", "admin", "bench"],
                             check=True, capture_output=True, text=True).stdout.strip()


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json",
                                                                         "authorization": f"Bearer {ADMIN_TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def agent_pods(agent_url):
    """The agent's pods, asked over its Unix socket (`unix:PATH`), as the verifier asks."""
    conn = httpclient.HTTPConnection("localhost", timeout=30)
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.connect(agent_url.removeprefix("unix:"))
    conn.request("GET", "/v1/pods")
    resp = conn.getresponse()
    if resp.status != 200:
        sys.exit(f"the agent's pods: {resp.status} {resp.read()[:500]!r}")
    return json.loads(resp.read())


def start(args, log):
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    procs.append(p)
    line = p.stdout.readline()
    if "listening on" not in line:
        sys.exit(f"{args[0]} did not start: {line!r} {open(log).read()[-2000:]}")
    return p, line.split()[-1]


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()


def bench(store, label):
    verifier_args = [verifier_bin, "--listen", "127.0.0.1:0", "--policy", policy, "--bundle", bundle,
                     "--store", store, "--replica", f"bench-{label}", "--tokens", tokens]
    v, url = start(verifier_args, os.path.join(work, f"verifier-{label}.log"))
    time.sleep(0.5)
    before = rss_kib(v.pid)
    digest = http("GET", f"{url}/v1/bundles")[1]["bundles"][0]["digest"]
    listed = agent_pods(agent_url)
    register_ms = []
    for p in listed["pods"]:
        yaml = open(os.path.join(work, f"{p['pod']}.yaml")).read()
        t0 = time.monotonic()
        status, body = http("POST", f"{url}/v1/pods", {"agent": agent_url, "podId": p["id"],
                                                       "bundle": digest, "podYaml": yaml})
        register_ms.append((time.monotonic() - t0) * 1000)
        if status != 201:
            sys.exit(f"{label}: registering {p['pod']}: {status} {body}")
    deadline = time.monotonic() + 60
    while True:
        states = http("GET", f"{url}/v1/pods")[1]["pods"]
        if len(states) == N and all(s["status"] == "affirming" for s in states):
            break
        if time.monotonic() > deadline:
            sys.exit(f"{label}: not all affirming: {[s['status'] for s in states]}")
        time.sleep(0.2)
    after = rss_kib(v.pid)
    verdict = []
    for _ in range(runs):
        for p in listed["pods"]:
            _, r = http("GET", f"{url}/v1/pods/{p['id']}/result")
            verdict.append(r["ear"]["submods"][p["pod"]]["jek.timingsMs"]["nonceToVerdict"])
        time.sleep(2.1)  # the next round (2 s interval)
    stop(v)
    # Sustained: the same store (registrations persist), rounds as fast as they go.
    v, url = start(verifier_args + ["--interval", "20ms", "--concurrency", "32"],
                   os.path.join(work, f"verifier-{label}-sustained.log"))
    time.sleep(3)
    r0, t0 = http("GET", f"{url}/v1/health")[1]["rounds"], time.monotonic()
    time.sleep(10)
    r1, t1 = http("GET", f"{url}/v1/health")[1]["rounds"], time.monotonic()
    states = http("GET", f"{url}/v1/pods")[1]["pods"]
    stop(v)
    if not all(s["status"] == "affirming" for s in states):
        sys.exit(f"{label}: sustained run left pods {[s['status'] for s in states]}")
    med = statistics.median
    return {
        "registerMs": med(register_ms),
        "nonceToVerdictMs": med(verdict),
        "perSecond": (r1 - r0) / (t1 - t0),
        "kibPerPod": (after - before) / N,
        "rssKib": after,
    }


def postgres():
    root = "/usr/lib/postgresql"
    binv = sorted(os.path.join(root, v, "bin") for v in os.listdir(root))[-1]
    d = tempfile.mkdtemp(prefix="jek-bench-pg-")
    os.chmod(d, 0o777)
    pre = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(pre + [f"{binv}/initdb", "-A", "trust", "-U", "jek", "-D", f"{d}/data"], check=True,
                   capture_output=True)
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    subprocess.run(pre + [f"{binv}/pg_ctl", "-w", "-D", f"{d}/data", "-l", f"{d}/pg.log", "-o",
                          f"-p {port} -k {d} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    return d, pre, binv, f"postgres://jek@127.0.0.1:{port}/postgres"


pg = None
try:
    for i in range(0, N, 8):
        batch = [(n, subprocess.Popen([jek, "boot", bundle, "--policy", policy, "--pod", f"{work}/{n}.yaml",
                                       "--vmm", "kvm", "--keep-tpm", "--tpm-ca", ca, "--registry", reg,
                                       "--json", "-q", "--run-dir", f"{pods}/{n}"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)) for n in names[i:i + 8]]
        for n, p in batch:
            out, err = p.communicate()
            if p.returncode != 0:
                sys.exit(f"boot {n} exited {p.returncode}: {err.decode()[-2000:]}")
            kept.append(json.loads(out)["tpm"]["registration"])
    agent, agent_url = start([agent_bin, "--listen", f"unix:{os.path.abspath(work)}/agent.sock",
                              "--registry", reg],
                             os.path.join(work, "agent.log"))
    # A store left by an earlier run holds that run's pods, whose TPMs are gone.
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(os.path.join(work, "verifier.db" + suffix)):
            os.remove(os.path.join(work, "verifier.db" + suffix))
    sqlite = bench(os.path.join(work, "verifier.db"), "sqlite")
    pg = postgres()
    pgr = bench(pg[3], "postgresql")
    print(json.dumps({"runs": runs, "pods": N, "sqlite": sqlite, "postgresql": pgr,
                      "agentRssKib": rss_kib(agent.pid)}))
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
    if pg:
        subprocess.run(pg[1] + [f"{pg[2]}/pg_ctl", "-w", "-m", "immediate", "-D", f"{pg[0]}/data", "stop"],
                       capture_output=True)
        shutil.rmtree(pg[0], ignore_errors=True)
    if kept:
        subprocess.run([jek, "tpm", "stop", "--registry", reg, *kept], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
