#!/bin/bash
# weft against weft: copies of a folder of many small files (2,000 of 1–64 KiB, 20 folders,
# about 64 MiB, built once from /dev/urandom), alternating two weft binaries, one `create`
# and one `join` on 127.0.0.1 each, the page cache dropped before each copy when it can be.
# Prints one line per copy: the binary's label and the milliseconds from the join's start
# until every file is in place and the destination's .weft/tmp is empty.
# Usage: WEFT_A=/path/to/weft WEFT_B=/path/to/other/weft benches/folders/weft_ab.sh
# Env: WEFT_AB_DIR (scratch, default /tmp/weft-ab), WEFT_AB_RUNS (copies of each, 5).
set -u
A=${WEFT_A:?set WEFT_A to the first weft binary}
B=${WEFT_B:?set WEFT_B to the second weft binary}
DIR=${WEFT_AB_DIR:-/tmp/weft-ab}
RUNS=${WEFT_AB_RUNS:-5}
DATA=$DIR/src
if [[ ! -d $DATA ]]; then
    mkdir -p "$DATA"
    for i in $(seq 0 1999); do
        d=$DATA/d$((i % 20))
        mkdir -p "$d"
        head -c $((((i * 7919 % 64) + 1) * 1024)) /dev/urandom >"$d/f$i.bin"
    done
fi
COUNT=$(find "$DATA" -type f -not -path '*/.weft/*' | wc -l)
copy() { # binary label port
    local bin=$1 label=$2 p1=$3 w=$DIR/run
    rm -rf "$w" "$DATA/.weft"
    mkdir -p "$w"
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
    "$bin" create --name ab --state "$w/s1" --dir "$DATA" --listen "127.0.0.1:$p1" >"$w/c.log" 2>&1 &
    local c=$!
    for _ in $(seq 1 400); do "$bin" stats --name ab --state "$w/s1" >/dev/null 2>&1 && break; sleep 0.05; done
    local t0=${EPOCHREALTIME/[.,]/}
    "$bin" join --name ab --state "$w/s2" --dir "$w/dst" --peer "127.0.0.1:$p1" \
        --listen "127.0.0.1:$((p1 + 1))" >"$w/j.log" 2>&1 &
    local j=$!
    while true; do
        local n
        n=$(find "$w/dst" -type f -not -path '*/.weft/*' 2>/dev/null | wc -l)
        if ((n >= COUNT)) && [[ -z $(ls -A "$w/dst/.weft/tmp" 2>/dev/null) ]]; then break; fi
        sleep 0.02
    done
    local t1=${EPOCHREALTIME/[.,]/}
    kill "$c" "$j"
    wait "$c" "$j" 2>/dev/null
    echo "$label $(((t1 - t0) / 1000)) ms"
}
for r in $(seq 1 "$RUNS"); do
    copy "$A" A $((47000 + 4 * r))
    copy "$B" B $((47002 + 4 * r))
done
