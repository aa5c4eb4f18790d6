"""Regenerate tests/vectors/secagg_vectors.json with the PyNaCl implementation (run once; the JSON is committed
and tests/test_crypto_vectors.py checks that the code still reproduces it; the browser's libsodium-wrappers
bridge is tested against the same file). Usage: python tests/vectors/generate_secagg_vectors.py [--check]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flcrypto import default_crypto
from privacy.backends import pure_backend
from privacy.fixedpoint import FixedPointConfig, quantize
from privacy.randomness import RandomStream
from privacy.secagg import GroupConfig, neighbour_graph, partition, shamir
from privacy.secagg.client import encode_survivors
from privacy.secagg.config import expand_mask, pair_seed, self_commitment, self_seed, share_ad, share_key
from privacy.secagg.messages import Message

PATH = Path(__file__).with_name("secagg_vectors.json")
C = default_crypto()
MESSAGE = bytes.fromhex("666c2d636f6f7264696e61746f7220736563616767207465737420766563746f72")  # "fl-coordinator secagg test vector"


def vector_cfg() -> GroupConfig:
    """The group every KDF vector uses: round 42, group 3, members alice/bob/carol, d = 16, m = 16."""
    ids = ("alice", "bob", "carol")
    return GroupConfig(42, 3, ids, {k: C.ed25519_public_key(bytes([i]) * 32) for i, k in enumerate(ids)}, 16, 16,
                       bytes(range(200, 232)))


def shamir_random():
    counter = [0]

    def det_random(n: int) -> bytes:
        counter[0] += 1
        return C.prg(C.blake2b(counter[0].to_bytes(4, "little"), key=b"shamir-test-vector-key-32-bytes!"), n)

    return det_random


def build() -> dict:
    seed = bytes(range(32))
    a_sk, b_sk = bytes(range(1, 33)), bytes(range(101, 133))
    shared = C.x25519(a_sk, C.x25519_public_key(b_sk))
    cfg = vector_cfg()
    k_share = share_key(C, shared, cfg, "alice", "bob")
    p_seed = pair_seed(C, shared, cfg, "alice", "bob")
    b_input = bytes(range(50, 82))
    s_seed = self_seed(C, b_input, cfg, "alice")
    nonce = bytes(range(24))
    ad = share_ad(cfg, "alice", "bob")
    pb = pure_backend()
    masks = {}
    for m in (16, 20, 32):
        mcfg = GroupConfig(42, 3, cfg.members, cfg.identity_keys, 16, m, cfg.public_seed)
        masks[f"m{m}"] = list(expand_mask(C, p_seed, mcfg, pb))
    msg = Message("advertise", 42, 3, "alice", "server",
                  {"b_commit": self_commitment(C, b_input, cfg, "alice"), "c_pk": C.x25519_public_key(a_sk),
                   "s_pk": C.x25519_public_key(b_sk)}).sign(C, seed)
    members = [f"c{i}" for i in range(10)]
    stream = RandomStream(bytes(range(7, 39)), C)
    first = stream.bytes(64)
    uniforms = stream.uniforms(4, pb)
    fp = FixedPointConfig(clip=1.0, bits=8, modulus_bits=16)
    x = [-1.5, -0.51, -0.001, 0.0, 0.25, 0.3333, 0.999, 2.0]
    q = quantize(x, fp, RandomStream(bytes(range(9, 41)), C), pb)
    secret = bytes(range(32))
    shares = shamir.split(secret, 5, 3, shamir_random())
    return {
        "ed25519": {"seed": seed.hex(), "public_key": C.ed25519_public_key(seed).hex(), "message": MESSAGE.hex(),
                    "signature": C.ed25519_sign(seed, MESSAGE).hex()},
        "x25519": {"a_secret": a_sk.hex(), "b_secret": b_sk.hex(), "a_public": C.x25519_public_key(a_sk).hex(),
                   "b_public": C.x25519_public_key(b_sk).hex(), "shared": shared.hex()},
        "kdf": {"round": 42, "group": 3, "a": "alice", "b": "bob", "share_key": k_share.hex(),
                "pair_seed": p_seed.hex(), "self_seed_input": b_input.hex(), "self_seed": s_seed.hex(),
                "self_commitment": self_commitment(C, b_input, cfg, "alice").hex()},
        "aead": {"key": k_share.hex(), "nonce": nonce.hex(), "plaintext": MESSAGE.hex(), "ad": ad.hex(),
                 "ciphertext": C.aead_encrypt(k_share, nonce, MESSAGE, ad).hex()},
        "prg": {"seed": p_seed.hex(), "first_64_bytes": C.prg(p_seed, 64).hex(),
                "self_mask_first_64_bytes": C.prg(s_seed, 64).hex()},
        "mask_elements": {"seed": p_seed.hex(), "d": 16, **masks},
        "blake2b": {"key": b"key".hex(), "message": MESSAGE.hex(),
                    "digest32": C.blake2b(MESSAGE, key=b"key").hex()},
        "message": {"identity_seed": seed.hex(), "phase": msg.phase, "round": msg.round, "group": msg.group,
                    "sender": msg.sender, "recipient": msg.recipient,
                    "items": {k: v.hex() for k, v in msg.items.items()}, "body": msg.signed_bytes().hex(),
                    "signature_input": msg.signature_input(C).hex(), "signature": msg.signature.hex(),
                    "wire": msg.to_bytes().hex()},
        "survivors": {"ids": ["carol", "alice", "bob"], "encoding": encode_survivors(("carol", "alice", "bob")).hex()},
        "graph": {"members": members, "k": 4, "seed": bytes(range(32)).hex(),
                  "neighbours": {u: sorted(v) for u, v in sorted(neighbour_graph(members, 4, bytes(range(32))).items())}},
        "partition": {"clients": [f"c{i}" for i in range(11)], "group_size": 3, "seed": bytes(range(32)).hex(),
                      "groups": partition([f"c{i}" for i in range(11)], 3, bytes(range(32)))},
        "random_stream": {"seed": bytes(range(7, 39)).hex(), "first_request_64_bytes": first.hex(),
                          "second_request_4_uniforms": uniforms},
        "quantize": {"clip": 1.0, "bits": 8, "modulus_bits": 16, "stream_seed": bytes(range(9, 41)).hex(), "x": x,
                     "q": list(q)},
        "shamir": {"secret": secret.hex(), "n": 5, "t": 3,
                   "randomness": "prg(blake2b(counter_le32, key=b'shamir-test-vector-key-32-bytes!'), n) per coefficient",
                   "prime": "2^521 - 1", "shares": [[x, hex(y)] for x, y in shares]},
    }


if __name__ == "__main__":
    text = json.dumps(build(), indent=2) + "\n"
    if "--check" in sys.argv:
        sys.exit(0 if PATH.read_text() == text else "vectors differ from the committed file")
    PATH.write_text(text)
    print(f"wrote {PATH}")
