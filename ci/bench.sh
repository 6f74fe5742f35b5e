#!/usr/bin/env bash
# Runs jek's benchmarks on this machine and rewrites docs/benchmarks.md, each figure next to
# its peer measured in the same run.
#
#   ci/bench.sh           warm: reuses the cached kernel (under 15 minutes)
#   ci/bench.sh --cold    also times a cold `jek build` and a plain `make -j$(nproc)` of the
#                         same config (adds about 12 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
COLD=0; [ "${1:-}" = "--cold" ] && COLD=1
RUNS="${JEK_BENCH_RUNS:-5}"
JEK_SKIP_FUZZ=1 ci/install-deps.sh
cargo build --release -q -p jek
ci/build-guest.sh
JEK=$PWD/target/release/jek
B=$PWD/target/bench; mkdir -p "$B"
export SOURCE_DATE_EPOCH=1700000000
[ -f "$B/bench.key" ] || "$JEK" keygen --out "$B/bench" >/dev/null
CACHE="${JEK_BENCH_CACHE:-$HOME/.cache/jek}"
secs() { date +%s.%N; }
md=$B/benchmarks.md.new

echo "==> verify and hashing" >&2
VERIFY_TABLE=$(cargo bench -q -p jek-verifier --bench verify 2>/dev/null)

COLD_ROWS=""
if [ "$COLD" = 1 ]; then
  echo "==> cold jek build (fresh cache)" >&2
  rm -rf "$B/cold-cache"
  t0=$(secs); "$JEK" build recipes/default.yaml --key "$B/bench.key" --cache-dir "$B/cold-cache" --out-dir "$B/cold-out" --no-progress >/dev/null; t1=$(secs)
  JEK_COLD=$(echo "$t1 - $t0" | bc)
  key=$(ls "$B/cold-cache/kernel" | grep -v lock | grep -v '^\.' | head -1)
  echo "==> plain make of the same config" >&2
  rm -rf "$B/plain"; mkdir -p "$B/plain/src" "$B/plain/obj"
  t0=$(secs)
  tar -xf /usr/src/linux-source-6.1.tar.xz -C "$B/plain/src" --strip-components=1
  cp "$B/cold-cache/kernel/$key/config" "$B/plain/obj/.config"
  make -s -C "$B/plain/src" O="$B/plain/obj" olddefconfig >/dev/null
  make -s -C "$B/plain/src" O="$B/plain/obj" -j"$(nproc)" bzImage >/dev/null 2>&1
  t1=$(secs)
  PLAIN=$(echo "$t1 - $t0" | bc)
  rm -rf "$B/plain"
  OVER=$(echo "scale=1; ($JEK_COLD - $PLAIN) * 100 / $PLAIN" | bc)
  COLD_ROWS="| cold \`jek build\` (unpack, tinyconfig, fragments, olddefconfig, policy check, make bzImage, initramfs, pack) | $(printf %.0f "$JEK_COLD") s | plain untar + \`make olddefconfig bzImage -j$(nproc)\` of the same .config: $(printf %.0f "$PLAIN") s (overhead ${OVER}%) |"
fi

echo "==> warm jek build" >&2
"$JEK" build recipes/default.yaml --key "$B/bench.key" --cache-dir "$CACHE" --out-dir "$B/out" --no-progress >/dev/null
t0=$(secs); "$JEK" build recipes/default.yaml --key "$B/bench.key" --cache-dir "$CACHE" --out-dir "$B/out" --json --no-progress > "$B/build.json"; t1=$(secs)
WARM=$(echo "$t1 - $t0" | bc)
KEY=$(python3 -c 'import json;print(json.load(open("'"$B/build.json"'"))["cacheKey"])')
ENTRY="$CACHE/kernel/$KEY"
OUR_BZ=$(stat -c %s "$ENTRY/bzImage"); OUR_Y=$(grep -c '=y$' "$ENTRY/config")
BUNDLE=$(python3 -c 'import json;print(json.load(open("'"$B/build.json"'"))["bundle"])')
BUNDLE_SIZE=$(stat -c %s "$BUNDLE")

