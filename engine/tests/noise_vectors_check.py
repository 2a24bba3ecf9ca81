# An independent check of SPEC.md §21.9 (not run by CI): Python's noiseprotocol 0.3, argon2-cffi
# and cryptography reproduce every vector.
#   python3 -m venv /tmp/nv && /tmp/nv/bin/pip install noiseprotocol argon2-cffi
#   /tmp/nv/bin/python -W ignore engine/tests/noise_vectors_check.py SPEC.md
import re, sys
from noise.connection import NoiseConnection, Keypair
spec = open(sys.argv[1]).read()
block = spec.split("<!-- noise vectors: begin")[1].split("<!-- noise vectors: end")[0]
fields = {}
cur = None
for line in block.splitlines():
    m = re.match(r"^(\S.*) \((\d+) bytes\):$", line)
    if m:
        cur = m.group(1); fields[cur] = ""
    elif line.startswith("  ") and cur:
        fields[cur] += line.strip()
F = {k: bytes.fromhex(v) for k, v in fields.items()}
def get(prefix):
    return next(v for k, v in F.items() if k.startswith(prefix))
psk = get("network secret")
def conn(role, static, eph):
    c = NoiseConnection.from_name(b"Noise_XXpsk0_25519_AESGCM_SHA256")
    c.set_as_initiator() if role == "i" else c.set_as_responder()
    c.set_prologue(b"weft noise v1")
    c.set_psks(psk)
    c.set_keypair_from_private_bytes(Keypair.STATIC, static)
    c.set_keypair_from_private_bytes(Keypair.EPHEMERAL, eph)
    c.start_handshake()
    return c
i = conn("i", get("initiator static secret"), get("initiator ephemeral secret"))
r = conn("r", get("responder static secret"), get("responder ephemeral secret"))
m1 = i.write_message(b"")
assert b"\x00\x30" + m1 == get("message 1"), "message 1"
r.read_message(m1)
m2 = r.write_message(get("responder identity payload"))
assert len(m2).to_bytes(2, "big") + m2 == get("message 2"), "message 2"
p = i.read_message(m2)
m3 = i.write_message(get("initiator identity payload"))
assert len(m3).to_bytes(2, "big") + m3 == get("message 3"), "message 3"
r.read_message(m3)
t1 = i.encrypt(get("plaintext"))
assert len(t1).to_bytes(2, "big") + t1 == get("first transport message, initiator"), "t1"
t2 = r.encrypt(get("plaintext"))
assert len(t2).to_bytes(2, "big") + t2 == get("first transport message, responder"), "t2"
print("all §21.9 vectors reproduced by noiseprotocol", len(F), "fields")
# The network key: argon2id with SPEC.md §21.7's parameters.
from argon2.low_level import hash_secret_raw, Type
key = hash_secret_raw(b"example secret", b"weft network secret v1", time_cost=2, memory_cost=19456,
                      parallelism=1, hash_len=32, type=Type.ID, version=19)
assert key == psk, "argon2id key"
# The identity payloads: ed25519 signatures over the domain and the static public key.
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
for side in ("initiator", "responder"):
    payload = get(side + " identity payload")
    static_pub = X25519PrivateKey.from_private_bytes(get(side + " static secret")).public_key()
    raw = static_pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert raw == get(side + " static public"), side + " static public"
    Ed25519PublicKey.from_public_bytes(payload[:32]).verify(payload[32:], b"weft noise static key v1\0" + raw)
print("argon2id key, static publics and identity signatures reproduced")
