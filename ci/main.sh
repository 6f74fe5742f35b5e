#!/usr/bin/env bash
# jek's main job on the built-in default recipe (the README's first command):
# install what is needed, create (or reuse) a development key, build the just-enough kernel
# and initramfs, sign the bundle, and verify it under a policy that trusts that key; predict,
# boot and attest a pod, and have the attestation service (jek-agent, jek-attestation-verifier) attest it
# continuously with signed results; then push a busybox container image to a local registry and boot,
# measure and attest a pod that runs it under a policy that pins its digest.
# A second run reuses the cached kernel and finishes in seconds.
#
#   ci/main.sh              the normal run
#   ci/main.sh --tamper     also flip one byte of the bundle and show the refusal
#   ci/main.sh --wrong-key  also verify under a policy that trusts another key
set -euo pipefail
cd "$(dirname "$0")/.."
SHOW_TAMPER=0; SHOW_WRONG_KEY=0
for a in "$@"; do
  case "$a" in
    --tamper) SHOW_TAMPER=1 ;;
    --wrong-key) SHOW_WRONG_KEY=1 ;;
    *) echo "usage: ci/main.sh [--tamper] [--wrong-key]" >&2; exit 2 ;;
  esac
done

declare -A T
now() { date +%s.%N; }
timed() { local name=$1; shift; local t0; t0=$(now); "$@"; T[$name]=$(echo "$(now) - $t0" | bc); }
say() { printf '\n==> %s\n' "$*" >&2; }

say "installing dependencies (idempotent)"
timed deps env JEK_SKIP_FUZZ=1 ci/install-deps.sh
say "building jek and the guest binaries"
timed tools bash -c 'cargo build --release -q -p jek -p jek-agent -p jek-attestation-verifier && cargo build --release -q -p jek-image --example busybox-layout && ci/build-guest.sh'
JEK=target/release/jek
OUT=out/demo
mkdir -p .jek "$OUT"
if [ ! -f .jek/dev.key ]; then
  say "creating a development key in .jek/"
  "$JEK" keygen --out .jek/dev >/dev/null
fi
# The time of the last commit that changed the kernel inputs: rebuilding that commit
# reproduces the bundle, and unrelated commits keep the kernel cache warm.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct -- kernel-config recipes 2>/dev/null || true)}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"

say "building and signing the default bundle (the first kernel build takes about 5 minutes)"
timed build "$JEK" build recipes/default.yaml --key .jek/dev.key --out-dir "$OUT"
BUNDLE="$OUT/demo-1.0.0.jek"

cat > "$OUT/policy.yaml" <<POLICY
# Trust the development key; refuse anything below security version 1.
trusted_keys: [../../.jek/dev.pub]
min_security_version: 1
# jek attest: pod EK certificates must chain to this local CA (jek boot --keep-tpm creates it).
attestation:
  ek_ca: ../../.jek/tpm-ca/swtpm-localca-rootca-cert.pem
POLICY
say "verifying under $OUT/policy.yaml"
timed verify "$JEK" verify "$BUNDLE" --policy "$OUT/policy.yaml"

if [ "$SHOW_TAMPER" = 1 ]; then
  say "tampering: flipping one byte inside the initramfs"
  cp "$BUNDLE" "$OUT/tampered.jek"
  off=$("$JEK" inspect "$BUNDLE" --json | python3 -c 'import json,sys; c=[c for c in json.load(sys.stdin)["components"] if c["role"]=="initramfs"][0]; print(c["offset"]+100)')
  printf '\xff' | dd of="$OUT/tampered.jek" bs=1 seek="$off" conv=notrunc status=none
  if "$JEK" verify "$OUT/tampered.jek" --policy "$OUT/policy.yaml"; then echo "tampered bundle ACCEPTED" >&2; exit 1; fi
  echo "(refused, as it must be)" >&2
fi
if [ "$SHOW_WRONG_KEY" = 1 ]; then
  say "verifying under a policy that trusts a different key"
  [ -f .jek/other.key ] || "$JEK" keygen --out .jek/other >/dev/null
  printf 'trusted_keys: [../../.jek/other.pub]\nmin_security_version: 1\n' > "$OUT/other-policy.yaml"
  if "$JEK" verify "$BUNDLE" --policy "$OUT/other-policy.yaml"; then echo "wrong key ACCEPTED" >&2; exit 1; fi
  echo "(refused, as it must be)" >&2
fi

cat > "$OUT/pod.yaml" <<POD
apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  containers:
    - name: app
      command: [/bin/jek-sample-app]
      args: [--exit-code, "0"]
