#!/usr/bin/env python3
"""Container images in pods: host-side preparation and boot to the container's first line.

Usage: bench_images.py RUNS JEK LAYOUT_TOOL TESTKERNEL_BUNDLE DEFAULT_BUNDLE POLICY_BASE WORKDIR

- Two images made by `busybox-layout` (jek_image::build): busybox (about 1 MB of layers)
  and an alpine-sized one (busybox plus 600 files, about 7.5 MB uncompressed), pushed to a
  local docker-registry with skopeo.
- Preparation: `jek predict` of a one-container pod naming the image (pull from the
  registry, digest checks, unpack, cpio, hash, PCR plan) with a cold image cache and a warm
  one, next to the same work done with standard tools in the same run (`skopeo copy` to an
  OCI layout, `tar -x` of every layer, `cpio -o -H newc` of the root, `sha256sum`). The
  test-kernel bundle keeps verification out of the figure; `jek predict` of a pod without
  images is the baseline.
- Boot: `jek boot` of the default bundle under QEMU (TCG), command start to the
  container's first output line, for the busybox image and for the sample app of the
  bundle itself.
Prints JSON: medians in milliseconds."""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

runs = int(sys.argv[1])
jek, tool, tk_bundle, bundle, policy_base, work = sys.argv[2:8]
os.makedirs(work, exist_ok=True)


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def timed(cmd, **kw):
    t = time.perf_counter(); run(cmd, **kw); return (time.perf_counter() - t) * 1e3


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
    images = {}
    for name, extra in (("busybox", []), ("alpine-sized", ["--filler", "600", "12500"])):
        layout = os.path.join(work, f"{name}-layout")
        shutil.rmtree(layout, ignore_errors=True)
        digest = run([tool, layout, *extra]).stdout.decode().strip()
        ref = f"{addr}/bench/{name}:jek-test"
        run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:jek-test", f"docker://{ref}"])
        size = sum(os.path.getsize(os.path.join(layout, "blobs", "sha256", f)) for f in os.listdir(os.path.join(layout, "blobs", "sha256")))
        images[name] = {"ref": ref, "digest": digest, "layoutBytes": size}

    allow = "".join(f"    - repository: {addr}/bench/{n}\n      digests: [{i['digest']}]\n" for n, i in images.items())
    policy = os.path.join(work, "policy.yaml")
    open(policy, "w").write(open(policy_base).read() + "images:\n  allow:\n" + allow)

    def pod_file(name, container):
        p = os.path.join(work, f"{name}.yaml")
        open(p, "w").write("apiVersion: v1\nkind: Pod\nmetadata: {name: bench}\nspec:\n  containers:\n" + container)
        return p

    app_pod = pod_file("app", "    - name: app\n      command: [/bin/jek-sample-app]\n")
    result = {"images": {}}
    predict = lambda pod, cache: [jek, "-q", "predict", tk_bundle, "--policy", policy, "--pod", pod, "--plain-http"]
    env_for = lambda cache: dict(os.environ, XDG_CACHE_HOME=cache)
    base = [timed(predict(app_pod, None), env=env_for(os.path.join(work, "c0"))) for _ in range(runs)]
    result["predictWithoutImageMs"] = statistics.median(base)
    for name, img in images.items():
        pod = pod_file(name, f"    - name: web\n      image: {img['ref']}\n")
        cold, warm, peer = [], [], []
        for i in range(runs):
            cache = os.path.join(work, f"cache-{name}-{i}")
            shutil.rmtree(cache, ignore_errors=True)
            cold.append(timed(predict(pod, cache), env=env_for(cache)))
            warm.append(timed(predict(pod, cache), env=env_for(cache)))
            shutil.rmtree(cache, ignore_errors=True)
            # The peer: the same steps with standard tools.
            d = os.path.join(work, f"peer-{name}-{i}")
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            t = time.perf_counter()
            run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{img['ref']}", f"oci:{d}/oci:t"])
            idx = json.load(open(f"{d}/oci/index.json"))
            blob = lambda dg: os.path.join(d, "oci", "blobs", "sha256", dg.split(":")[1])
            man = json.load(open(blob(idx["manifests"][0]["digest"])))
            root = os.path.join(d, "root"); os.makedirs(root)
            for layer in man["layers"]:
                flag = "--zstd" if layer["mediaType"].endswith("zstd") else "-z"
                run(["tar", "-x", flag, "-f", blob(layer["digest"]), "-C", root])
            files = run(["find", "."], cwd=root).stdout
            archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=files, cwd=root, check=True, stdout=subprocess.PIPE).stdout
            subprocess.run(["sha256sum"], input=archive, check=True, stdout=subprocess.DEVNULL)
            peer.append((time.perf_counter() - t) * 1e3)
            shutil.rmtree(d, ignore_errors=True)
        result["images"][name] = {
            "layoutBytes": img["layoutBytes"],
            "coldMs": statistics.median(cold),
            "warmMs": statistics.median(warm),
            "peerMs": statistics.median(peer),
        }

    def first_line(pod, marker):
        cache = os.path.join(work, "boot-cache")
        times = []
        for i in range(runs):
            run_dir = os.path.join(work, f"run-{os.path.basename(pod)}-{i}")
            shutil.rmtree(run_dir, ignore_errors=True)
            t = time.perf_counter()
            p = subprocess.Popen([jek, "boot", bundle, "--policy", policy, "--pod", pod, "--plain-http", "--vmm", "qemu",
                                  "--run-dir", run_dir],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env_for(cache))
            got = None
            for line in p.stdout:
                if marker in line.decode(errors="replace"):
                    got = (time.perf_counter() - t) * 1e3
                    break
            p.wait()
            if got is not None:
                times.append(got)
        return {"medianMs": statistics.median(times) if times else None, "runs": runs, "reached": len(times)}

    web_pod = pod_file("boot-web", f"    - name: web\n      image: {images['busybox']['ref']}\n      args: ['echo hello from the image']\n")
    # Warm the image cache first: the figure is the boot, the preparation is timed above.
    run([jek, "-q", "predict", bundle, "--policy", policy, "--pod", web_pod, "--plain-http"], env=env_for(os.path.join(work, "boot-cache")))
    result["bootImage"] = first_line(web_pod, "[web] hello from the image")
    result["bootSampleApp"] = first_line(app_pod, "[app] jek-sample-app:")
    print(json.dumps(result))
finally:
    reg.kill(); reg.wait()
