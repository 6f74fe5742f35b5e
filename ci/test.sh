#!/usr/bin/env bash
# jek's test command (the README's second command): installs what the tests need, then
# runs formatting, lints, every test (unit, end-to-end, kernel build and boot), and a
# short fuzz smoke run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*" >&2; }

# CI builds once from a fresh clone: incremental state would only take disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

step "free disk"
ci/disk-check.sh

step "dependencies"
ci/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --locked --workspace

# Slow scenarios (tests marked #[ignore]: the second clean kernel build that proves the
# default recipe reproducible) run only when asked, to keep CI within its time budget.
if [ "${JEK_SLOW_TESTS:-0}" = 1 ]; then
  step "cargo test: slow scenarios (JEK_SLOW_TESTS=1)"
  cargo test --locked --workspace -- --ignored
fi

step "the README tour, as written"
ci/tour.sh > target/tour.log 2>&1 || { tail -40 target/tour.log >&2; exit 1; }

if [ "${JEK_SKIP_FUZZ:-0}" != 1 ]; then
  FUZZ_SECONDS="${JEK_FUZZ_SECONDS:-4}"
  for target in bundle kernel_image cpio kconfig eventlog tpm2 console \
    policy_yaml pod_yaml oci_manifest sigstore_bundle tpm_framing evidence \
    image_manifest image_layer registry_auth signed_result; do
    step "fuzz smoke: $target (${FUZZ_SECONDS}s)"
    mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
    cargo +nightly fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 2>&1 | tail -n 12
  done
fi

step "all checks passed"
