#!/usr/bin/env bash
# Fails at once, naming the shortfall, when the disk under the work tree cannot hold a full
# test run. Measured on a fresh clone (2026-12-02): target/ 2.4 GB and fuzz/target 2.4 GB at
# the end, plus a kernel build's source and object trees (about 2.5 GB, removed when each
# build ends), so about 7.5 GB at the peak; 10 GB leaves room for the package installs.
# JEK_MIN_FREE_GB overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
need_gb="${JEK_MIN_FREE_GB:-10}"
check() { # DIR
  local dir="$1" avail_kb
  mkdir -p "$dir"
  avail_kb=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
  printf 'disk-check: %s has %d GiB free\n' "$dir" $((avail_kb / 1048576)) >&2
  if ((avail_kb < need_gb * 1048576)); then
    printf 'disk-check: %s has %d MiB free; a full test run needs about %d GiB (target/, fuzz/target, the kernel work tree under %s)\n' \
      "$dir" $((avail_kb / 1024)) "$need_gb" "${XDG_CACHE_HOME:-$HOME/.cache}/jek" >&2
    exit 3
  fi
}
check target
check "${XDG_CACHE_HOME:-$HOME/.cache}"
