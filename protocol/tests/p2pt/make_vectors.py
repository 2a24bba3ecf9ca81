#!/usr/bin/env python3
"""Writes protocol/tests/p2pt/vectors.json: p2p.today frames made by py2p 0.7.878 itself.

Every valid frame is built the way py2p's `BaseConnection.send` builds what it sends:
`InternalMessage(msg_type, sender_id, args, link_compression, timestamp=t).string`, with
py2p's own protocol ids (`Protocol(subnet, "Plaintext").id`) and node ids (`BaseSocket`'s
`b58encode_int(sha384(str(out_addr) + protocol_id + salt))`), a fixed timestamp and a fixed
salt, so the file is the same on every run. No socket is opened.

    python3 -m venv /tmp/py2p && /tmp/py2p/bin/pip install py2p==0.7.878
    /tmp/py2p/bin/python protocol/tests/p2pt/make_vectors.py > protocol/tests/p2pt/vectors.json

Invalid entries are py2p frames broken on purpose, plus compression bombs made with the same
Python modules py2p calls (zlib, bz2, lzma), each expanding one byte past weft's limit.
"""
import bz2
import json
import lzma
import struct
import sys
import zlib
from hashlib import sha256, sha384

from base58 import b58encode_int
from umsgpack import packb

import py2p
from py2p import flags
from py2p.base import Protocol
from py2p.messages import InternalMessage, compression as PY2P_COMPRESSION
from py2p.utils import pack_value

# py2p.__version__ says "0.7.870" in the 0.7.878 release; ask the installed distribution.
from importlib.metadata import version as _dist_version
assert _dist_version("py2p") == "0.7.878", _dist_version("py2p")

# weft's limit on the (decompressed) frame body, sha256 id + msgpack: P2PT_BODY_BYTES_MAX.
BODY_BYTES_MAX = 4 * 1024 * 1024
T = 1_700_000_000  # a fixed timestamp (2023-11-14T22:13:20Z)

METHOD_NAME = {None: "none", flags.zlib: "zlib", flags.gzip: "gzip", flags.bz2: "bz2",
               flags.lzma: "xz"}


def node_id(out_addr, prot, salt):
    """BaseSocket.__init__'s id, with a fixed salt in place of its random one."""
    info = (str(out_addr).encode(), prot.id, salt)
    return b58encode_int(int(sha384(b"".join(info)).hexdigest(), 16))


MESH = Protocol("mesh", "Plaintext")
SYNC = Protocol("sync1", "Plaintext")
ADDR_A = ("127.0.0.1", 4444)
ADDR_B = ("127.0.0.1", 4445)
A = node_id(ADDR_A, MESH, b"weft-vector-a")
B = node_id(ADDR_B, MESH, b"weft-vector-b")
S = node_id(ADDR_A, SYNC, b"weft-vector-s")


def jsonable(v):
    """A msgpack value as JSON, tagged so that bin, str, int and float stay apart."""
    if v is None:
        return {"nil": None}
    if isinstance(v, bool):
        return {"bool": v}
    if isinstance(v, int):
        return {"int": str(v)}
    if isinstance(v, float):
        return {"f64": struct.pack(">d", v).hex()}
    if isinstance(v, bytes):
        return {"bin": v.hex()}
    if isinstance(v, str):
        return {"str": v}
    if isinstance(v, (list, tuple)):
        return {"array": [jsonable(x) for x in v]}
    if isinstance(v, dict):
        return {"map": [[jsonable(k), jsonable(x)] for k, x in v.items()]}
    raise TypeError(type(v))


def frame(name, main, sender, args, link_compression=(), note=""):
    """What BaseConnection.send writes on a link whose peer advertised `link_compression`."""
    msg = InternalMessage(main, sender, args, list(link_compression), timestamp=T)
    wire = msg.string
    used = msg.compression_used
    # py2p reads it back as its own receiver would.
    back = InternalMessage.feed_string(wire, False, list(link_compression))
    assert back.id == msg.id and packb(back.packets) == packb(msg.packets)
    assert not back.compression_fail
    body = sha256(packb(msg.packets)).digest() + packb(msg.packets)
    return {
        "name": name,
        "note": note,
        "frame_hex": wire.hex(),
        "link_compression": list(link_compression),
        "compression": METHOD_NAME[used],
        "id_hex": msg.id.hex(),
        "msgpack_hex": packb(msg.packets).hex(),
        "body_hex": body.hex(),
        "main_flag": main,
        "sender_hex": sender.hex(),
        "timestamp": T,
        "sub_flag": args[0],
        "args": [jsonable(a) for a in args[1:]],
    }


