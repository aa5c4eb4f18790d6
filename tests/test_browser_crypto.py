"""The libsodium-wrappers implementation of flcrypto.Crypto (client_pyodide.sodium_crypto), running in Pyodide
in headless Chromium, against tests/vectors/secagg_vectors.json byte for byte – through the same client-core
code (KDFs, mask expansion, signed messages, RandomStream, quantization, Shamir) the native client runs – and
against PyNaCl on random inputs; error behaviour (bad signatures, tampered AEAD, low-order points) matches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser_support import browser_page  # noqa: F401  (module-scoped fixture)

from flcrypto import CryptoError, DecryptionError, SignatureError, default_crypto

pytestmark = pytest.mark.browser

VECTORS = (Path(__file__).parent / "vectors" / "secagg_vectors.json").read_text()
V = json.loads(VECTORS)

BROWSER_VECTORS = """
import json
from flcrypto import default_crypto
from client_pyodide import runtime
from privacy.backends import pure_backend
from privacy.fixedpoint import FixedPointConfig, quantize
from privacy.randomness import RandomStream
from privacy.secagg import GroupConfig, neighbour_graph, partition, shamir
from privacy.secagg.client import decode_survivors, encode_survivors
from privacy.secagg.config import expand_mask, pair_seed, self_commitment, self_seed, share_ad, share_key
from privacy.secagg.messages import Message

V = json.loads(VECTORS)
C = default_crypto()
h = bytes.fromhex
ids = ("alice", "bob", "carol")
def cfg(m=16):
    return GroupConfig(42, 3, ids, {k: C.ed25519_public_key(bytes([i]) * 32) for i, k in enumerate(ids)}, 16, m,
                       bytes(range(200, 232)))
r = {"impl": C.name}
e, x, k, a, p = V["ed25519"], V["x25519"], V["kdf"], V["aead"], V["prg"]
r["ed25519_public_key"] = C.ed25519_public_key(h(e["seed"])).hex()
r["ed25519_signature"] = C.ed25519_sign(h(e["seed"]), h(e["message"])).hex()
C.ed25519_verify(h(e["public_key"]), h(e["message"]), h(e["signature"]))
r["x25519_a_public"] = C.x25519_public_key(h(x["a_secret"])).hex()
r["x25519_ab"] = C.x25519(h(x["a_secret"]), h(x["b_public"])).hex()
r["x25519_ba"] = C.x25519(h(x["b_secret"]), h(x["a_public"])).hex()
shared = h(x["shared"])
r["share_key"] = [share_key(C, shared, cfg(), "alice", "bob").hex(), share_key(C, shared, cfg(), "bob", "alice").hex()]
r["pair_seed"] = [pair_seed(C, shared, cfg(), "alice", "bob").hex(), pair_seed(C, shared, cfg(), "bob", "alice").hex()]
r["self_seed"] = self_seed(C, h(k["self_seed_input"]), cfg(), "alice").hex()
r["self_commitment"] = self_commitment(C, h(k["self_seed_input"]), cfg(), "alice").hex()
r["share_ad"] = share_ad(cfg(), "alice", "bob").hex()
r["aead_ct"] = C.aead_encrypt(h(a["key"]), h(a["nonce"]), h(a["plaintext"]), h(a["ad"])).hex()
r["aead_pt"] = C.aead_decrypt(h(a["key"]), h(a["nonce"]), h(a["ciphertext"]), h(a["ad"])).hex()
r["prg64"] = C.prg(h(p["seed"]), 64).hex()
r["prg_self64"] = C.prg(h(k["self_seed"]), 64).hex()
b = V["blake2b"]
r["blake2b"] = C.blake2b(h(b["message"]), key=h(b["key"])).hex()
me = V["mask_elements"]
for name, be in (("pure", pure_backend()), ("wasm", runtime.backend())):
    r["mask_" + name] = {str(m): [int(v) for v in expand_mask(C, h(me["seed"]), cfg(m), be)] for m in (16, 20, 32)}
