#!/usr/bin/env bash
# jek's test command (the README's second command): installs what the tests need, then
# runs formatting, lints, every test (unit, end-to-end, kernel build and boot), the README
# tour, and a short fuzz smoke run of every fuzz target. At the end, passing or failing, it
# prints one line per phase with its wall time (also written to target/ci-phases.txt).
#
# Compiled once: clippy runs as the workspace's compiler wrapper during the test build
# (what `cargo clippy` itself does, but with code generation), so the workspace is not
# compiled a second time for the lints; test binaries are built once (`--no-run`) and run
# one by one from cargo's list; the fuzz targets are built in one `cargo fuzz build`.
#
#   JEK_SLOW_TESTS=1  also the slow scenarios (#[ignore]: the second clean kernel build)
#   JEK_SKIP_FUZZ=1   no fuzz build and smoke run;  JEK_FUZZ_SECONDS=N  seconds per target
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# CI builds once from a fresh clone: incremental state would only take disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

mkdir -p target
PHASES=()
RUN_START=$(date +%s%N)
CURRENT=""

secs_since() { # START_NS
  local ns=$(($(date +%s%N) - $1))
  printf '%d.%d' $((ns / 1000000000)) $((ns % 1000000000 / 100000000))
}

print_phases() {
  local rc=$?
  if [ -n "${FUZZ_PID:-}" ]; then kill -- "-$FUZZ_PID" 2>/dev/null || true; fi
  if [ -n "$CURRENT" ]; then PHASES+=("$(printf '%-44s %8s s  FAILED' "$CURRENT" "$(secs_since "$PHASE_START")")"); fi
  {
    printf '\n==> phases (wall time)\n'
    printf '%s\n' "${PHASES[@]}"
    printf '%-44s %8s s  %s\n' "total" "$(secs_since "$RUN_START")" "$([ "$rc" = 0 ] && echo passed || echo "FAILED (exit $rc)")"
  } | tee target/ci-phases.txt >&2
}
trap print_phases EXIT

# phase NAME COMMAND...: runs COMMAND as one timed phase; a failure ends the run.
phase() {
  CURRENT="$1"
  shift
  printf '\n==> %s\n' "$CURRENT" >&2
  PHASE_START=$(date +%s%N)
  "$@"
  PHASES+=("$(printf '%-44s %8s s' "$CURRENT" "$(secs_since "$PHASE_START")")")
  CURRENT=""
}

phase "disk check" ci/disk-check.sh
phase "dependencies" ci/install-deps.sh
phase "cargo fmt --check" cargo fmt --all -- --check

# Clippy as the workspace wrapper (as `cargo clippy` sets it up) while the tests compile:
# dependencies are compiled once, workspace crates once, with the lints denied. Everything
# that builds workspace crates later in this run (the tour's `cargo build`, the guest
# build) sees the same wrapper, so nothing is rebuilt for want of it.
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
# SOURCE_DATE_EPOCH as the tour sets it (ci/tour.sh): the build scripts of aws-lc-sys and
# libsqlite3-sys rerun when it changes, which made the tour's `cargo build` recompile them
# and the 40-odd crates above them.
TOUR_EPOCH=1700000000
export SOURCE_DATE_EPOCH=$TOUR_EPOCH
phase "build tests + clippy -D warnings" \
  cargo test --locked --workspace --all-targets --no-run --message-format=json-render-diagnostics \
  > target/ci-test-artifacts.json
# The test binaries and the guest build run with the environment a user has.
unset SOURCE_DATE_EPOCH


# Each test binary that cargo built in test mode, with the package directory it runs in
# (as `cargo test` runs it): "package<TAB>kind:name<TAB>directory<TAB>executable".
python3 - > target/ci-test-binaries.tsv <<'EOF'
import json, os
seen = set()
for line in open("target/ci-test-artifacts.json"):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m["profile"]["test"] or not m.get("executable"):
        continue
    kind = m["target"]["kind"][0]
    if kind not in ("lib", "bin", "test", "proc-macro"):
        continue
    exe = m["executable"]
    if exe in seen:
        continue
    seen.add(exe)
    manifest_dir = os.path.dirname(m["manifest_path"])
    print("\t".join([os.path.basename(manifest_dir), f"{kind}:{m['target']['name']}", manifest_dir, exe]))
EOF

# The guest binaries and the default kernel, once for every test binary and the tour: the
# tests take them from the same cache (target/jek-test-cache, locked per key), checked on
# every hit.
phase "guest binaries (static, release)" ci/build-guest.sh
phase "default kernel (target/jek-test-cache)" ci/test-kernel.sh

# The fuzz targets build in the background from here, while the test binaries run, at the
# lowest CPU priority (nice 19): the tests leave most of one core idle (a TCG guest runs
# on one core, and the service tests wait on timers), and the fuzz build takes that. Not
# earlier: beside the kernel build, which keeps both cores busy, it cost the kernel more
# time than it saved (a measured run: kernel 666 s instead of about 530, tests/README.md). The fuzz
# crate is its own workspace with its own target directory, built by nightly, without the
# clippy wrapper. Built without AddressSanitizer (the fuzzed parsers are safe Rust; jek's
# one unsafe crate, the KVM backend, is not fuzzed), unoptimized with debug assertions and
# no debug info (`--dev`): the ~365 crates compile in 201 s where opt-level 1 took 335 s
# (the same hour, tests/README.md), and each target still runs hundreds to tens of
# thousands of inputs a second. A campaign (`cargo +nightly fuzz run TARGET`) keeps
# cargo-fuzz's defaults: ASan, opt-level 3.
FUZZ_PID=""
if [ "${JEK_SKIP_FUZZ:-0}" != 1 ]; then
  rm -f target/fuzz-build.done
  # A process group of its own (setsid), so that a run that stops early stops it whole.
  # setsid also starts a new session, which Linux's scheduler autogroups put in a group of
  # its own that competes with the tests' group as an equal whatever its processes' nice
  # value: the group itself is niced too (/proc/self/autogroup), or "nice 19" gives the
  # fuzz build a whole core beside a TCG boot.
  env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS CARGO_PROFILE_DEV_DEBUG=0 \
    setsid -w nice -n 19 bash -c '
      if [ -w /proc/self/autogroup ]; then echo 19 > /proc/self/autogroup; fi
      start=$(date +%s%N); rc=0
      cargo +nightly fuzz build --fuzz-dir fuzz -s none --dev > target/fuzz-build.log 2>&1 || rc=$?
      echo "$rc $(($(date +%s%N) - start))" > target/fuzz-build.done' &
  FUZZ_PID=$!
