#!/usr/bin/env bash
# Side-by-side folder throughput (issue 18): weft against rsync (local and daemon on
# 127.0.0.1) and Syncthing, on the same random data set, plus two edits timed on a weft pair.
# See benches/folders/README.md. Writes benches/folders/last-run.md; its table goes into
# BENCHMARKS.md under "## Folders side by side".
#
# Env: WEFT_BENCH_DIR (scratch, default /tmp/weft-folders-bench), WEFT_BENCH_SCALE (1 = full
# size), WEFT_BENCH_RUNS (3), WEFT_BENCH_TIMEOUT (seconds per copy, 900), WEFT_BENCH_PORT
# (first port tried, 47300), WEFT_BIN (use this binary, skip the build).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BENCH=${WEFT_BENCH_DIR:-/tmp/weft-folders-bench}
SCALE=${WEFT_BENCH_SCALE:-1}
RUNS=${WEFT_BENCH_RUNS:-3}
TIMEOUT=${WEFT_BENCH_TIMEOUT:-900}
NEXT_PORT=${WEFT_BENCH_PORT:-47300}
OUT_MD=$HERE/last-run.md
MIB=1048576

say() { printf '%s\n' "$*" >&2; }
die() { say "side_by_side: $*"; exit 1; }

awk -v s="$SCALE" 'BEGIN { exit !(s + 0 > 0) }' || die "WEFT_BENCH_SCALE must be a number > 0 (got $SCALE)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "WEFT_BENCH_RUNS must be a positive integer (got $RUNS)"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "WEFT_BENCH_TIMEOUT must be a positive integer (got $TIMEOUT)"
[[ $NEXT_PORT =~ ^[1-9][0-9]*$ ]] || die "WEFT_BENCH_PORT must be a port number (got $NEXT_PORT)"
mkdir -p "$BENCH"
BENCH=$(cd "$BENCH" && pwd)

# ---------------------------------------------------------------------------------------
# Helpers

# shellcheck source=common.sh
. "$HERE/common.sh"

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [[ -n ${SRC:-} && -d ${SRC:-/nonexistent} ]] && rm -rf "$SRC/.weft" "$SRC/.stfolder"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

alive() { kill -0 "$1" 2>/dev/null; }

# Stops a child we started: SIGTERM, up to 20 s, then SIGKILL; reaps it.
stop_pid() {
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do alive "$p" || break; sleep 0.1; done
    if alive "$p"; then say "  (pid $p ignored SIGTERM for 20 s: SIGKILL)"; kill -KILL "$p" 2>/dev/null || true; fi
    wait "$p" 2>/dev/null || true
    local keep=() q
    for q in "${PIDS[@]}"; do [[ $q == "$p" ]] || keep+=("$q"); done
    PIDS=("${keep[@]}")
}


# poll_until INTERVAL TIMEOUT_S CMD...: runs CMD every INTERVAL seconds until it succeeds.
# Fails (REASON set) on timeout or when a pid of WATCH_PIDS has exited.
WATCH_PIDS=()
REASON=
poll_until() {
    local iv=$1 to=$2 start now p
    shift 2
    stamp start
    until "$@"; do
        for p in "${WATCH_PIDS[@]}"; do
            if ! alive "$p"; then REASON="process $p exited"; return 1; fi
        done
        stamp now
        if ((now - start > to * 1000000)); then REASON="timeout after ${to} s"; return 1; fi
        sleep "$iv"
    done
}

# "COUNT BYTES" of the regular files under $1, leaving out weft's and Syncthing's own
# folders and Syncthing's temporary files.
tree_stats() {
    { find "$1" -mindepth 1 \( -name .weft -o -name .stfolder -o -name .stversions \) -prune \
        -o -type f ! -name '.syncthing.*.tmp' ! -name '~syncthing~*.tmp' -printf '%s\n' 2>/dev/null || true; } |
        awk '{ n++; s += $1 } END { printf "%d %.0f\n", n, s }'
}
complete_copy() { [[ $(tree_stats "$1") == "$EXPECT" ]]; }

clean_src() { rm -rf "$SRC/.weft" "$SRC/.stfolder"; }

