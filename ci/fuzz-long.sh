#!/usr/bin/env bash
# Fuzzing at scale (not part of CI, which runs a 4-second smoke per target on its seeds and corpus): every fuzz
# target runs until JEK_FUZZ_RUNS executions (default 10 million) or JEK_FUZZ_SECONDS
# seconds (default 1800), whichever comes first, on its seeds and its growing corpus.
# The figures (executions, coverage, corpus, peak RSS, crashes) are printed and written
# into docs/benchmarks.md between the "fuzz-long" markers. A crash stops nothing: its input
# is in fuzz/artifacts/<target>/, to be fixed and kept as a seed in fuzz/seeds/<target>/.
#
#   ci/fuzz-long.sh [TARGET...]     (naming targets prints their rows, writes no docs)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${JEK_FUZZ_RUNS:-10000000}"
SECONDS_PER="${JEK_FUZZ_SECONDS:-1800}"
targets=("$@")
all=$(( $# == 0 ))
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^jek-fuzz$')
fi
cargo +nightly fuzz build --fuzz-dir fuzz >/dev/null
rows=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/artifacts/$t"
  log=$(mktemp)
  start=$(date +%s)
  set +e
  # The binary built above, run directly: no rebuild inside the timed run.
  "fuzz/target/x86_64-unknown-linux-gnu/release/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
    -runs="$RUNS" -max_total_time="$SECONDS_PER" -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
  status=ok; [ "$rc" -eq 0 ] || status="exit $rc"
  row="| \`$t\` | ${execs:-?} | ${secs} s | ${cov:-?} | ${ft:-?} | ${corp:-?} | ${rss:-?} MB | ${crashes} | ${status} |"
  echo "$row"
  rows+=("$row")
  rm -f "$log"
done

if ((!all)); then
  echo "fuzz-long: a subset of the targets ran; docs/benchmarks.md is written only by a run of all of them" >&2
  exit 0
fi
doc=docs/benchmarks.md
table=$(
  echo "<!-- fuzz-long: begin (written by ci/fuzz-long.sh; $(date -u +%Y-%m-%d), limit ${RUNS} executions or ${SECONDS_PER} s per target, $(nproc) cores) -->"
  echo "| target | executions | time | coverage (edges) | features | corpus | peak RSS | crashes | result |"
  echo "|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo "<!-- fuzz-long: end -->"
)
tmp=$(mktemp)
if grep -q '<!-- fuzz-long: begin' "$doc"; then
  awk -v table="$table" '
    /<!-- fuzz-long: begin/ { print table; skip = 1; next }
    /<!-- fuzz-long: end -->/ { skip = 0; next }
    !skip { print }' "$doc" >"$tmp"
else
  { cat "$doc"; printf '\n## Fuzzing at scale\n\n%s\n' "$table"; } >"$tmp"
fi
mv "$tmp" "$doc"
echo "fuzz-long: figures written to $doc" >&2
