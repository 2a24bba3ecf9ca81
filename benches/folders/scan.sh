#!/usr/bin/env bash
# Scan times side by side (issue 18): weft's folder scanner against Syncthing's, on one tree
# of many small random files, first (everything hashed) and again after a restart with
# nothing changed. Prints a Markdown table (for BENCHMARKS.md, "## Folder scans").
#
# Env: WEFT_BENCH_DIR (scratch, default /tmp/weft-folders-bench), WEFT_SCAN_FILES (100000),
# WEFT_BENCH_PORT (first port tried, 47500), WEFT_BIN (use this binary, skip the build).
# Syncthing comes from the system's packages (apt-get install syncthing); without it, its
# rows say so.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BENCH=${WEFT_BENCH_DIR:-/tmp/weft-folders-bench}
FILES=${WEFT_SCAN_FILES:-100000}
NEXT_PORT=${WEFT_BENCH_PORT:-47500}

say() { printf '%s\n' "$*" >&2; }
die() { say "scan: $*"; exit 1; }
[[ $FILES =~ ^[1-9][0-9]*$ ]] || die "WEFT_SCAN_FILES must be a positive integer (got $FILES)"
[[ $NEXT_PORT =~ ^[1-9][0-9]*$ ]] || die "WEFT_BENCH_PORT must be a port number (got $NEXT_PORT)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed"

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=common.sh
. "$HERE/common.sh"
stop_pid() {
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
# Runs CMD every 20 ms until it succeeds, at most 600 s.
wait_for() {
    local i
    for ((i = 0; i < 30000; i++)); do "$@" && return 0; sleep 0.02; done
    return 1
}

# The tree: FILES files of 1-3 KiB from /dev/urandom, 100 to a folder.
mkdir -p "$BENCH"
TREE=$BENCH/scan-tree
SHAPE="v1 files=$FILES seed=18"
if [[ -f $BENCH/scan-tree.shape && $(cat "$BENCH/scan-tree.shape") == "$SHAPE" ]]; then
    say "tree: reusing $TREE ($SHAPE)"
else
    say "tree: building $TREE ($SHAPE)"
    rm -rf "$TREE" "$BENCH/scan-tree.shape"
    python3 - "$TREE" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(18)
noise = os.urandom(4 << 20)
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 100))
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    size = rng.randint(1024, 3072)
    at = rng.randrange(0, len(noise) - size)
    with open(os.path.join(d, "f%06d.bin" % i), "wb") as f:
        f.write(i.to_bytes(8, "little") + noise[at:at + size - 8])
PY
    printf '%s\n' "$SHAPE" >"$BENCH/scan-tree.shape"
    # Older than the scanners' stability wait (weft's STABLE_MS is 1 s): all hashed at once.
    sleep 2
fi
BYTES=$(find "$TREE" -path "$TREE/.weft" -prune -o -path "$TREE/.stfolder" -prune -o -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }')
say "tree: $FILES files, $BYTES bytes"

if [[ -n ${WEFT_BIN:-} ]]; then
    WEFT=$WEFT_BIN
else
    (cd "$ROOT" && cargo build --release -p weft-drivers --bin weft) || die "cargo build failed"
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$ROOT/$target
    WEFT=$target/release/weft
fi
[[ -x $WEFT ]] || die "no weft binary at $WEFT"

declare -A ROW=()

# weft: `weft create` on the tree, then `weft start` after a stop. The scanner logs
# "scanned N files in X ms (H hashed, ...)" when a scan ends; the wall time is from the
# process start until that line.
W_STATE=$BENCH/scan-weft-state
weft_scanned() { grep -q "scanned $FILES files in" "$1" 2>/dev/null; }
weft_once() { # label log command...
    local label=$1 log=$2 t0 t1 pid line
    shift 2
    drop_caches
    stamp t0
    "$@" >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_for weft_scanned "$log" || { stop_pid "$pid"; die "weft: no scan line in $log"; }
    stamp t1
    # The scan cache goes to the node's store after the log line: let it land before the stop.
    sleep 3
    stop_pid "$pid"
    line=$(grep -o "scanned $FILES files in [0-9]* ms ([0-9]* hashed" "$log" | head -n 1)
    ROW[$label]="$(secs "$t0" "$t1") | $(awk '{ printf "%.3f", $5 / 1000 }' <<<"$line") | $(awk '{ gsub(/\(/, "", $7); print $7 }' <<<"$line")"
    say "  $label: ${ROW[$label]}"
}
rm -rf "$W_STATE" "$TREE/.weft"
alloc_port
say "weft"
weft_once "weft, first scan" "$BENCH/scan-weft-1.log" "$WEFT" create --name scanbench --state "$W_STATE" --dir "$TREE" --listen "127.0.0.1:$PORT"
weft_once "weft, again (nothing changed)" "$BENCH/scan-weft-2.log" "$WEFT" start --name scanbench --state "$W_STATE"
rm -rf "$W_STATE" "$TREE/.weft"