ALL = list(PY2P_COMPRESSION)  # [zlib, gzip, bz2, lzma] without python-snappy
assert ALL == [flags.zlib, flags.gzip, flags.bz2, flags.lzma], ALL

valid = []
# 1. Handshakes: MeshSocket._send_handshake clears the link's compression, so always plain.
valid.append(frame("mesh_handshake", flags.whisper, A,
                   (flags.handshake, A, MESH.id, ADDR_A, PY2P_COMPRESSION),
                   note="whisper/handshake [id, protocol id, out_addr, compression list]"))
valid.append(frame("sync_handshake", flags.whisper, S,
                   (flags.handshake, S, SYNC.id, ADDR_A, PY2P_COMPRESSION)))
# 2. peers, as _send_peers sends it, under each compression the peer may advertise first.
peers = [[ADDR_B, B]]
for methods in ((), (flags.zlib,), (flags.gzip,), (flags.bz2,), (flags.lzma,)):
    valid.append(frame("mesh_peers_" + METHOD_NAME[methods[0] if methods else None],
                       flags.whisper, A, (flags.peers, peers), methods))
# The sender picks the first method of ITS OWN list that the peer advertised.
valid.append(frame("mesh_peers_sender_order", flags.whisper, A, (flags.peers, peers),
                   (flags.lzma, flags.bz2, flags.gzip),
                   note="peer advertised [xz, bz2, gzip]: py2p's own order puts gzip first"))
# 3. Mesh broadcasts (MeshSocket.send(*args) -> [broadcast, sender, t, broadcast, *args]).
valid.append(frame("mesh_broadcast", flags.broadcast, A,
                   (flags.broadcast, "hello", b"\x00\x01\xff", 42, -7, 2**40, 1.5, None, True)))
big = "weft and py2p " * 40  # long enough to be worth compressing, str16 and bin16
valid.append(frame("mesh_broadcast_long_zlib", flags.broadcast, A,
                   (flags.broadcast, big, big.encode() * 4), ALL))
valid.append(frame("mesh_request_peers", flags.whisper, A, (flags.request, "*"),
                   note="request_peers sends '*' as str; py2p answers only b'*'"))
valid.append(frame("renegotiate_compression", flags.renegotiate, A,
                   (flags.compression, [flags.zlib, flags.bz2])))
valid.append(frame("renegotiate_resend", flags.renegotiate, A, (flags.resend,)))
# 4. Sync: SyncSocket.__setitem__ -> broadcast/store [key, value]; delete -> value None;
#    _send_peers -> whisper/store [key, value, owner, timestamp]; update() -> delta.
valid.append(frame("sync_store", flags.broadcast, S, (flags.store, b"colour", "blue")))
for methods in ((flags.zlib,), (flags.gzip,), (flags.bz2,), (flags.lzma,)):
    valid.append(frame("sync_store_" + METHOD_NAME[methods[0]], flags.broadcast, S,
                       (flags.store, b"doc", {"title": "x" * 300, "n": 3}), methods))
valid.append(frame("sync_delete", flags.broadcast, S, (flags.store, b"colour", None)))
valid.append(frame("sync_whisper_store", flags.whisper, S,
                   (flags.store, b"colour", "blue", S, T - 5)))
valid.append(frame("sync_delta", flags.broadcast, S,
                   (flags.delta, b"doc", {"n": 4, "tags": ["a", "b"]}), ALL))

invalid = []


def bad(name, data, error, link_compression=(), note=""):
    invalid.append({"name": name, "note": note, "frame_hex": data.hex(),
                    "link_compression": list(link_compression), "error": error})


