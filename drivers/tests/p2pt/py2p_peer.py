#!/usr/bin/env python3
"""One py2p node (p2p.today's reference implementation) for weft's interop tests.

    python py2p_peer.py --kind mesh|sync1|sync0 [--no-compression] [--debug N]

Driven by JSON lines on stdin, it reports JSON lines on stdout (see drivers/tests/common/py2p.rs):

    {"ev":"ready","port":P,"id":"<node id>","protocol_id":"<protocol id>","kind":..,"compression":[..]}

Commands and their replies (one reply per command, in order):

    {"op":"connect","host":"127.0.0.1","port":N}  -> {"ev":"ok"} (with "already":true when py2p
                                                     skipped it) or {"ev":"error","error":"..."}
    {"op":"send","args":["text",...]}             -> ok (a broadcast: sock.send(*args))
    {"op":"set","key":"k","value":"v"}            -> ok, or error "lease: ..." (sync kinds)
    {"op":"delete","key":"k"}                     -> ok, or error "lease: ..." / "absent: ..."
    {"op":"get","key":"k"}                        -> {"ev":"value","key":"k","value":V|null}
    {"op":"peers"}                                -> {"ev":"peers","ids":[..],"outgoing":N,"incoming":M}
    {"op":"request_peers"}                        -> ok (whisper/request "*" to every peer)
    {"op":"status"}                               -> {"ev":"status","exceptions":[tracebacks]}
    {"op":"quit"}                                 -> ok, then the socket is closed and it exits 0

Events, whenever they happen:

    {"ev":"msg","sender":..,"flag":F,"packets":[..],"time":T,"id":"<hex>"}  once per delivery
    {"ev":"update","key":..,"value":..,"owner":..,"time":T}                 sync kinds
    {"ev":"delete","key":..}                                                sync kinds

Values are rendered for JSON: str as is, bytes as a string when UTF-8 and {"hex":..} otherwise,
lists and maps element by element. The message's "packets" are the application's arguments
(py2p's Message.packets without its first element, the sub-flag, which is "flag").

Everything stays on 127.0.0.1: this never calls py2p.bootstrap().
"""

import argparse
import json
import math
import os
import socket
import sys
import threading
import traceback

# py2p prints its diagnostics (some at level 0, whatever debug_level) with print(): keep them
# off the JSON channel. Replies go to a private copy of fd 1; fd 1 itself becomes stderr.
_out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr
_out_lock = threading.Lock()


def emit(obj):
    line = json.dumps(obj, separators=(",", ":"))
    with _out_lock:
        try:
            _out.write(line + "\n")
            _out.flush()
        except (OSError, ValueError):
            pass  # the test went away: stdin's end stops this process


def text(b):
    """An id or key as text."""
    if isinstance(b, (bytes, bytearray)):
        return bytes(b).decode("utf-8", "replace")
    return str(b)