echo "==> Debian's generic kernel" >&2
DEB="$B/debian"; mkdir -p "$DEB"
if ! ls "$DEB"/x/boot/vmlinuz-* >/dev/null 2>&1; then
  pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/ *Depends: //p' | head -1)
  (cd "$DEB" && apt-get download -q "$pkg" 2>/dev/null && dpkg -x ./*.deb x && rm -f ./*.deb)
fi
DEB_BZ_PATH=$(ls "$DEB"/x/boot/vmlinuz-* | head -1); DEB_BZ=$(stat -c %s "$DEB_BZ_PATH")
DEB_Y=$(grep -c '=y$' "$(ls "$DEB"/x/boot/config-* | head -1)")

echo "==> QEMU boots ($RUNS runs each)" >&2
W="$B/boot"; rm -rf "$W"; mkdir -p "$W"
python3 - "$BUNDLE" "$W" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read(); pos = 16
names = {1: "bzImage", 3: "initramfs", 4: "cmdline"}
for _ in range(struct.unpack_from("<H", d, 10)[0]):
    k, _, l = struct.unpack_from("<H6sQ", d, pos)
    if k in names:
        open(f"{sys.argv[2]}/{names[k]}", "wb").write(d[pos + 16 : pos + 16 + l])
    pos += 16 + l
PY
CMD=$(cat "$W/cmdline")
OURS_PC=$(python3 ci/bench_boot.py "$RUNS" pc "$W/bzImage" "$W/initramfs" "$CMD")
OURS_MVM=$(python3 ci/bench_boot.py "$RUNS" microvm "$W/bzImage" "$W/initramfs" "$CMD")
DEB_PC=$(python3 ci/bench_boot.py "$RUNS" pc "$DEB_BZ_PATH" "$W/initramfs" "$CMD")
j() { python3 -c "import json,sys; print('%.2f' % json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

CPU=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
{
cat <<HDR
# jek benchmarks

Written by \`ci/bench.sh\` on $(date -u +%Y-%m-%d): $(nproc) cores ($CPU), $(free -g | awk '/Mem:/{print $2}') GiB,
$(. /etc/os-release; echo "$PRETTY_NAME"), $(rustc --version | cut -d' ' -f1-2), $(qemu-system-x86_64 --version | head -1).
The machines are shared and noisy: figures are medians; rerun to compare.

Targets: SHA-256 within 10% of OpenSSL's throughput and a 10 MiB bundle verified in a few
milliseconds (trust core); a cold build at most 5% slower than a plain \`make\` of the same
configuration, and a cached rebuild in seconds (builder).

## Verification and hashing (trust core)

\`cargo bench -p jek-verifier --bench verify\`: \`verify()\` of a bundle held in memory (parse,
envelope, one Ed25519 signature, SHA-256 of every component), and SHA-256 throughput of
the sha2 crate next to OpenSSL on the same machine.

$VERIFY_TABLE

## Kernel build (builder)

| what | jek | peer |
|---|---|---|
$COLD_ROWS
| \`jek build\` of the default recipe with the kernel cached | $(printf %.1f "$WARM") s | |
| bzImage size | $OUR_BZ bytes | Debian generic \`$(basename "$DEB_BZ_PATH")\`: $DEB_BZ bytes |
| symbols \`=y\` | $OUR_Y | Debian generic: $DEB_Y (plus modules) |
| bundle size (bzImage + vmlinux + initramfs + config + envelope) | $BUNDLE_SIZE bytes | |

## Boot under QEMU with TCG (no KVM on these machines)

QEMU start to the first serial output and to jek-init's \`JEK-READY\` line, same initramfs
and command line, $RUNS runs each, medians.

| kernel | machine | first serial output | JEK-READY |
|---|---|---|---|
| jek default | \`-M pc\` | $(j "$OURS_PC" first_output_s) s | $(j "$OURS_PC" ready_s) s |
| jek default | \`-M microvm\` | $(j "$OURS_MVM" first_output_s) s | $(j "$OURS_MVM" ready_s) s |
| Debian generic | \`-M pc\` | $(j "$DEB_PC" first_output_s) s | $(j "$DEB_PC" ready_s) s |
HDR
} > "$md"
mv "$md" docs/benchmarks.md
echo "==> wrote docs/benchmarks.md" >&2