declare -A TIMES=() NOTES=()
add_time() { TIMES[$1]="${TIMES[$1]:-}$2 "; }
add_note() { NOTES[$1]=$2; }

median() {
    printf '%s\n' $1 | awk 'NF' | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) printf "%.3f", a[(NR + 1) / 2]; else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# ---------------------------------------------------------------------------------------
# 1. The data set: 4 big files and many small ones, all from /dev/urandom (no block
# repeats); sizes from a fixed seed so every run has the same shape.

BIG_SIZE=$(awk -v s="$SCALE" 'BEGIN { printf "%.0f", 200 * 1048576 * s }')
SMALL_COUNT=$(awk -v s="$SCALE" 'BEGIN { n = int(2000 * s + 0.5); if (n < 1) n = 1; print n }')
((BIG_SIZE >= 1)) || die "WEFT_BENCH_SCALE too small"
SRC=$BENCH/src
SHAPE="v1 big=4x$BIG_SIZE small=$SMALL_COUNT seed=18"
if [[ -d $SRC && -f $BENCH/dataset.shape && $(cat "$BENCH/dataset.shape") == "$SHAPE" ]]; then
    say "data set: reusing $SRC ($SHAPE)"
    clean_src
else
    say "data set: building $SRC ($SHAPE)"
    rm -rf "$SRC" "$BENCH/dataset.shape"
    mkdir -p "$SRC/small"
    for i in 1 2 3 4; do head -c "$BIG_SIZE" /dev/urandom >"$SRC/big-$i.bin"; done
    # Small files: 1 KiB to 64 KiB, spread over 20 folders.
    awk -v n="$SMALL_COUNT" 'BEGIN { srand(18); for (i = 0; i < n; i++) printf "%d %d\n", i, 1024 + int(rand() * 64513) }' |
        while read -r i size; do
            d=$(printf '%s/small/d%02d' "$SRC" $((i % 20)))
            [[ -d $d ]] || mkdir -p "$d"
            head -c "$size" /dev/urandom >"$(printf '%s/f%04d.bin' "$d" "$i")"
        done
    printf '%s\n' "$SHAPE" >"$BENCH/dataset.shape"
fi
EXPECT=$(tree_stats "$SRC")
read -r FILES TOTAL <<<"$EXPECT"
TOTAL_MIB=$(awk -v t="$TOTAL" 'BEGIN { printf "%.1f", t / 1048576 }')
say "data set: $FILES files, $TOTAL bytes ($TOTAL_MIB MiB)"

# ---------------------------------------------------------------------------------------
# 2. weft, built once.

if [[ -n ${WEFT_BIN:-} ]]; then
    WEFT=$WEFT_BIN
    say "weft: using WEFT_BIN=$WEFT (no build)"
else
    say "weft: cargo build --release -p weft-drivers --bin weft"
    (cd "$ROOT" && cargo build --release -p weft-drivers --bin weft) || die "cargo build failed"
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$ROOT/$target
    WEFT=$target/release/weft
fi
[[ -x $WEFT ]] || die "no weft binary at $WEFT"

HAVE_RSYNC=no
RSYNC_FSYNC=no
if command -v rsync >/dev/null 2>&1; then
    HAVE_RSYNC=yes
    help=$(rsync --help 2>&1 || true)
    [[ $help == *--fsync* ]] && RSYNC_FSYNC=yes
fi
HAVE_SYNCTHING=no
command -v syncthing >/dev/null 2>&1 && HAVE_SYNCTHING=yes
CACHE_DROPS=no

T_WEFT="weft (Noise, 127.0.0.1)"
T_RL="rsync -a (local)"
T_RLF="rsync -a --fsync (local)"
T_RD="rsync daemon (127.0.0.1)"
T_RDF="rsync daemon --fsync (127.0.0.1)"
T_ST="syncthing (TLS, 127.0.0.1)"
TOOLS=("$T_WEFT" "$T_RL" "$T_RLF" "$T_RD" "$T_RDF" "$T_ST")

RUNS_DIR=$BENCH/runs
rm -rf "$RUNS_DIR"
mkdir -p "$RUNS_DIR"

