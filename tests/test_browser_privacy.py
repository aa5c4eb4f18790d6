"""The client's privacy path in Pyodide (headless Chromium) against CPython: a whole SecAgg+ group round with the
same inputs and seeds produces byte-identical messages (signed advertise/shares/masked/consistency/unmask) in the
browser – libsodium-wrappers + WasmBackend – and in CPython – PyNaCl + numpy/pure; fixed-point quantization,
clip → quantize → DP noise → field (prepare_update) and every mod-2^m vector operation are bit-identical."""

from __future__ import annotations

import pytest
from browser_support import browser_page  # noqa: F401  (module-scoped fixture)

from flcrypto import default_crypto
from privacy.backends import numpy_backend, pure_backend

pytestmark = pytest.mark.browser

# Runs unchanged in Pyodide and in CPython: one SecAgg+ group with deterministic "OS randomness" (a counter-keyed
# PRG replaces random_bytes, so secret keys and AEAD nonces are the same in both runtimes).
SECAGG_ROUND = r'''
import hashlib
from privacy.fixedpoint import FixedPointConfig, encode
from privacy.randomness import RandomStream
from privacy.secagg import GroupConfig, SecAggClient, SecAggServer

class DetCrypto:
    def __init__(self, inner):
        self.inner, self.name, self.n = inner, "det-" + inner.name, 0
    def random_bytes(self, n):
        self.n += 1
        return self.inner.prg(self.inner.blake2b(self.n.to_bytes(8, "little"), key=b"r" * 32), n)
    def __getattr__(self, attr):
        return getattr(self.inner, attr)

PHASES = ["advertise", "shares", "masked", "consistency", "unmask"]

def run_round(crypto, client_be, server_be, n, d, m, drop):
    c = DetCrypto(crypto)
    ids = [f"u{i}" for i in range(n)]
    seeds = {u: c.blake2b(u.encode(), key=b"k" * 32) for u in ids}
    cfg = GroupConfig(7, 2, tuple(ids), {u: c.ed25519_public_key(s) for u, s in seeds.items()}, d, m, b"s" * 32)
    fp = FixedPointConfig(clip=1.0, bits=m - 4, modulus_bits=m)
    inputs = {}
    for i, u in enumerate(ids):
        st = RandomStream(c.blake2b(b"data" + bytes([i]), key=b"d" * 32), c)
        xs = [2.4 * v - 1.2 for v in st.uniforms(d)]
        inputs[u] = encode(xs, fp, st, client_be)
    clients = {u: SecAggClient(cfg, u, seeds[u], inputs[u], client_be, c) for u in ids}
    server = SecAggServer(cfg, server_be, c)
    transcript = []
    for u, cl in clients.items():
        msg = cl.start()
        transcript.append(["advertise", u, hashlib.sha256(msg).hexdigest()])
        server.receive(msg)
    while server.phase != "done":
        for u, msg in server.close_phase().items():
            if u in drop and PHASES.index(server.phase) >= PHASES.index(drop[u]):
                continue
            for reply in clients[u].handle(msg):
                transcript.append([server.phase, u, hashlib.sha256(reply).hexdigest()])
                if server.phase == "masked" and u == ids[0]:
                    transcript.append(["masked-bytes", u, reply.hex()[:2000]])
                server.receive(reply)
    res = server.result
    plain = [0] * d
    for u in res.survivors:
        plain = [(a + int(b)) % (1 << m) for a, b in zip(plain, inputs[u])]
    return {"transcript": transcript, "sum": [int(v) for v in res.sum], "plain": plain,
            "survivors": list(res.survivors), "backend": client_be.name}

CASES = [dict(n=5, d=1000, m=20, drop={"u3": "masked"}), dict(n=3, d=257, m=16, drop={}),
         dict(n=4, d=300, m=32, drop={"u0": "unmask"})]
'''

BROWSER_SECAGG = SECAGG_ROUND + '''
from client_pyodide import runtime
from flcrypto import default_crypto
from privacy.backends import pure_backend
result = [run_round(default_crypto(), runtime.backend(), pure_backend(), **case) for case in CASES]
'''