POD
say "predicting the PCR values of the boot (offline, no TPM)"
timed predict "$JEK" predict "$BUNDLE" --policy "$OUT/policy.yaml" --pod "$OUT/pod.yaml" --json > "$OUT/predicted.json"
# KVM boots Linux to userspace only with hardware virtualization (vmx/svm); without it the
# loader is QEMU's pre-boot hook (TCG), with the same verification and measurement.
if grep -qwE 'vmx|svm' /proc/cpuinfo; then VMM=kvm; WHY="this CPU has hardware virtualization"; else VMM=qemu; WHY="no VT-x/AMD-V here, so KVM cannot run a Linux guest to userspace; QEMU (TCG) with jek as its pre-boot hook"; fi
RUN="$OUT/run-$(date +%s)"
say "booting the pod: verify -> measure into a fresh swtpm -> boot ($VMM: $WHY)"
timed boot "$JEK" boot "$BUNDLE" --policy "$OUT/policy.yaml" --pod "$OUT/pod.yaml" --vmm "$VMM" --run-dir "$RUN" \
  --keep-tpm --tpm-ca .jek/tpm-ca
python3 - "$OUT/predicted.json" "$RUN/pod.json" <<'PY'
import json, sys
pred, rec = (json.load(open(p)) for p in sys.argv[1:3])
if pred["pcrs"] != rec["pcrs"]:
    sys.exit("PCRs after boot differ from the prediction")
print("  PCRs after boot equal `jek predict`:")
for k in sorted(rec["pcrs"], key=int):
    print(f"    PCR {int(k):>2}  {rec['pcrs'][k]}")
PY

say "attesting the pod: EK certificate -> credential activation -> fresh quote -> appraisal against the bundle"
stop_tpm() { "$JEK" tpm stop "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tpm"]["registration"])' "$RUN/pod.json")" >/dev/null 2>&1 || true; }
trap stop_tpm EXIT
timed attest "$JEK" attest "$RUN" --bundle "$BUNDLE" --policy "$OUT/policy.yaml" --pod "$OUT/pod.yaml" --export "$RUN/evidence"
"$JEK" attest "$RUN" --bundle "$BUNDLE" --policy "$OUT/policy.yaml" --pod "$OUT/pod.yaml" --json > "$RUN/attestation.json"
ATTEST_STATUS=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]["result"]; print(next(iter(r["submods"].values()))["ear.status"])' "$RUN/attestation.json")

say "the attestation service: jek-agent on this host, jek-attestation-verifier (SQLite) quoting the pod every 2 s and signing each result"
SVC="$OUT/service"
mkdir -p "$SVC"
POD_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tpm"]["registration"])' "$RUN/pod.json")
# Starts a server in the background on ENDPOINT (port 0: a free one); its first line is
# its URL.
listen() { # NAME ENDPOINT LOG PROGRAM ARGS...
  local name=$1 endpoint=$2 log=$3 prog=$4; shift 4
  "$prog" --listen "$endpoint" "$@" > "$SVC/$name.url" 2> "$log" &
  eval "${name^^}_PID=$!"
  for _ in $(seq 100); do [ -s "$SVC/$name.url" ] && break; sleep 0.1; done
}
stop_service() { kill "${AGENT_PID:-}" "${VERIFIER_PID:-}" 2>/dev/null || true; stop_tpm; }
trap stop_service EXIT
# Clients authenticate: an admin token registers the pod, a reader's token reads results.
rm -f "$SVC/tokens"
target/release/jek-attestation-verifier add-token --tokens "$SVC/tokens" --role admin ci-admin > "$SVC/admin.token"
target/release/jek-attestation-verifier add-token --tokens "$SVC/tokens" --role reader ci-reader > "$SVC/reader.token"
chmod 600 "$SVC/admin.token" "$SVC/reader.token"
# The agent serves the verifier alone: on a Unix socket only this user may use.
listen agent "unix:$PWD/$SVC/agent.sock" "$SVC/agent.log" target/release/jek-agent
listen verifier 127.0.0.1:0 "$SVC/verifier.log" target/release/jek-attestation-verifier --policy "$OUT/policy.yaml" --bundle "$BUNDLE" \
  --store "$SVC/verifier.db" --result-key "$SVC/result-key.pem" --tokens "$SVC/tokens"
AGENT_URL=$(awk '{print $NF; exit}' "$SVC/agent.url")
VERIFIER_URL=$(awk '{print $NF; exit}' "$SVC/verifier.url")
timed service python3 ci/service_register.py "$VERIFIER_URL" "$AGENT_URL" "$POD_ID" "$BUNDLE" "$OUT/pod.yaml" "$SVC/result.jwt" "$SVC/admin.token"
"$JEK" attest --verifier "$VERIFIER_URL" "$POD_ID" --token-file "$SVC/reader.token"
"$JEK" result verify "$SVC/result.jwt" --jwks "$VERIFIER_URL/v1/jwks"