# ---------------------------------------------------------------------------------------
# weft: `weft create` on SRC, once it answers `weft stats` start `weft join` into a fresh
# DST and the clock; done when DST holds every file at its size and DST/.weft/tmp is empty.

W_N=0
weft_ready() { "$WEFT" stats --name "$W_NAME" --state "$W_S1" >/dev/null 2>&1; }
tmp_empty() { [[ ! -d $1 ]] || [[ -z $(ls -A "$1" 2>/dev/null) ]]; }
weft_done() { complete_copy "$W_DST" && tmp_empty "$W_DST/.weft/tmp"; }
log_tail() { tail -n 1 "$1" 2>/dev/null | cut -c1-160; }

# Starts the pair; sets W_* and W_T0 (the join's start). Fails with REASON.
weft_up() {
    W_N=$((W_N + 1))
    W_DIR=$RUNS_DIR/weft-$W_N
    W_NAME="bench$W_N-$$"
    W_S1=$W_DIR/s1
    W_S2=$W_DIR/s2
    W_DST=$W_DIR/dst
    W_PID1=
    W_PID2=
    mkdir -p "$W_DIR"
    alloc_port
    W_P1=$PORT
    alloc_port
    W_P2=$PORT
    clean_src
    drop_caches
    "$WEFT" create --name "$W_NAME" --state "$W_S1" --dir "$SRC" --listen "127.0.0.1:$W_P1" \
        >"$W_DIR/create.log" 2>&1 &
    W_PID1=$!
    PIDS+=("$W_PID1")
    WATCH_PIDS=("$W_PID1")
    if ! poll_until 0.05 60 weft_ready; then
        REASON="weft create not up ($REASON): $(log_tail "$W_DIR/create.log")"
        WATCH_PIDS=()
        return 1
    fi
    stamp W_T0
    "$WEFT" join --name "$W_NAME" --state "$W_S2" --dir "$W_DST" --peer "127.0.0.1:$W_P1" \
        --listen "127.0.0.1:$W_P2" >"$W_DIR/join.log" 2>&1 &
    W_PID2=$!
    PIDS+=("$W_PID2")
    WATCH_PIDS=("$W_PID1" "$W_PID2")
}

weft_down() {
    WATCH_PIDS=()
    [[ -n $W_PID2 ]] && stop_pid "$W_PID2"
    [[ -n $W_PID1 ]] && stop_pid "$W_PID1"
    W_PID1=
    W_PID2=
}

run_weft() {
    local t1
    if ! weft_up; then
        add_note "$T_WEFT" "$REASON"
        weft_down
        clean_src
        return
    fi
    if ! poll_until 0.05 "$TIMEOUT" weft_done; then
        add_note "$T_WEFT" "run $RUN: $REASON; have $(tree_stats "$W_DST") of $EXPECT; $(log_tail "$W_DIR/join.log")"
        weft_down
        rm -rf "$W_DST"
        clean_src
        return
    fi
    stamp t1
    weft_down
    if diff -r -x .weft "$SRC" "$W_DST" >"$W_DIR/diff.txt" 2>&1; then
        add_time "$T_WEFT" "$(secs "$W_T0" "$t1")"
        say "  weft: $(secs "$W_T0" "$t1") s (diff -r clean)"
    else
        add_note "$T_WEFT" "run $RUN: diff -r found differences ($W_DIR/diff.txt)"
        say "  weft: diff -r found differences, see $W_DIR/diff.txt"
    fi
    rm -rf "$W_DST"
    clean_src
}

# ---------------------------------------------------------------------------------------
# rsync: local, and pulled from a daemon on 127.0.0.1 (started once).