# Syncthing: one instance, the tree as its only folder (watcher off, no peers); the wall
# time is from the process start until its REST API reports the folder idle with every
# file in its database. The second run keeps its database: a rescan with nothing changed.
ST_HOME=$BENCH/scan-syncthing
ST_V=n/a
st_idle() {
    curl -fs -H "X-API-Key: $ST_KEY" "http://127.0.0.1:$ST_GUI/rest/db/status?folder=scanbench" 2>/dev/null |
        python3 -c 'import json, sys; s = json.load(sys.stdin); sys.exit(0 if s.get("state") == "idle" and s.get("localFiles") == int(sys.argv[1]) else 1)' "$FILES" 2>/dev/null
}
st_once() { # label
    local label=$1 t0 t1 pid
    drop_caches
    stamp t0
    STNORESTART=1 STNOUPGRADE=1 syncthing serve --home="$ST_HOME" --no-browser --no-restart --no-upgrade \
        >"$BENCH/scan-syncthing.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_for st_idle || { stop_pid "$pid"; die "syncthing: folder never idle (see $BENCH/scan-syncthing.log)"; }
    stamp t1
    stop_pid "$pid"
    ROW[$label]="$(secs "$t0" "$t1") | | "
    say "  $label: $(secs "$t0" "$t1") s"
}
if command -v syncthing >/dev/null 2>&1 && command -v curl >/dev/null 2>&1; then
    say "syncthing"
    ST_V=$( { syncthing --version 2>/dev/null || true; } | awk '{ print $2 }')
    rm -rf "$ST_HOME" "$TREE/.stfolder"
    syncthing generate --home="$ST_HOME" --no-default-folder --skip-port-probing >/dev/null 2>&1 || die "syncthing generate failed"
    ST_ID=$(syncthing serve --home="$ST_HOME" --device-id 2>/dev/null) || die "syncthing: no device id"
    alloc_port
    ST_LISTEN=$PORT
    alloc_port
    ST_GUI=$PORT
    ST_KEY="weftscan$$"
    python3 - "$ST_HOME/config.xml" "$ST_ID" "$ST_LISTEN" "$ST_GUI" "$ST_KEY" "$TREE" <<'PY'
import copy, sys
import xml.etree.ElementTree as ET
cfg, own, lport, gport, key, path = sys.argv[1:]
tree = ET.parse(cfg)
root = tree.getroot()
opts = root.find("options")
for name, value in [("listenAddress", "tcp://127.0.0.1:" + lport), ("globalAnnounceEnabled", "false"),
                    ("localAnnounceEnabled", "false"), ("relaysEnabled", "false"), ("natEnabled", "false"),
                    ("startBrowser", "false"), ("urAccepted", "-1"), ("autoUpgradeIntervalH", "0"),
                    ("crashReportingEnabled", "false"), ("setLowPriority", "false")]:
    e = opts.find(name)
    if e is None:
        e = ET.SubElement(opts, name)
    e.text = value
gui = root.find("gui")
gui.find("address").text = "127.0.0.1:" + gport
gui.find("apikey").text = key
folder = copy.deepcopy(root.find("defaults").find("folder"))
folder.set("id", "scanbench")
folder.set("label", "scanbench")
folder.set("path", path)
folder.set("fsWatcherEnabled", "false")
folder.set("rescanIntervalS", "3600")
for d in folder.findall("device"):
    folder.remove(d)
d = ET.Element("device", {"id": own, "introducedBy": ""})
ET.SubElement(d, "encryptionPassword")
folder.insert(0, d)
root.insert(0, folder)
tree.write(cfg)
PY
    mkdir -p "$TREE/.stfolder"
    st_once "syncthing, first scan"
    st_once "syncthing, again (nothing changed)"
    rm -rf "$ST_HOME" "$TREE/.stfolder"
else
    say "syncthing: not installed (apt-get install syncthing curl)"
fi

commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "Tree: $FILES files of 1–3 KiB, $BYTES bytes, random. Page cache dropped before each run: ${CACHE_DROPS:-no}."
echo "$(date -u '+%Y-%m-%d'), $(nproc) cores, Linux $(uname -r); weft $commit, syncthing $ST_V."
echo
echo "| scan | wall s (process start to scan done) | scan s (the scanner's own log) | files hashed |"
echo "|---|---:|---:|---:|"
for label in "weft, first scan" "weft, again (nothing changed)" "syncthing, first scan" "syncthing, again (nothing changed)"; do
    echo "| $label | ${ROW[$label]:-not run | | } |"
done
