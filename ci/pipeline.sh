#!/usr/bin/env bash
# The kernel-artifact pipeline a CI system runs: install build dependencies, build the
# recipe (policy-checked), sign, verify the result under a policy that trusts the signing
# key, and leave bundle, provenance and checksums in an output directory.
#
#   ci/pipeline.sh [RECIPE] [OUT_DIR]
#
# The signing key comes from JEK_SIGNING_KEY (PKCS#8 PEM text, e.g. a CI secret; never
# printed) or from the file named by JEK_SIGNING_KEY_FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE="${1:-recipes/default.yaml}"
OUT="${2:-out/pipeline}"
# The time of the last commit that changed the kernel inputs: rebuilding that commit
# reproduces the bundle, and unrelated commits keep the kernel cache warm.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct -- kernel-config recipes 2>/dev/null || true)}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"

ci/install-deps.sh
cargo build ${CI:+--locked} --release -q -p jek
ci/build-guest.sh
JEK=target/release/jek

key_args=()
if [ -n "${JEK_SIGNING_KEY:-}" ]; then
  key_args=(--key-env JEK_SIGNING_KEY)
elif [ -n "${JEK_SIGNING_KEY_FILE:-}" ]; then
  key_args=(--key "$JEK_SIGNING_KEY_FILE")
else
  echo "pipeline: set JEK_SIGNING_KEY (PEM) or JEK_SIGNING_KEY_FILE" >&2
  exit 2
fi

# A kernel cache restored from CI storage is not trusted to sign from: whoever could write
# it could plant a kernel (jek checks each entry's config against the policy and its
# outputs against the digests recorded at build time, but a planted entry can carry a
# matching record). With JEK_CACHE_RESTORED=true (the workflow sets it on a cache hit) the
# kernel is rebuilt from source and compared with the cached one, and any difference stops
# the pipeline with nothing left to publish.
build_args=()
[ "${JEK_CACHE_RESTORED:-false}" = true ] && build_args+=(--check-reproducible)
mkdir -p "$OUT"
if ! "$JEK" build "$RECIPE" "${key_args[@]}" --out-dir "$OUT" "${build_args[@]}"; then
  rm -rf "$OUT"
  echo "pipeline: build failed; nothing to publish" >&2
  exit 1
fi

# Verify what we are about to publish, under a policy that trusts exactly our key.
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if [ -n "${JEK_SIGNING_KEY:-}" ]; then
  printf '%s\n' "$JEK_SIGNING_KEY" | openssl pkey -pubout -out "$work/signer.pub" 2>/dev/null
else
  openssl pkey -in "$JEK_SIGNING_KEY_FILE" -pubout -out "$work/signer.pub"
fi
sv=$(sed -n 's/^security_version: *//p' "$RECIPE")
printf 'trusted_keys: [signer.pub]\nmin_security_version: %s\n' "${sv:-0}" > "$work/policy.yaml"
bundle=$(ls "$OUT"/*.jek)
"$JEK" verify "$bundle" --policy "$work/policy.yaml"
(cd "$OUT" && sha256sum -c SHA256SUMS)

# Optional cosign signature (JEK_COSIGN_KEY_FILE, password in COSIGN_PASSWORD): a detached
# signature over the final bundle file, which `cosign verify-blob --key` accepts. A keyless
# Sigstore bundle made by the CI's own cosign (`cosign sign-blob --bundle
# BUNDLE.sigstore.json`) next to the bundle is published the same way.
if [ -n "${JEK_COSIGN_KEY_FILE:-}" ]; then
  "$JEK" sign "$bundle" --cosign-key "$JEK_COSIGN_KEY_FILE"
fi

# Publish: JEK_PUBLISH_REF=registry/repository:tag pushes the bundle, its signatures and
# its provenance (as referrers). JEK_PUBLISH_PLAIN_HTTP=1 for a registry on localhost.
if [ -n "${JEK_PUBLISH_REF:-}" ]; then
  push_args=()
  prov=$(ls "$OUT"/*.provenance.json 2>/dev/null | head -1 || true)
  [ -n "$prov" ] && push_args+=(--provenance "$prov")
  [ "${JEK_PUBLISH_PLAIN_HTTP:-0}" = 1 ] && push_args+=(--plain-http)
  "$JEK" push "$bundle" "$JEK_PUBLISH_REF" "${push_args[@]}"
fi
echo "pipeline: artifacts in $OUT" >&2