say "a container image: busybox (Debian's busybox-static, two layers) pushed to a local registry"
IMG="$OUT/image"; rm -rf "$IMG"; mkdir -p "$IMG"
target/release/examples/busybox-layout "$IMG/layout" >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' "$PWD/$IMG/registry" "$PORT" > "$IMG/registry.yml"
docker-registry serve "$IMG/registry.yml" >/dev/null 2>&1 & REGISTRY_PID=$!
stop_all() { stop_service; [ -n "${IMG_RUN:-}" ] && "$JEK" tpm stop "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tpm"]["registration"])' "$IMG_RUN/pod.json" 2>/dev/null)" >/dev/null 2>&1; kill "$REGISTRY_PID" 2>/dev/null || true; }
trap stop_all EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
REF="127.0.0.1:$PORT/jek/busybox:jek-test"
skopeo copy -q --dest-tls-verify=false "oci:$IMG/layout:jek-test" "docker://$REF"
DIGEST=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REF")
{ cat "$OUT/policy.yaml"; printf '# Container images: this repository only, pinned to the pushed digest.\nimages:\n  allow:\n    - repository: 127.0.0.1:%s/jek/busybox\n      digests: [%s]\n' "$PORT" "$DIGEST"; } > "$IMG/policy.yaml"
sed -i 's#\.\./\.\./\.jek#../../../.jek#g' "$IMG/policy.yaml"
cat > "$IMG/pod.yaml" <<POD
apiVersion: v1
kind: Pod
metadata:
  name: busybox
spec:
  containers:
    - name: shell
      image: $REF
      args: ['echo "hello from \$(hostname) as \$(id -un) in \$(pwd)"; cat /etc/motd']
POD
IMG_RUN="$IMG/run-$(date +%s)"
say "booting a pod that runs $REF (pinned to $DIGEST)"
timed image_boot "$JEK" boot "$BUNDLE" --policy "$IMG/policy.yaml" --pod "$IMG/pod.yaml" --plain-http \
  --vmm "$VMM" --run-dir "$IMG_RUN" --keep-tpm --tpm-ca .jek/tpm-ca
grep -q '^\[shell\] hello from busybox as app in /srv' "$IMG_RUN/console.log" || { echo "the container's output is missing" >&2; exit 1; }
say "attesting it: the images claim and the image digests in the EAR"
timed image_attest "$JEK" attest "$IMG_RUN" --bundle "$BUNDLE" --policy "$IMG/policy.yaml" --pod "$IMG/pod.yaml" --plain-http --json > "$IMG_RUN/attestation.json"
IMAGE_SUMMARY=$(python3 - "$IMG_RUN/attestation.json" "$DIGEST" <<'PY'
import json, sys
sub = next(iter(json.load(open(sys.argv[1]))["results"][0]["result"]["submods"].values()))
imgs = sub.get("jek.images", [])
if sub["ear.status"] != "affirming" or [i["manifestDigest"] for i in imgs] != [sys.argv[2]]:
    sys.exit(f"the image pod did not attest with its digest: {sub['ear.status']} {imgs}")
print(f"{sub['ear.status']}, images claim {sub['jek.claims']['images']['status']}, {imgs[0]['container']} ran {imgs[0]['reference']} @ {imgs[0]['manifestDigest']}")
PY
)

say "summary"
python3 - "$RUN/pod.json" "$BUNDLE" "$VMM" <<'PY'
import hashlib, json, sys
rec = json.load(open(sys.argv[1]))
b = rec["bundle"]
print(f"  bundle           {sys.argv[2]}")
print(f"    sha256         {hashlib.sha256(open(sys.argv[2], 'rb').read()).hexdigest()}")
print(f"    manifest       sha256:{b['manifestDigest']}")
print(f"    name           {b['name']} {b['version']}, security version {b['securityVersion']}, kernel {b['kernelRelease']}")
print(f"  pod              {rec['pod']} booted with {sys.argv[3]}, exit status {rec['status']}")
print("  PCRs (sha256)    " + "\n                   ".join(f"{int(k):>2} {v}" for k, v in sorted(rec["pcrs"].items(), key=lambda kv: int(kv[0]))))
PY
printf '  artifacts        %s (bundle, provenance, SHA256SUMS, policy)\n' "$OUT"
printf '  run directory    %s (event log, console, TPM state, pod.json)\n' "$RUN"
printf '  attestation      %s (EAR result: %s; evidence for tpm2_checkquote: %s)\n' "$ATTEST_STATUS" "$RUN/attestation.json" "$RUN/evidence"
printf '  service          %s (signed result %s, fleet page %s/)\n' "$SVC" "$SVC/result.jwt" "$VERIFIER_URL"
printf '  container image  %s (run directory %s)\n' "$IMAGE_SUMMARY" "$IMG_RUN"
printf '  timings          deps %.1fs, tools %.1fs, build %.1fs, verify %.2fs, predict %.2fs, boot %.2fs, attest %.2fs, service %.2fs, image boot %.2fs, image attest %.2fs\n' "${T[deps]}" "${T[tools]}" "${T[build]}" "${T[verify]}" "${T[predict]}" "${T[boot]}" "${T[attest]}" "${T[service]}" "${T[image_boot]}" "${T[image_attest]}"
