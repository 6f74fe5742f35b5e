#!/usr/bin/env bash
# Runs the README's five-minute tour as written: the first ```sh block after the
# "## Five-minute tour" heading, with bash -e and aliases on, from the repository root.
# The tour's state (kept TPMs, registrations, the image cache) goes into a temporary
# XDG_DATA_HOME, XDG_CACHE_HOME and XDG_STATE_HOME; the kernel cache is the tests' own
# (target/jek-test-cache, SOURCE_DATE_EPOCH=1700000000), so CI compiles no second kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
export XDG_DATA_HOME="$work/data" XDG_CACHE_HOME="$work/cache" XDG_STATE_HOME="$work/state"
# The tour's own `cd "$(mktemp -d)"` (and every temporary directory of the programs it runs)
# lands in here too, so nothing of the tour outlives it.
export TMPDIR="$work/tmp"
mkdir -p "$XDG_CACHE_HOME" "$TMPDIR" target/jek-test-cache
ln -s "$PWD/target/jek-test-cache" "$XDG_CACHE_HOME/jek"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"
script="$work/tour.sh"
awk '/^## Five-minute tour/ {t=1} t && /^```sh$/ {on=1; next} on && /^```$/ {exit} on {print}' README.md > "$script"
if [ "$(wc -l < "$script")" -lt 20 ]; then
  echo "tour.sh: the tour block was not found in README.md" >&2
  exit 2
fi
cleanup() {
  [ -x target/debug/jek ] && target/debug/jek tpm stop --all >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
echo "==> running the README tour ($(wc -l < "$script") lines)" >&2
bash -euo pipefail -O expand_aliases "$script"
echo "==> the README tour ran as written" >&2
