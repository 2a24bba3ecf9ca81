#!/usr/bin/env bash
# Runs every fuzz target for a fixed number of executions from a fixed seed, starting from
# its committed corpus (read only: new inputs go to a scratch directory), so that CI is
# repeatable. A crash fails the run; libFuzzer saves the input under artifacts/<target>/ and
# this script prints where. Installs cargo-fuzz if it is missing.
#
# Env: WEFT_FUZZ_RUNS_SCALE (1: the runs below, about 15 s a target on this machine's 2
# cores), WEFT_FUZZ_SEED (1).
set -euo pipefail
cd "$(dirname "$0")"

SCALE=${WEFT_FUZZ_RUNS_SCALE:-1}
SEED=${WEFT_FUZZ_SEED:-1}
[[ $SEED =~ ^[0-9]+$ ]] || { echo "fuzz/ci.sh: WEFT_FUZZ_SEED must be a number" >&2; exit 2; }
awk -v s="$SCALE" 'BEGIN { exit !(s + 0 > 0) }' || { echo "fuzz/ci.sh: WEFT_FUZZ_RUNS_SCALE must be > 0" >&2; exit 2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

# target -> executions (about 15 s each without a sanitizer, measured on 2 cores).
declare -A RUNS=(
    [frame_decoder]=750000
    [session_message]=850000
    [mesh_message]=900000
    [table_message]=650000
    [chord_message]=800000
    [replica_message]=500000
    [run_message]=450000
    [drop_message]=700000
    [p2pt_frame]=120000
    [p2pt_node]=30000
    [noise_link]=6000
    [node]=4000
    [node_small_limits]=6000
)

# weft's crates forbid unsafe code: no sanitizer (3-10 times faster; panics are what it finds).
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in frame_decoder session_message mesh_message table_message chord_message \
    replica_message run_message drop_message p2pt_frame p2pt_node noise_link node node_small_limits; do
    runs=$(awk -v r="${RUNS[$target]}" -v s="$SCALE" 'BEGIN { printf "%d", r * s }')
    mkdir -p "$scratch/$target" "artifacts/$target"
    echo "== fuzz $target: -seed=$SEED -runs=$runs"
    start=$SECONDS
    if cargo fuzz run -s none "$target" "$scratch/$target" "corpus/$target" -- \
        -seed="$SEED" -runs="$runs" -print_final_stats=1 >"$scratch/$target.log" 2>&1; then
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$scratch/$target.log" | grep -o '[0-9]*$' || echo '?')
        echo "   ok: $execs executions in $((SECONDS - start)) s"
    else
        tail -n 40 "$scratch/$target.log"
        echo "   FAILED: the reproducing input is in fuzz/artifacts/$target/:"
        ls -1 "artifacts/$target" || true
        failed+=("$target")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz targets failed: ${failed[*]}"
    exit 1
fi