def _cpython_rounds(client_be, server_be):
    ns: dict = {}
    exec(SECAGG_ROUND, ns)
    return [ns["run_round"](default_crypto(), client_be, server_be, **case) for case in ns["CASES"]]


def test_secagg_round_in_browser_equals_cpython(browser_page) -> None:  # noqa: F811
    browser = browser_page.run(BROWSER_SECAGG)
    assert [r["backend"] for r in browser] == ["wasm"] * 3
    for be in (numpy_backend(), pure_backend()):
        native = _cpython_rounds(be, be)
        for b, c in zip(browser, native, strict=True):
            assert len(b["transcript"]) == len(c["transcript"]) > 10
            for tb, tc in zip(b["transcript"], c["transcript"], strict=True):
                assert tb == tc, f"first differing message: browser {tb[:2]} vs CPython {tc[:2]}"
            assert b["sum"] == c["sum"] == b["plain"]  # the unmasked sum is the plaintext sum of the survivors
            assert b["survivors"] == c["survivors"]
    assert browser[0]["survivors"] == ["u0", "u1", "u2", "u4"]  # u3 dropped before sending its masked input


QUANT_INPUTS = """
import json, math, struct
from privacy.randomness import RandomStream
from flcrypto import default_crypto
C = default_crypto()
st = RandomStream(bytes(range(32)), C)
n = 5000
xs = [4.0 * v - 2.0 for v in st.uniforms(n)]
special = [0.0, -0.0, 1.0, -1.0, 1.5, -1.5, 1e-300, -1e-300, 5e-324, 0.5, -0.5, 0.25 / 127, 1 - 2**-53,
           -(1 - 2**-53), 1e300, -1e300, 2.0 / 254, 3.0 / 254]
xs[: len(special)] = special
us = st.uniforms(n)
us[:6] = [0.0, 0.0, 1 - 2**-53, 0.5, 0.0, 0.999999]
"""

BROWSER_QUANT = QUANT_INPUTS + """
from client_pyodide import runtime
from privacy.backends import pure_backend
from privacy.client_pipeline import DistributedDPConfig, prepare_update
wb, pb = runtime.backend(), pure_backend()
out = {}
for clip, bits in ((1.0, 8), (0.3, 16), (2.5, 31)):
    scale = ((1 << (bits - 1)) - 1) / clip
    out[f"{clip}/{bits}"] = {"wasm": list(wb.stochastic_round(xs, clip, scale, us)),
                             "pure": pb.stochastic_round(xs, clip, scale, us)}
out["scale"] = [list(wb.scale(xs, 0.7)) == pb.scale(xs, 0.7)]
out["nonfinite"] = [wb.first_nonfinite(xs), wb.first_nonfinite(xs[:10] + [float("nan")]),
                    wb.first_nonfinite([1.0, float("-inf")])]
cfg = DistributedDPConfig(l2_clip=3.0, noise_multiplier=0.8, bits=12, modulus_bits=24, min_contributors=3,
                          dimension=n)
for name, be in (("wasm", wb), ("pure", pb)):
    field, norm = prepare_update(xs[50:] + [0.01] * 50, cfg, RandomStream(b"p" * 32, C), be)
    out["prepare_" + name] = [list(field), norm]
result = out
"""


def test_quantization_and_prepare_update_bit_identical(browser_page) -> None:  # noqa: F811
    from privacy.client_pipeline import DistributedDPConfig, prepare_update

    out = browser_page.run(BROWSER_QUANT)
    ns: dict = {}
    exec(QUANT_INPUTS, ns)
    xs, us, pb = ns["xs"], ns["us"], pure_backend()
    for clip, bits in ((1.0, 8), (0.3, 16), (2.5, 31)):
        scale = ((1 << (bits - 1)) - 1) / clip
        want = pb.stochastic_round(xs, clip, scale, us)
        got = out[f"{clip}/{bits}"]
        assert got["wasm"] == got["pure"] == want
        assert [int(v) for v in numpy_backend().stochastic_round(xs, clip, scale, us)] == want
    assert out["scale"] == [True]
    assert out["nonfinite"] == [None, 10, 1]
    cfg = DistributedDPConfig(l2_clip=3.0, noise_multiplier=0.8, bits=12, modulus_bits=24, min_contributors=3,
                              dimension=len(xs))
    from privacy.randomness import RandomStream

    field, norm = prepare_update(xs[50:] + [0.01] * 50, cfg, RandomStream(b"p" * 32, default_crypto()), pb)
    assert out["prepare_wasm"] == out["prepare_pure"] == [list(field), norm]