RSYNCD_PID=
RSYNCD_PORT=
start_rsyncd() {
    local d=$BENCH/rsyncd
    mkdir -p "$d"
    alloc_port
    RSYNCD_PORT=$PORT
    cat >"$d/rsyncd.conf" <<EOF
use chroot = no
pid file = $d/rsyncd.pid
lock file = $d/rsyncd.lock
log file = $d/rsyncd.log
[bench]
    path = $SRC
    read only = yes
    uid = $(id -u)
    gid = $(id -g)
EOF
    rm -f "$d/rsyncd.pid"
    rsync --daemon --no-detach --config="$d/rsyncd.conf" --address=127.0.0.1 --port="$RSYNCD_PORT" \
        >"$d/stdout.log" 2>&1 &
    RSYNCD_PID=$!
    PIDS+=("$RSYNCD_PID")
    WATCH_PIDS=("$RSYNCD_PID")
    if ! poll_until 0.05 20 port_busy "$RSYNCD_PORT"; then
        REASON="rsync daemon not up ($REASON): $(log_tail "$d/rsyncd.log")"
        WATCH_PIDS=()
        stop_pid "$RSYNCD_PID"
        RSYNCD_PID=
        return 1
    fi
    WATCH_PIDS=()
}

# run_rsync TOOL FROM [ARGS...]
run_rsync() {
    local tool=$1 from=$2 t0 t1 dst=$RUNS_DIR/rsync-dst
    shift 2
    rm -rf "$dst"
    clean_src
    drop_caches
    stamp t0
    if ! rsync -a "$@" "$from" "$dst/" >"$RUNS_DIR/rsync.log" 2>&1; then
        add_note "$tool" "run $RUN: rsync failed: $(log_tail "$RUNS_DIR/rsync.log")"
        rm -rf "$dst"
        return
    fi
    stamp t1
    if complete_copy "$dst"; then
        add_time "$tool" "$(secs "$t0" "$t1")"
        say "  $tool: $(secs "$t0" "$t1") s"
    else
        add_note "$tool" "run $RUN: incomplete copy ($(tree_stats "$dst") of $EXPECT)"
    fi
    rm -rf "$dst"
}

# ---------------------------------------------------------------------------------------
# Syncthing: two instances with their own homes, each other's device, one shared folder;
# discovery, relays, NAT, watcher off. The source starts first; once its GUI answers, the
# destination starts and the clock with it; done when DST holds every file at its size
# (Syncthing renames a file into place only when complete).

st_config() { # home own_id peer_id listen_port peer_port gui_port api_key folder_path
    python3 - "$@" <<'PY'
import copy, sys
import xml.etree.ElementTree as ET
home, own, peer, lport, pport, gport, key, path = sys.argv[1:]
cfg = home + "/config.xml"
tree = ET.parse(cfg)
root = tree.getroot()
opts = root.find("options")
for name, value in [
    ("listenAddress", "tcp://127.0.0.1:" + lport),
    ("globalAnnounceEnabled", "false"),
    ("localAnnounceEnabled", "false"),
    ("relaysEnabled", "false"),
    ("natEnabled", "false"),
    ("startBrowser", "false"),
    ("urAccepted", "-1"),
    ("autoUpgradeIntervalH", "0"),
    ("crashReportingEnabled", "false"),
    ("setLowPriority", "false"),
]:
    e = opts.find(name)
    if e is None:
        e = ET.SubElement(opts, name)
    e.text = value
gui = root.find("gui")
gui.find("address").text = "127.0.0.1:" + gport
gui.find("apikey").text = key
defaults = root.find("defaults")
dev = copy.deepcopy(defaults.find("device"))
dev.set("id", peer)
dev.set("name", "peer")
dev.find("address").text = "tcp://127.0.0.1:" + pport
root.append(dev)
folder = copy.deepcopy(defaults.find("folder"))
folder.set("id", "weft-bench")
folder.set("label", "weft-bench")
folder.set("path", path)
folder.set("fsWatcherEnabled", "false")
folder.set("rescanIntervalS", "3600")
for d in folder.findall("device"):
    folder.remove(d)
for i in (own, peer):
    d = ET.Element("device", {"id": i, "introducedBy": ""})
    ET.SubElement(d, "encryptionPassword")
    folder.insert(0, d)
root.insert(0, folder)
tree.write(cfg)
PY
}

st_ready() { # gui_port api_key
    if command -v curl >/dev/null 2>&1; then
        curl -fs -H "X-API-Key: $2" "http://127.0.0.1:$1/rest/system/ping" >/dev/null 2>&1
    else
        port_busy "$1"
    fi
}