mv = V["message"]
items = {kk: h(vv) for kk, vv in mv["items"].items()}
msg = Message(mv["phase"], mv["round"], mv["group"], mv["sender"], mv["recipient"], items)
r["message_wire"] = msg.sign(C, h(mv["identity_seed"])).to_bytes().hex()
parsed = Message.from_bytes(h(mv["wire"]))
parsed.verify(C, C.ed25519_public_key(h(mv["identity_seed"])))
r["message_roundtrip"] = parsed == msg.sign(C, h(mv["identity_seed"]))
sv = V["survivors"]
r["survivors"] = [encode_survivors(tuple(sv["ids"])).hex(), list(decode_survivors(h(sv["encoding"])))]
g = V["graph"]
r["graph"] = {u: sorted(v) for u, v in neighbour_graph(g["members"], g["k"], h(g["seed"])).items()}
pp = V["partition"]
r["partition"] = partition(pp["clients"], pp["group_size"], h(pp["seed"]))
rs = V["random_stream"]
s = RandomStream(h(rs["seed"]), C)
r["stream_bytes"] = s.bytes(64).hex()
r["stream_uniforms"] = list(s.uniforms(4))
q = V["quantize"]
qc = FixedPointConfig(q["clip"], q["bits"], q["modulus_bits"])
r["quantize"] = {name: [int(v) for v in quantize(q["x"], qc, RandomStream(h(q["stream_seed"]), C), be)]
                 for name, be in (("pure", pure_backend()), ("wasm", runtime.backend()))}
sh = V["shamir"]
counter = [0]
def det_random(n):
    counter[0] += 1
    return C.prg(C.blake2b(counter[0].to_bytes(4, "little"), key=b"shamir-test-vector-key-32-bytes!"), n)
shares = shamir.split(h(sh["secret"]), sh["n"], sh["t"], det_random)
r["shamir"] = [[xx, hex(yy)] for xx, yy in shares]
r["shamir_combine"] = shamir.combine(shares[1:4], 3).hex()
result = r
"""


@pytest.fixture(scope="module")
def browser_results(browser_page):  # noqa: F811
    return browser_page.run(f"VECTORS = {json.dumps(VECTORS)}\n" + BROWSER_VECTORS)


def test_runs_on_libsodium_wrappers(browser_results) -> None:
    assert browser_results["impl"] == "libsodium-wrappers"


def test_primitives_match_vectors(browser_results) -> None:
    r = browser_results
    assert r["ed25519_public_key"] == V["ed25519"]["public_key"]
    assert r["ed25519_signature"] == V["ed25519"]["signature"]
    assert r["x25519_a_public"] == V["x25519"]["a_public"]
    assert r["x25519_ab"] == r["x25519_ba"] == V["x25519"]["shared"]
    assert r["aead_ct"] == V["aead"]["ciphertext"]
    assert r["aead_pt"] == V["aead"]["plaintext"]
    assert r["prg64"] == V["prg"]["first_64_bytes"]
    assert r["prg_self64"] == V["prg"]["self_mask_first_64_bytes"]
    assert r["blake2b"] == V["blake2b"]["digest32"]


def test_secagg_derivations_match_vectors(browser_results) -> None:
    r, k = browser_results, V["kdf"]
    assert r["share_key"] == [k["share_key"]] * 2
    assert r["pair_seed"] == [k["pair_seed"]] * 2
    assert r["self_seed"] == k["self_seed"]
    assert r["self_commitment"] == k["self_commitment"]
    assert r["share_ad"] == V["aead"]["ad"]
    for be in ("pure", "wasm"):
        assert r["mask_" + be] == {str(m): V["mask_elements"][f"m{m}"] for m in (16, 20, 32)}
    assert r["message_wire"] == V["message"]["wire"]
    assert r["message_roundtrip"] is True
    assert r["survivors"] == [V["survivors"]["encoding"], sorted(V["survivors"]["ids"])]
    assert r["graph"] == V["graph"]["neighbours"]
    assert r["partition"] == V["partition"]["groups"]
    assert r["stream_bytes"] == V["random_stream"]["first_request_64_bytes"]
    assert r["stream_uniforms"] == V["random_stream"]["second_request_4_uniforms"]
    assert r["quantize"] == {"pure": V["quantize"]["q"], "wasm": V["quantize"]["q"]}
    assert r["shamir"] == V["shamir"]["shares"]
    assert r["shamir_combine"] == V["shamir"]["secret"]


def test_random_inputs_and_errors_match_pynacl(browser_page) -> None:  # noqa: F811
    """Random lengths (0, block edges, > 64 KiB) and keys: same bytes as PyNaCl; same exception types."""
    out = browser_page.run("""
