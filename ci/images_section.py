#!/usr/bin/env python3
"""Renders the container-image section of docs/benchmarks.md from bench_images.py's JSON."""
import json
import sys

d = json.loads(sys.argv[1])
runs = d["bootImage"]["runs"]
rows = "\n".join(
    f"| {name} ({i['layoutBytes'] / 1e6:.1f} MB of blobs) | {i['coldMs']:.0f} ms | {i['warmMs']:.0f} ms | {i['peerMs']:.0f} ms |"
    for name, i in d["images"].items()
)
ms = lambda v: "—" if v is None else f"{v:.0f} ms"
print(f"""## Container images in pods

`ci/bench_images.py`: two images made by `jek_image::build` from Debian's busybox-static and
pushed to a local docker-registry: busybox (two layers) and an alpine-sized one (plus a
layer of 600 files, 7.5 MB uncompressed). Medians of {runs} runs.

**Host-side preparation**: `jek predict` of a one-container pod naming the image (pull,
digest and diff_id checks, policy, unpack in memory, cpio, hash, PCR plan), with the
test-kernel bundle so that bundle verification stays out of the figure (`jek predict`
without an image: {d["predictWithoutImageMs"]:.0f} ms). Cold: an empty image cache; warm: the
segment cached (the tag is still resolved at the registry). Peer, same run: the same work
with standard tools, `skopeo copy` to an OCI layout, `tar -x` of each layer to disk,
`find | cpio -o -H newc` and `sha256sum`.

| image | jek, cold cache | jek, warm cache | skopeo + tar + cpio + sha256sum |
|---|---|---|---|
{rows}

**Boot to the container's first output line**: `jek boot` of the default bundle under QEMU
(TCG), command start to the first line of the container (image cache warm), next to the
same boot running the bundle's own sample app.

| pod | command start to first container line |
|---|---|
| busybox image (`echo hello from the image`) | {ms(d["bootImage"]["medianMs"])} ({d["bootImage"]["reached"]} of {runs} runs reached it) |
| the bundle's sample app (no image) | {ms(d["bootSampleApp"]["medianMs"])} ({d["bootSampleApp"]["reached"]} of {runs} runs reached it) |

Reading: the warm figure is what a pod with a cached image pays at every boot (one
manifest request for the tag, the cached segment read and hashed, the PCR plan). The peer
writes every file to disk, so its figure swings with the disk cache from run to run; jek
never touches the host file system with image contents. The boot difference is the
container segment the guest kernel unpacks under TCG plus the container's set-up (mounts,
the exec helper's chroot and identity change).""")