ST_PID1=
ST_PID2=
st_down() {
    WATCH_PIDS=()
    [[ -n $ST_PID2 ]] && stop_pid "$ST_PID2"
    [[ -n $ST_PID1 ]] && stop_pid "$ST_PID1"
    ST_PID1=
    ST_PID2=
    clean_src
}

# Sets up and times one Syncthing copy; fails with REASON.
st_try() {
    local base=$RUNS_DIR/syncthing-$RUN h1 h2 dst id1 id2 l1 l2 g1 g2 key t0 t1
    h1=$base/home-src
    h2=$base/home-dst
    dst=$base/dst
    rm -rf "$base"
    mkdir -p "$base"
    command -v python3 >/dev/null 2>&1 || { REASON="python3 needed to write config.xml"; return 1; }
    for h in "$h1" "$h2"; do
        syncthing generate --home="$h" --no-default-folder --skip-port-probing >"$base/generate.log" 2>&1 ||
            { REASON="syncthing generate failed: $(log_tail "$base/generate.log")"; return 1; }
    done
    id1=$(syncthing serve --home="$h1" --device-id 2>/dev/null) || { REASON="no device id"; return 1; }
    id2=$(syncthing serve --home="$h2" --device-id 2>/dev/null) || { REASON="no device id"; return 1; }
    alloc_port; l1=$PORT
    alloc_port; l2=$PORT
    alloc_port; g1=$PORT
    alloc_port; g2=$PORT
    key="weftbench$$$RUN"
    st_config "$h1" "$id1" "$id2" "$l1" "$l2" "$g1" "$key" "$SRC" >"$base/config.log" 2>&1 &&
        st_config "$h2" "$id2" "$id1" "$l2" "$l1" "$g2" "$key" "$dst" >>"$base/config.log" 2>&1 ||
        { REASON="config.xml edit failed: $(log_tail "$base/config.log")"; return 1; }
    clean_src
    mkdir -p "$SRC/.stfolder" "$dst/.stfolder"
    drop_caches
    STNORESTART=1 STNOUPGRADE=1 syncthing serve --home="$h1" --no-browser --no-restart --no-upgrade \
        >"$base/src.log" 2>&1 &
    ST_PID1=$!
    PIDS+=("$ST_PID1")
    WATCH_PIDS=("$ST_PID1")
    poll_until 0.05 60 st_ready "$g1" "$key" ||
        { REASON="source instance not up ($REASON): $(log_tail "$base/src.log")"; return 1; }
    stamp t0
    STNORESTART=1 STNOUPGRADE=1 syncthing serve --home="$h2" --no-browser --no-restart --no-upgrade \
        >"$base/dst.log" 2>&1 &
    ST_PID2=$!
    PIDS+=("$ST_PID2")
    WATCH_PIDS=("$ST_PID1" "$ST_PID2")
    poll_until 0.05 "$TIMEOUT" complete_copy "$dst" ||
        { REASON="$REASON; have $(tree_stats "$dst") of $EXPECT; $(log_tail "$base/dst.log")"; return 1; }
    stamp t1
    ST_TIME=$(secs "$t0" "$t1")
    rm -rf "$dst"
}

run_syncthing() {
    if st_try; then
        add_time "$T_ST" "$ST_TIME"
        say "  syncthing: $ST_TIME s"
    else
        add_note "$T_ST" "run $RUN: $REASON"
        say "  syncthing: failed: $REASON"
    fi
    st_down
    rm -rf "$RUNS_DIR/syncthing-$RUN/dst"
}

# ---------------------------------------------------------------------------------------
# 3. The runs.

[[ $HAVE_RSYNC == yes ]] || for t in "$T_RL" "$T_RLF" "$T_RD" "$T_RDF"; do add_note "$t" "rsync: not installed (apt-get install rsync)"; done
[[ $HAVE_RSYNC == no || $RSYNC_FSYNC == yes ]] || for t in "$T_RLF" "$T_RDF"; do add_note "$t" "n/a: this rsync has no --fsync"; done
[[ $HAVE_SYNCTHING == yes ]] || { add_note "$T_ST" "syncthing: not installed (apt-get install syncthing)"; say "syncthing: not installed (apt-get install syncthing)"; }