good = bytes.fromhex(valid[0]["frame_hex"])
flip = bytearray(good)
flip[-1] ^= 1
bad("bad_checksum", bytes(flip), "ChecksumMismatch", note="last msgpack byte flipped")
bad("truncated_body", good[:-3], "Truncated")
bad("truncated_header", good[:3], "Truncated")
bad("trailing_bytes", good + b"\x00", "TrailingBytes")
bad("oversized_length", pack_value(4, BODY_BYTES_MAX + 1) + b"\x00" * 8, "FrameTooLarge",
    note="refused from the 4-byte header alone")
bad("body_shorter_than_id", pack_value(4, 31) + b"\x00" * 31, "BodyTooShort")
junk = b"\x94\x02"  # an array of four that ends after its first element
bad("not_msgpack", pack_value(4, 32 + len(junk)) + sha256(junk).digest() + junk, "Msgpack")
notarr = packb({"a": 1})
bad("not_an_array", pack_value(4, 32 + len(notarr)) + sha256(notarr).digest() + notarr,
    "Malformed")
short = packb([flags.whisper, A, T])
bad("no_sub_flag", pack_value(4, 32 + len(short)) + sha256(short).digest() + short, "Malformed")
strsender = packb([flags.whisper, A.decode(), T, flags.peers, []])
bad("sender_as_str", pack_value(4, 32 + len(strsender)) + sha256(strsender).digest() + strsender,
    "Malformed")
extra = packb([flags.whisper, A, T, flags.peers]) + b"\xc0"
bad("msgpack_trailing", pack_value(4, 32 + len(extra)) + sha256(extra).digest() + extra, "Msgpack")


def bomb(name, data, method):
    bad(name, pack_value(4, len(data)) + data, "DecompressedTooLarge", (method,),
        note="inflates to %d bytes, one past the limit" % (BODY_BYTES_MAX + 1))


zeros = b"\x00" * (BODY_BYTES_MAX + 1)
co = zlib.compressobj(9, zlib.DEFLATED, 15)
bomb("bomb_zlib", co.compress(zeros) + co.flush(), flags.zlib)
co = zlib.compressobj(9, zlib.DEFLATED, 31)
bomb("bomb_gzip", co.compress(zeros) + co.flush(), flags.gzip)
bomb("bomb_bz2", bz2.compress(zeros, 9), flags.bz2)
bomb("bomb_xz", lzma.compress(zeros), flags.lzma)

json.dump({
    "version": 1,
    "description": "p2p.today frames made by py2p 0.7.878 (see SPEC.md section 25 and "
                   "make_vectors.py). frame_hex is the whole frame, length prefix included; "
                   "link_compression is what the peer advertised on the link (py2p sends with "
                   "the first method of its own list [zlib 19, gzip 17, bz2 16, lzma 18] that "
                   "is in it; a receiver tries the advertised methods in order); compression "
                   "is what the frame carries; body_hex is the uncompressed sha256 id followed "
                   "by the msgpack array; args are the packets after the sub-flag, as tagged "
                   "msgpack values (int as a decimal string, f64 as its 8 big-endian bytes in hex). "
                   "Invalid entries fail, decoded as one frame with their link_compression, "
                   "with the named weft P2ptError variant.",
    "timestamp": T,
    "protocol_ids": {"mesh": MESH.id.decode(), "sync1": SYNC.id.decode(),
                     "sync0": Protocol("sync0", "Plaintext").id.decode(),
                     "chord": Protocol("chord", "Plaintext").id.decode(),
                     "meshSSL": Protocol("mesh", "SSL").id.decode()},
    "node_ids": [{"out_addr": repr(ADDR_A), "protocol": "mesh", "salt": "weft-vector-a",
                  "id": A.decode()},
                 {"out_addr": repr(ADDR_B), "protocol": "mesh", "salt": "weft-vector-b",
                  "id": B.decode()},
                 {"out_addr": repr(ADDR_A), "protocol": "sync1", "salt": "weft-vector-s",
                  "id": S.decode()}],
    "base58_ints": [{"hex": "%x" % n, "b58": b58encode_int(n).decode()}
                    for n in (0, 1, 57, 58, 2**64 - 1, 2**256 - 1, 2**384 - 1)],
    "vectors": valid,
    "invalid": invalid,
}, sys.stdout, indent=1)
sys.stdout.write("\n")