fi

# No test may touch the user's own jek state: each test has a state home of its own
# (tests/common `test_home`). Checked after every test binary and the tour, naming it.
USER_STATE=("${XDG_CACHE_HOME:-$HOME/.cache}/jek" "${XDG_DATA_HOME:-$HOME/.local/share}/jek"
  "${XDG_STATE_HOME:-$HOME/.local/state}/jek" "${XDG_CONFIG_HOME:-$HOME/.config}/jek")
touch target/ci-state-marker
no_user_state() { # WHAT
  local written
  written=$(find "${USER_STATE[@]}" -newer target/ci-state-marker 2>/dev/null | head -n 20 || true)
  if [ -n "$written" ]; then
    printf '%s wrote to per-user state, which tests must never touch:\n%s\n' "$1" "$written" >&2
    return 1
  fi
}

IGNORED=()
if [ "${JEK_SLOW_TESTS:-0}" = 1 ]; then IGNORED=(--include-ignored); fi
# The list is read on fd 3 and each binary gets /dev/null as stdin: a test that reads its
# standard input must not eat the rest of the list.
while IFS=$'\t' read -r -u 3 dir target mdir exe; do
  phase "test $dir $target" bash -c 'cd "$1" && shift && exec "$@" < /dev/null' _ "$mdir" "$exe" "${IGNORED[@]}"
  no_user_state "test binary $dir $target"
  RAN=$((${RAN:-0} + 1))
done 3< target/ci-test-binaries.tsv
if [ "${RAN:-0}" -ne "$(wc -l < target/ci-test-binaries.tsv)" ]; then
  echo "ran ${RAN:-0} test binaries of the $(wc -l < target/ci-test-binaries.tsv) cargo built" >&2
  exit 1
fi
phase "doc tests" env SOURCE_DATE_EPOCH=$TOUR_EPOCH cargo test --locked --workspace --doc

phase "README tour" bash -c 'ci/tour.sh > target/tour.log 2>&1 || { tail -40 target/tour.log >&2; exit 1; }'
no_user_state "the README tour"

if [ "${JEK_SKIP_FUZZ:-0}" != 1 ]; then
  FUZZ_SECONDS="${JEK_FUZZ_SECONDS:-4}"
  # A smoke run, not a campaign: every target built and run on its seeds and on new inputs.
  # The background build started after the compile: wait for it here (this phase is the
  # wait; its own wall time is the line after).
  fuzz_wait() {
    wait "$FUZZ_PID" || true
    FUZZ_PID=""
    if [ ! -f target/fuzz-build.done ]; then
      echo "the background fuzz build ended without a result" >&2
      return 1
    fi
    read -r rc ns < target/fuzz-build.done
    PHASES+=("$(printf '%-44s %8s s  (in the background, nice 19)' "fuzz build (every target, one build)" \
      "$((ns / 1000000000)).$((ns % 1000000000 / 100000000))")")
    if [ "$rc" != 0 ]; then
      tail -n 40 target/fuzz-build.log >&2
      return "$rc"
    fi
  }
  phase "fuzz build: waiting for the background build" fuzz_wait
  FUZZ_BIN=fuzz/target/x86_64-unknown-linux-gnu/debug
  targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^jek-fuzz$')
  # Each target runs on one core: two lanes at once, each target's output kept in its own
  # log and printed in order afterwards; a target that fails (a crash, a leak, a timeout)
  # fails the phase, naming it.
  smoke_one() { # TARGET
    mkdir -p "fuzz/corpus/$1" "fuzz/seeds/$1"
    "$FUZZ_BIN/$1" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 \
      "fuzz/corpus/$1" "fuzz/seeds/$1" > "target/fuzz-smoke/$1.log" 2>&1
  }
  smoke() {
    local target lane failed=()
    rm -rf target/fuzz-smoke && mkdir -p target/fuzz-smoke
    for lane in 0 1; do
      (
        i=0
        for target in $targets; do
          if [ $((i % 2)) = "$lane" ]; then
            smoke_one "$target" || echo "$target" >> "target/fuzz-smoke/failed"
          fi
          i=$((i + 1))
        done
      ) &
    done
    wait
    for target in $targets; do
      printf -- '--- %s (%ss)\n' "$target" "$FUZZ_SECONDS" >&2
      tail -n 12 "target/fuzz-smoke/$target.log" >&2
    done
    if [ -s target/fuzz-smoke/failed ]; then
      mapfile -t failed < target/fuzz-smoke/failed
      echo "fuzz smoke failed: ${failed[*]}" >&2
      return 1
    fi
  }
  phase "fuzz smoke ($(wc -w <<< "$targets") targets x ${FUZZ_SECONDS}s, two at a time)" smoke
fi

printf '\n==> all checks passed\n' >&2