if [[ $HAVE_RSYNC == yes ]] && ! start_rsyncd; then
    for t in "$T_RD" "$T_RDF"; do add_note "$t" "$REASON"; done
fi

for ((RUN = 1; RUN <= RUNS; RUN++)); do
    say "run $RUN/$RUNS"
    run_weft
    if [[ $HAVE_RSYNC == yes ]]; then
        run_rsync "$T_RL" "$SRC/"
        [[ $RSYNC_FSYNC == yes ]] && run_rsync "$T_RLF" "$SRC/" --fsync
        if [[ -n $RSYNCD_PID ]]; then
            run_rsync "$T_RD" "rsync://127.0.0.1:$RSYNCD_PORT/bench/"
            [[ $RSYNC_FSYNC == yes ]] && run_rsync "$T_RDF" "rsync://127.0.0.1:$RSYNCD_PORT/bench/" --fsync
        fi
    fi
    [[ $HAVE_SYNCTHING == yes ]] && run_syncthing
done
[[ -n $RSYNCD_PID ]] && stop_pid "$RSYNCD_PID"

# ---------------------------------------------------------------------------------------
# 5. Two edits on a running weft pair: 1 MiB overwritten in place inside a big file, then
# 1 KiB inserted at its start (new file written beside it, renamed over it). Each is timed
# from the writer's return until the rename on the other node (the destination's inode
# changes, polled every 5 ms), and then the new file must be byte-identical (cmp, not timed);
# the sender's "bytes sent" before and after gives the bytes on the wire per byte changed.

EDIT_ROWS=()
EDIT_NOTE=
EDITED=no
sent_bytes() {
    "$WEFT" stats --name "$W_NAME" --state "$W_S1" 2>/dev/null | awk '/^ *bytes sent / { v = $NF } END { if (v == "") exit 1; print v }'
}
# wait_renamed SRC DST INODE: waits until DST is another inode than INODE (weft renames a
# verified file into place) holding SRC's content; T_RENAMED is when that inode was first
# seen (the cmp of a 200 MiB file is not timed). Fails with REASON.
wait_renamed() {
    local src=$1 dst=$2 ino=$3 cur start now p
    stamp start
    while true; do
        cur=$(stat -c %i "$dst" 2>/dev/null)
        if [[ -n $cur && $cur != "$ino" ]]; then
            stamp T_RENAMED
            cmp -s "$src" "$dst" 2>/dev/null && return 0
            ino=$cur
        fi
        for p in "${WATCH_PIDS[@]}"; do
            if ! alive "$p"; then REASON="process $p exited"; return 1; fi
        done
        stamp now
        if ((now - start > TIMEOUT * 1000000)); then REASON="timeout after ${TIMEOUT} s"; return 1; fi
        sleep 0.005
    done
}

# edit_row LABEL CHANGED T0 B0: after the match (T_RENAMED), reads the counter, adds a row.
edit_row() {
    local label=$1 changed=$2 t0=$3 b0=$4 t1=$T_RENAMED b1
    sleep 0.5 # let the last frames and acks go out before reading the counter
    if ! b1=$(sent_bytes); then
        EDIT_ROWS+=("| $label | $(secs "$t0" "$t1") | ? | $changed | ? |")
        return
    fi
    EDIT_ROWS+=("| $label | $(secs "$t0" "$t1") | $((b1 - b0)) | $changed | $(awk -v s=$((b1 - b0)) -v c="$changed" 'BEGIN { printf "%.2f", s / c }') |")
}

