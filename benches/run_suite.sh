#!/usr/bin/env bash
# Runs weft's benchmark suite (issue 19) and rewrites the table between `<!-- suite:begin -->`
# and `<!-- suite:end -->` in BENCHMARKS.md from criterion's results of this run.
#
#   bash benches/run_suite.sh                      # the whole suite, criterion's own timings
#   WEFT_SUITE_QUICK=1 bash benches/run_suite.sh   # 1 s warm-up, 2 s measurement per bench
#   WEFT_SUITE_BENCHES="codec relay" bash ...      # only these (the table then holds only them)
#   WEFT_SUITE_NOTE="..." bash ...                 # a line about the run (e.g. shared cores)
#
# The relay bench (the engine alone, one thread) runs pinned to one core with taskset when
# the machine has more than one. Figures are medians of criterion's samples.
set -euo pipefail

cd "$(dirname "$0")/.."
ALL="codec relay chord mesh loopback blocks replicate run_output drops"
BENCHES="${WEFT_SUITE_BENCHES:-$ALL}"
ARGS=(--noplot)
if [[ "${WEFT_SUITE_QUICK:-0}" != 0 ]]; then
    ARGS+=(--warm-up-time 1 --measurement-time 2)
fi

for b in $BENCHES; do
    case " $ALL " in *" $b "*) ;; *) echo "run_suite.sh: unknown bench $b (known: $ALL)" >&2; exit 2 ;; esac
done

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
STARTED="$(date +%s)"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
cargo bench -p weft-benches --no-run $(for b in $BENCHES; do echo --bench "$b"; done) >/dev/null

for b in $BENCHES; do
    echo "== $b" >&2
    PIN=()
    if [[ "$b" == relay ]] && command -v taskset >/dev/null && [[ "$(nproc)" -gt 1 ]]; then
        PIN=(taskset -c 1)
    fi
    WEFT_BENCH_PAIRED_OUT="$TARGET_DIR/criterion/relay_paired.json" \
        "${PIN[@]}" cargo bench -p weft-benches --bench "$b" -- "${ARGS[@]}" >&2
done

ENDED="$(date +%s)"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
HEADER="$(mktemp)"
trap 'rm -f "$HEADER"' EXIT
{
    echo ""
    echo "Written by \`bash benches/run_suite.sh\`$([[ "${WEFT_SUITE_QUICK:-0}" != 0 ]] && echo ' (WEFT_SUITE_QUICK=1: 1 s warm-up, 2 s measurement)') on $(date -u +%Y-%m-%d),"
    echo "weft $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!BENCHMARKS.md' || echo ' (+ local changes)'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), Linux $(uname -r);"
    echo "the suite took $(( (ENDED - STARTED) / 60 )) min $(( (ENDED - STARTED) % 60 )) s; load average $LOAD_BEFORE before, $LOAD_AFTER after."
    if [[ -n "${WEFT_SUITE_NOTE:-}" ]]; then
        echo "$WEFT_SUITE_NOTE"
    fi
    echo ""
    echo "Figures are criterion's median per iteration, as throughput; \"limit beside it\" is the bench of the"
    echo "same group the figure is read against (raw postcard, ed25519 verification alone, a binary search,"
    echo "the flood with no engine, raw TCP, raw blake3), and ratio is figure / limit."
} >"$HEADER"
python3 benches/suite_table.py "$TARGET_DIR/criterion" BENCHMARKS.md "$STARTED" "$HEADER" $BENCHES
