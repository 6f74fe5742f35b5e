#!/usr/bin/env bash
# Builds the default recipe's kernel into the tests' kernel cache (target/jek-test-cache),
# exactly as the tests ask for it (tests/common/mod.rs `build`: the test key, the cache,
# SOURCE_DATE_EPOCH=1700000000), so that every test binary and the tour find it there.
# A second run is a checked cache hit. Needs target/debug/jek and the guest binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=target/jek-test-cache
mkdir -p "$cache"
jek=target/debug/jek
if [ ! -f "$cache/test.key" ] || [ ! -f "$cache/test.pub" ]; then
  "$jek" keygen --force --out "$cache/test" >/dev/null
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
SOURCE_DATE_EPOCH=1700000000 "$jek" build recipes/default.yaml --key "$cache/test.key" \
  --cache-dir "$cache" --out-dir "$out" --no-progress --json > "$out/build.json"
python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print("test-kernel: cache key", j["cacheKey"], "(hit)" if j.get("kernelCached") else "")' "$out/build.json" >&2
