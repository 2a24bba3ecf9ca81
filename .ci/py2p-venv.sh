#!/usr/bin/env bash
# A Python venv holding py2p (the p2p.today reference implementation) for the interop tests
# (drivers/tests/common/py2p.rs runs this once per test process; .ci/run runs it before the
# tests). Idempotent: a complete venv (the marker below, written after a successful install of
# exactly these pins) is reused at once. The venv's python is the last line printed.
#
#   WEFT_PY2P_VENV    where the venv lives (default: <repo>/target/py2p-venv)
#   WEFT_PY2P_PYTHON  the python that makes it (default: python3, then /usr/bin/python3)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${WEFT_PY2P_VENV:-$repo/target/py2p-venv}"

# py2p 0.7.878 and every package it pulls in, as resolved on Python 3.11.
pins=(
  py2p==0.7.878
  base58==2.1.1
  pyee==13.0.1
  u-msgpack-python==2.8.0
  custom-inherit==2.4.1
  async-promises==1.1.1
  typing==3.7.4.3
  typing_extensions==4.16.0
)
marker="$venv/.weft-py2p-complete"
want="${pins[*]}"

if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  echo "$venv/bin/python"
  exit 0
fi

mkdir -p "$(dirname "$venv")"
# Test processes that start at once wait for each other here.
exec 9>"$venv.lock"
if command -v flock >/dev/null; then flock 9; fi
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  echo "$venv/bin/python"
  exit 0
fi

# An incomplete venv (an install that failed or was cut short) is made anew; a folder that is
# not a venv is left alone.
if [ -e "$venv" ]; then
  if [ -f "$venv/pyvenv.cfg" ]; then
    rm -rf "$venv"
  elif [ -n "$(ls -A "$venv")" ]; then
    echo "py2p-venv: $venv exists and is not a venv; set WEFT_PY2P_VENV elsewhere" >&2
    exit 1
  fi
fi

make_venv() {
  local py
  for py in "${WEFT_PY2P_PYTHON:-python3}" /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -m venv "$venv" >&2; then
      return 0
    fi
    rm -rf "$venv"
  done
  return 1
}

if ! make_venv; then
  # Debian's python3 has no venv module (ensurepip) without python3-venv.
  echo "py2p-venv: python3 -m venv failed; installing Debian's python3-venv" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >&2
  make_venv
fi

"$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check "${pins[@]}" >&2
# Fails here rather than in a test if py2p does not import.
"$venv/bin/python" -c 'import py2p, py2p.mesh, py2p.sync' >&2
echo "$want" >"$marker"
echo "$venv/bin/python"