from flcrypto import default_crypto, CryptoError, DecryptionError, SignatureError
C = default_crypto()
res = {"random_len": [len(C.random_bytes(n)) for n in (0, 1, 33)],
       "random_differs": C.random_bytes(32) != C.random_bytes(32)}
cases = []
for i, n in enumerate((0, 1, 63, 64, 65, 127, 128, 1000, 70000)):
    seed = C.blake2b(bytes([i]), digest_size=32)
    msg = C.prg(seed, n)
    key = seed[: (i * 7) % 65]
    cases.append({"n": n, "prg": C.prg(seed, n).hex()[:400], "prg_tail": C.prg(seed, n)[-32:].hex(),
                  "b2": C.blake2b(msg, key=key, digest_size=16 + (i * 5) % 49).hex(),
                  "sig": C.ed25519_sign(seed, msg).hex(), "pk": C.ed25519_public_key(seed).hex(),
                  "xpk": C.x25519_public_key(seed).hex(),
                  "ct": C.aead_encrypt(seed, seed[:24], msg, key).hex()[:400]})
res["cases"] = cases
errs = {}
seed = bytes(range(32))
sig = C.ed25519_sign(seed, b"m")
pk = C.ed25519_public_key(seed)
for name, call, exc in [
        ("bad_sig", lambda: C.ed25519_verify(pk, b"m2", sig), SignatureError),
        ("short_sig", lambda: C.ed25519_verify(pk, b"m", sig[:10]), SignatureError),
        ("tampered", lambda: C.aead_decrypt(seed, seed[:24], bytes([1]) + C.aead_encrypt(seed, seed[:24], b"x")[1:]), DecryptionError),
        ("wrong_ad", lambda: C.aead_decrypt(seed, seed[:24], C.aead_encrypt(seed, seed[:24], b"x", b"a"), b"b"), DecryptionError),
        ("short_ct", lambda: C.aead_decrypt(seed, seed[:24], b"abc"), DecryptionError),
        ("low_order", lambda: C.x25519(seed, bytes(32)), CryptoError),
        ("bad_seed_len", lambda: C.prg(b"short", 8), CryptoError),
        ("bad_digest", lambda: C.blake2b(b"", digest_size=8), CryptoError)]:
    try:
        call()
        errs[name] = None
    except exc as e:
        errs[name] = type(e).__name__
res["errors"] = errs
result = res
""")
    C = default_crypto()
    assert out["random_len"] == [0, 1, 33] and out["random_differs"]
    for i, case in enumerate(out["cases"]):
        n = case["n"]
        seed = C.blake2b(bytes([i]), digest_size=32)
        msg = C.prg(seed, n)
        key = seed[: (i * 7) % 65]
        assert case["prg"] == msg.hex()[:400] and case["prg_tail"] == msg[-32:].hex()
        assert case["b2"] == C.blake2b(msg, key=key, digest_size=16 + (i * 5) % 49).hex()
        assert case["sig"] == C.ed25519_sign(seed, msg).hex()
        assert case["pk"] == C.ed25519_public_key(seed).hex()
        assert case["xpk"] == C.x25519_public_key(seed).hex()
        assert case["ct"] == C.aead_encrypt(seed, seed[:24], msg, key).hex()[:400]
    assert all(v is not None for v in out["errors"].values()), out["errors"]
    # the same exception classes PyNaCl's implementation raises
    assert out["errors"]["bad_sig"] == out["errors"]["short_sig"] == SignatureError.__name__
    assert out["errors"]["tampered"] == out["errors"]["wrong_ad"] == DecryptionError.__name__
    assert out["errors"]["low_order"] == out["errors"]["bad_seed_len"] == CryptoError.__name__