def render(v):
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": bytes(v).hex()}
    if isinstance(v, (list, tuple)):
        return [render(x) for x in v]
    if isinstance(v, dict):
        return {text(k) if not isinstance(k, str) else k: render(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    data = getattr(v, "data", None)  # umsgpack.Ext
    if isinstance(data, (bytes, bytearray)):
        return {"ext": getattr(v, "type", None), "hex": bytes(data).hex()}
    return repr(v)


def free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=("mesh", "sync1", "sync0"), required=True)
    ap.add_argument("--no-compression", action="store_true")
    ap.add_argument(
        "--announce-port",
        type=int,
        default=None,
        help="announce 127.0.0.1:PORT in the handshake instead of the listening port (a port "
        "nothing listens on keeps peers that hear of this node from dialing it)",
    )
    ap.add_argument("--debug", type=int, default=0, help="py2p's debug_level (prints on stderr)")
    opts = ap.parse_args()

    import py2p.messages

    if opts.no_compression:
        # The one list (imported by name into py2p.base and py2p.mesh) that the handshake
        # advertises and that picks a link's compression: empty, the node neither advertises
        # nor uses any method, so its frames are sha256 || msgpack as is.
        py2p.messages.compression[:] = []
    import py2p.mesh
    import py2p.sync

    sock = None
    last = None
    # py2p cannot listen on port 0 (it would advertise port 0 in its handshake): take a port
    # the kernel says is free, and try again if another process took it meanwhile.
    for _ in range(20):
        port = free_port()
        out_addr = ("127.0.0.1", opts.announce_port) if opts.announce_port else None
        try:
            if opts.kind == "mesh":
                sock = py2p.mesh.MeshSocket(
                    "127.0.0.1", port, out_addr=out_addr, debug_level=opts.debug
                )
            else:
                sock = py2p.sync.SyncSocket(
                    "127.0.0.1",
                    port,
                    out_addr=out_addr,
                    debug_level=opts.debug,
                    leasing=opts.kind == "sync1",
                )
            break
        except OSError as e:
            last = e
    if sock is None:
        emit({"ev": "error", "error": "no port: %s" % last})
        return 1

    def on_message(_conn):
        # Runs on py2p's daemon thread right after it queued a delivery: take every queued one.
        # (An exception here would reach py2p, which drops the link the message came on.)
        try:
            report_messages()
        except Exception:
            traceback.print_exc()

    def report_messages():
        while True:
            msg = sock.recv()
            if msg is None:
                return
            packets = list(msg.packets)
            emit(
                {
                    "ev": "msg",
                    "sender": text(msg.sender),
                    "flag": render(packets[0]) if packets else None,
                    "packets": [render(p) for p in packets[1:]],
                    "time": msg.time,
                    "id": bytes(msg.id).hex(),
                }
            )

    sock.on("message", on_message)
    if opts.kind != "mesh":

        def on_update(_conn, key, value, meta):
            try:
                report_update(key, value, meta)
            except Exception:
                traceback.print_exc()

        def report_update(key, value, meta):
            emit(
                {
                    "ev": "update",
                    "key": render(key),
                    "value": render(value),
                    "owner": text(meta.owner),
                    "time": meta.timestamp,
                }
            )

        def on_delete(_conn, key):
            emit({"ev": "delete", "key": render(key)})

        sock.on("update", on_update)
        sock.on("delete", on_delete)

    emit(
        {
            "ev": "ready",
            "port": port,
            "id": text(sock.id),
            "protocol_id": text(sock.protocol.id),
            "kind": opts.kind,
            "compression": list(py2p.messages.compression),
        }
    )

    def peers():
        for _ in range(100):
            try:
                table = dict(sock.routing_table)
                break
            except RuntimeError:  # changed size while copied by the daemon thread
                continue
        handlers = list(table.values())
        return {
            "ev": "peers",
            "ids": [text(i) for i in table],
            "outgoing": sum(1 for h in handlers if h.outgoing),
            "incoming": sum(1 for h in handlers if not h.outgoing),
        }

    def handle(cmd):
        op = cmd.get("op")
        if op == "connect":
            if sock.connect(cmd["host"], int(cmd["port"])) is False:
                return {"ev": "ok", "already": True}
            return {"ev": "ok"}
        if op == "send":
            sock.send(*cmd.get("args", []))
            return {"ev": "ok"}
        if op in ("set", "delete", "get") and opts.kind == "mesh":
            return {"ev": "error", "error": "not a sync socket"}
        if op == "set":
            try:
                sock[cmd["key"]] = cmd["value"]
            except KeyError as e:
                return {"ev": "error", "error": "lease: %s" % e}
            return {"ev": "ok"}
        if op == "delete":
            if sock.get(cmd["key"]) is None:
                return {"ev": "error", "error": "absent: no value at %r" % cmd["key"]}
            try:
                del sock[cmd["key"]]
            except KeyError as e:
                return {"ev": "error", "error": "lease: %s" % e}
            return {"ev": "ok"}
        if op == "get":
            return {"ev": "value", "key": cmd["key"], "value": render(sock.get(cmd["key"]))}
        if op == "peers":
            return peers()
        if op == "request_peers":
            sock.request_peers()
            return {"ev": "ok"}
        if op == "status":
            return {"ev": "status", "exceptions": list(sock.daemon.exceptions)}
        return {"ev": "error", "error": "unknown op %r" % op}

    # The main thread reads commands; py2p's daemon thread runs while this one lives.
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
        except ValueError as e:
            emit({"ev": "error", "error": "bad json: %s" % e})
            continue
        if cmd.get("op") == "quit":
            break
        try:
            reply = handle(cmd)
        except Exception as e:
            reply = {"ev": "error", "error": "%s: %s" % (type(e).__name__, e)}
            traceback.print_exc()
        emit(reply)
    sock.close()
    emit({"ev": "ok"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