def test_field_operations_match_pure_backend(browser_page) -> None:  # noqa: F811
    out = browser_page.run("""
from client_pyodide import runtime
from privacy.backends import pure_backend
from flcrypto import default_crypto
C = default_crypto()
wb, pb = runtime.backend(), pure_backend()
res = {}
for m in (1, 8, 15, 16, 17, 20, 31, 32):
    for d in (0, 1, 7, 33, 1001):
        a = pb.field_from_bytes(C.prg(bytes([m, d % 256]) * 16, 4 * d), d, m)
        b = pb.field_from_bytes(C.prg(bytes([d % 256, m]) * 16, 4 * d), d, m)
        ints = [int(v) - (1 << 31) for v in pb.field_from_bytes(C.prg(bytes([m]) * 32, 4 * d), d, 32)]
        acc = wb.zeros_field(d, m)
        acc = wb.iadd_mod(acc, a, m)
        acc = wb.isub_mod(acc, b, m)
        acc = wb.iadd_mod(acc, b, m)
        res[f"{m}/{d}"] = [list(wb.add_mod(a, b, m)) == list(pb.add_mod(a, b, m)),
                           list(wb.sub_mod(a, b, m)) == list(pb.sub_mod(a, b, m)),
                           list(acc) == list(a),
                           list(wb.ints_to_field(ints, m)) == list(pb.ints_to_field(ints, m)),
                           list(wb.ints_to_field([2**40, -2**40 - 3], m)) == list(pb.ints_to_field([2**40, -2**40 - 3], m)),
                           wb.add_mod(a, b, m).typecode == pb.add_mod(a, b, m).typecode,
                           list(wb.field_from_bytes(C.prg(bytes([m]) * 32, 4 * d), d, m)) ==
                           list(pb.field_from_bytes(C.prg(bytes([m]) * 32, 4 * d), d, m))]
result = res
""")
    bad = {k: v for k, v in out.items() if not all(v)}
    assert not bad and len(out) == 40


def test_discrete_gaussian_kernel_sampler_consumes_stream_like_pure(browser_page) -> None:  # noqa: F811
    """WasmBackend.sample_discrete_gaussian draws the same stream bytes in the same rounds as the pure loop and
    returns the same samples (checked against the pure sampler in the browser and in CPython)."""
    from privacy.dp.discrete_gaussian import sample_discrete_gaussian
    from privacy.randomness import RandomStream

    cases = [(20000, 0.5), (20000, 3.0), (20000, 50.5), (5000, 1234.5), (0, 2.0), (1, 7.0)]
    out = browser_page.run(f"CASES = {cases!r}\n" + """
from client_pyodide import runtime
from privacy.backends import pure_backend
from privacy.dp.discrete_gaussian import sample_discrete_gaussian
from privacy.randomness import RandomStream
res = []
for n, sigma in CASES:
    s1, s2 = RandomStream(bytes([n % 256]) * 32), RandomStream(bytes([n % 256]) * 32)
    a = sample_discrete_gaussian(n, sigma, s1, runtime.backend())
    b = sample_discrete_gaussian(n, sigma, s2, pure_backend())
    res.append([list(a), list(b), s1.bytes(16).hex(), s2.bytes(16).hex(), a.typecode])
result = res
""")
    for (n, sigma), (wasm, pure_web, next1, next2, code) in zip(cases, out, strict=True):
        s = RandomStream(bytes([n % 256]) * 32, default_crypto())
        want = sample_discrete_gaussian(n, sigma, s, pure_backend())
        assert wasm == pure_web == want, (n, sigma)
        assert next1 == next2 == s.bytes(16).hex()  # the stream is left in the same state
        assert code == "i"
    var = sum(v * v for v in out[2][0]) / len(out[2][0])
    assert abs(var / 50.5**2 - 1) < 0.05
