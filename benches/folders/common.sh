# Shell helpers shared by side_by_side.sh and scan.sh (sourced; NEXT_PORT set by the caller).

# Microseconds since the epoch, into the variable named $1 (no subshell).
stamp() { printf -v "$1" '%s' "${EPOCHREALTIME/[.,]/}"; }
# Seconds between two stamps, 3 decimals.
secs() { local d=$(($2 - $1)); printf '%d.%03d' $((d / 1000000)) $(((d % 1000000) / 1000)); }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Next port nothing listens on, into PORT.
alloc_port() {
    while port_busy "$NEXT_PORT"; do NEXT_PORT=$((NEXT_PORT + 1)); done
    PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
}

# Writes dirty pages and drops the page cache if allowed; CACHE_DROPS says whether it could.
drop_caches() {
    sync
    if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then CACHE_DROPS=yes; else CACHE_DROPS=no; fi
}
