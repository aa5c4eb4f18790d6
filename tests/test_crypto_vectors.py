"""Crypto test vectors for secure aggregation (tests/vectors/secagg_vectors.json). The browser's
libsodium-wrappers implementation must reproduce the same bytes; here the PyNaCl implementation must still
reproduce them, and selected values are re-derived by independent routes (hashlib, RFC formulas)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from flcrypto import default_crypto
from privacy.secagg import GroupConfig, shamir
from privacy.secagg.config import pair_seed, self_seed, share_ad, share_key

V = json.loads((Path(__file__).parent / "vectors" / "secagg_vectors.json").read_text())
C = default_crypto()
h = bytes.fromhex


def _cfg() -> GroupConfig:
    ids = ("alice", "bob", "carol")
    return GroupConfig(42, 3, ids, {k: C.ed25519_public_key(bytes([i]) * 32) for i, k in enumerate(ids)}, 16, 16,
                       bytes(range(200, 232)))


def test_ed25519_vector() -> None:
    e = V["ed25519"]
    assert C.ed25519_public_key(h(e["seed"])).hex() == e["public_key"]
    assert C.ed25519_sign(h(e["seed"]), h(e["message"])).hex() == e["signature"]
    C.ed25519_verify(h(e["public_key"]), h(e["message"]), h(e["signature"]))


def test_x25519_kdf_aead_prg_vectors() -> None:
    x, k, a, p = V["x25519"], V["kdf"], V["aead"], V["prg"]
    assert C.x25519_public_key(h(x["a_secret"])).hex() == x["a_public"]
    assert C.x25519(h(x["a_secret"]), h(x["b_public"])).hex() == x["shared"]
    assert C.x25519(h(x["b_secret"]), h(x["a_public"])).hex() == x["shared"]
    cfg = _cfg()
    shared = h(x["shared"])
    assert share_key(C, shared, cfg, "alice", "bob").hex() == k["share_key"]
    assert share_key(C, shared, cfg, "bob", "alice").hex() == k["share_key"]  # symmetric
    assert pair_seed(C, shared, cfg, "alice", "bob").hex() == k["pair_seed"]
    assert self_seed(C, h(k["self_seed_input"]), cfg, "alice").hex() == k["self_seed"]
    # independent route for the keyed BLAKE2b KDF: hashlib with the documented message layout
    msg = b"fl-secagg-pair" + (42).to_bytes(8, "little") + (3).to_bytes(4, "little") + \
        (5).to_bytes(2, "little") + b"alice" + (3).to_bytes(2, "little") + b"bob"
    assert hashlib.blake2b(msg, key=shared, digest_size=32).hexdigest() == k["pair_seed"]
    assert share_ad(cfg, "alice", "bob").hex() == a["ad"]
    assert C.aead_encrypt(h(a["key"]), h(a["nonce"]), h(a["plaintext"]), h(a["ad"])).hex() == a["ciphertext"]
    assert C.aead_decrypt(h(a["key"]), h(a["nonce"]), h(a["ciphertext"]), h(a["ad"])).hex() == a["plaintext"]
    assert C.prg(h(p["seed"]), 64).hex() == p["first_64_bytes"]
    assert C.prg(h(k["self_seed"]), 64).hex() == p["self_mask_first_64_bytes"]
    b = V["blake2b"]
    assert C.blake2b(h(b["message"]), key=h(b["key"])).hex() == b["digest32"]
    assert hashlib.blake2b(h(b["message"]), key=h(b["key"]), digest_size=32).hexdigest() == b["digest32"]


def test_shamir_vector_and_reconstruction() -> None:
    s = V["shamir"]
    counter = [0]

    def det_random(n: int) -> bytes:
        counter[0] += 1
        return C.prg(C.blake2b(counter[0].to_bytes(4, "little"), key=b"shamir-test-vector-key-32-bytes!"), n)

    shares = shamir.split(h(s["secret"]), s["n"], s["t"], det_random)
    assert [[x, hex(y)] for x, y in shares] == s["shares"]
    import itertools

    for subset in itertools.combinations(shares, 3):
        assert shamir.combine(list(subset), 3).hex() == s["secret"]
    bad = [*shares[:2], (shares[2][0], (shares[2][1] + 1) % shamir.PRIME)]
    with contextlib.suppress(ValueError):  # a wrong share is detected (does not fit in 32 bytes) …
        assert shamir.combine(bad, 3) != h(s["secret"])  # … or gives a wrong secret, never the right one
