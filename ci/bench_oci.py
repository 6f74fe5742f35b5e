#!/usr/bin/env python3
"""Push and pull of one bundle through a local docker-registry: `jek push` / `jek pull`
(pull includes verification under the policy) against `skopeo copy` of the same blob as an
OCI layout. Usage: bench_oci.py RUNS JEK BUNDLE POLICY WORKDIR. Prints JSON medians (ms)."""
import hashlib, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

runs, jek, bundle, policy, work = int(sys.argv[1]), *sys.argv[2:6]
os.makedirs(work, exist_ok=True)
data = open(bundle, "rb").read()

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

port = free_port()
storage = tempfile.mkdtemp(dir=work)
cfg = os.path.join(work, "registry.yml")
open(cfg, "w").write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {storage}\nhttp:\n  addr: 127.0.0.1:{port}\n")
reg = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close(); break
        except OSError:
            time.sleep(0.02)
    addr = f"127.0.0.1:{port}"

    # The same artifact as an OCI image layout for skopeo.
    layout = os.path.join(work, "layout")
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    def blob(b):
        d = hashlib.sha256(b).hexdigest()
        open(os.path.join(layout, "blobs", "sha256", d), "wb").write(b)
        return f"sha256:{d}"
    cfg_d = blob(b"{}")
    layer_d = blob(data)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.jek.bundle.v1",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cfg_d, "size": 2},
        "layers": [{"mediaType": "application/vnd.jek.bundle.v1+binary", "digest": layer_d, "size": len(data)}]}).encode()
    man_d = blob(manifest)
    open(os.path.join(layout, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    open(os.path.join(layout, "index.json"), "w").write(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man_d, "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}))

    def timed(cmd):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return (time.perf_counter() - t) * 1e3

    res = {k: [] for k in ("jekPush", "jekPull", "skopeoPush", "skopeoPull")}
    for i in range(runs):
        # A fresh repository each run, so no blob is already there.
        res["jekPush"].append(timed([jek, "-q", "push", bundle, f"{addr}/jek{i}/k:1", "--plain-http"]))
        out = os.path.join(work, f"pulled{i}.jek")
        res["jekPull"].append(timed([jek, "-q", "pull", f"{addr}/jek{i}/k:1", "--policy", policy, "--out", out, "--plain-http"]))
        # skopeo remembers where it uploaded a blob and would mount it instead of uploading
        # it again: forget, so every run uploads the whole blob as jek does.
        for c in ("/var/lib/containers/cache", os.path.expanduser("~/.local/share/containers/cache")):
            shutil.rmtree(c, ignore_errors=True)
        res["skopeoPush"].append(timed(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:bench", f"docker://{addr}/sk{i}/k:1"]))
        dst = os.path.join(work, f"skopeo{i}")
        shutil.rmtree(dst, ignore_errors=True)
        res["skopeoPull"].append(timed(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{addr}/sk{i}/k:1", f"oci:{dst}:bench"]))
        for p in (out, out + ".sigstore.json"):
            if os.path.exists(p): os.remove(p)
        shutil.rmtree(dst, ignore_errors=True)
    print(json.dumps({"runs": runs, "bytes": len(data), **{k: statistics.median(v) for k, v in res.items()}}))
finally:
    reg.terminate(); reg.wait()
    shutil.rmtree(storage, ignore_errors=True)