run_edits() {
    local f=big-1.bin sf df off t0 b0 tmp ino
    if ((BIG_SIZE < 2 * MIB)); then
        EDIT_NOTE="big files under 2 MiB at this scale: edits skipped"
        return
    fi
    say "edits: weft pair"
    if ! weft_up; then
        EDIT_NOTE="weft pair not up: $REASON"
        weft_down
        clean_src
        return
    fi
    if ! poll_until 0.05 "$TIMEOUT" weft_done; then
        EDIT_NOTE="initial copy: $REASON"
        weft_down
        rm -rf "$W_DST"
        clean_src
        return
    fi
    sf=$SRC/$f
    df=$W_DST/$f
    sleep 1 # let the pair settle after the initial copy
    # (a) 1 MiB overwritten at 50 MiB (a quarter of the file at other scales), in place.
    off=$((BIG_SIZE / 4 / MIB * MIB))
    EDITED=yes
    if b0=$(sent_bytes); then
        ino=$(stat -c %i "$df")
        dd if=/dev/urandom of="$sf" bs=1024 count=1024 seek=$((off / 1024)) conv=notrunc status=none
        stamp t0
        if wait_renamed "$sf" "$df" "$ino"; then
            edit_row "overwrite 1 MiB at $((off / MIB)) MiB (dd conv=notrunc)" "$MIB" "$t0" "$b0"
        else
            EDIT_ROWS+=("| overwrite 1 MiB at $((off / MIB)) MiB | $REASON | | $MIB | |")
        fi
    else
        EDIT_NOTE="weft stats gave no \"bytes sent\""
    fi
    # (b) 1 KiB inserted at the start: new file beside it, renamed over it.
    if b0=$(sent_bytes); then
        tmp=$SRC/.$f.insert
        { head -c 1024 /dev/urandom; cat "$sf"; } >"$tmp"
        ino=$(stat -c %i "$df")
        mv -f "$tmp" "$sf"
        stamp t0
        if wait_renamed "$sf" "$df" "$ino"; then
            edit_row "insert 1 KiB at the start (write + mv)" 1024 "$t0" "$b0"
        else
            EDIT_ROWS+=("| insert 1 KiB at the start | $REASON | | 1024 | |")
        fi
    fi
    weft_down
    rm -rf "$W_DST"
    clean_src
}
run_edits
# The edits changed big-1.bin: the next run of the script builds the data set afresh.
[[ $EDITED == no ]] || rm -f "$BENCH/dataset.shape"

# ---------------------------------------------------------------------------------------
# 4. The table.

rsync_v=$( { rsync --version 2>/dev/null || true; } | head -n 1 | awk '{ print $3 }')
st_v=$( { syncthing --version 2>/dev/null || true; } | awk '{ print $2 }')
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
[[ -z $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] || commit="$commit (+ local changes)"

{
    echo "Data set: $FILES files, $TOTAL_MIB MiB (4 × $(awk -v b="$BIG_SIZE" 'BEGIN { printf "%.1f", b / 1048576 }') MiB + $SMALL_COUNT files of 1–64 KiB, random), copied to an empty folder on the same disk."
    echo "Median of $RUNS run(s); WEFT_BENCH_SCALE=$SCALE; page cache dropped before each copy: $CACHE_DROPS."
    echo "$(date -u '+%Y-%m-%d'), $(nproc) cores, Linux $(uname -r); weft $commit, rsync ${rsync_v:-n/a}, syncthing ${st_v:-n/a}."
    echo
    echo "| tool | median s | MiB/s | runs ok | notes |"
    echo "|---|---:|---:|---:|---|"
    for t in "${TOOLS[@]}"; do
        times=${TIMES[$t]:-}
        note=${NOTES[$t]:-}
        n=$(printf '%s\n' $times | awk 'NF' | wc -l)
        if ((n > 0)); then
            m=$(median "$times")
            rate=$(awk -v b="$TOTAL" -v s="$m" 'BEGIN { if (s > 0) printf "%.1f", b / 1048576 / s; else print "-" }')
            echo "| $t | $m | $rate | $n/$RUNS | $note |"
        else
            echo "| $t | n/a | n/a | 0/$RUNS | $note |"
        fi
    done
    echo
    echo "Two edits on a running weft pair (sender's \"bytes sent\" counter, so links' keepalives are included):"
    echo
    echo "| edit | seconds until renamed into place | bytes sent | bytes changed | sent / changed |"
    echo "|---|---:|---:|---:|---:|"
    if ((${#EDIT_ROWS[@]} > 0)); then printf '%s\n' "${EDIT_ROWS[@]}"; fi
    [[ -z $EDIT_NOTE ]] || echo "| ${EDIT_NOTE} | | | | |"
} >"$OUT_MD"

echo
cat "$OUT_MD"
echo
echo "Wrote $OUT_MD: its content goes into BENCHMARKS.md under \"## Folders side by side\"."
