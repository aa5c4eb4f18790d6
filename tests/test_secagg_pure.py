"""The SecAgg+ client and server run with numpy, torch and grpc unimportable (as in Pyodide), and importing them
does not load PyNaCl (the browser registers its libsodium-wrappers bridge with flcrypto instead)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import builtins, sys
    _real = builtins.__import__
    BLOCKED = {"numpy", "torch", "grpc", "nacl"}
    def _blocked(name, *a, **k):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return _real(name, *a, **k)
    builtins.__import__ = _blocked
    import privacy.secagg, privacy.secagg.client, privacy.secagg.server, privacy.secagg.wire
    import privacy.fixedpoint, privacy.randomness, privacy.backends
    from privacy.backends import default_backend
    assert default_backend().name == "pure"
    assert not any(m.split(".")[0] in BLOCKED for m in sys.modules), sorted(sys.modules)
    BLOCKED.discard("nacl")  # the crypto implementation (PyNaCl here, libsodium-wrappers in the browser)
    from flcrypto import default_crypto
    from privacy.fixedpoint import FixedPointConfig, encode, decode_sum
    from privacy.randomness import RandomStream
    from privacy.secagg import GroupConfig, SecAggClient, SecAggServer
    c, be = default_crypto(), default_backend()
    ids = [f"u{i}" for i in range(6)]
    seeds = {u: c.blake2b(u.encode(), key=b"k" * 32) for u in ids}
    gc = GroupConfig(5, 1, tuple(ids), {u: c.ed25519_public_key(s) for u, s in seeds.items()}, 40, 16, b"p" * 32)
    fp = FixedPointConfig(1.0, 12, 16)
    xs = {u: [((i * 7 + j) % 13 - 6) / 6 for j in range(40)] for i, u in enumerate(ids)}
    enc = {u: encode(xs[u], fp, RandomStream(bytes([i]) * 32), be) for i, u in enumerate(ids)}
    clients = {u: SecAggClient(gc, u, seeds[u], enc[u], be) for u in ids}
    server = SecAggServer(gc, be)
    for u in ids[1:]:  # u0 never shows up
        server.receive(clients[u].start())
    phase = 0
    while server.phase != "done":
        out = server.close_phase()
        phase += 1
        for u, msg in out.items():
            if u == "u3" and phase >= 2:  # u3 drops after sharing its keys
                continue
            for r in clients[u].handle(msg):
                server.receive(r)
    survivors = ["u1", "u2", "u4", "u5"]
    assert list(server.result.survivors) == survivors
    plain = [sum(enc[u][j] for u in survivors) % (1 << 16) for j in range(40)]
    assert list(server.result.sum) == plain
    total = decode_sum(server.result.sum, fp, 4, be)
    assert all(abs(t - sum(xs[u][j] for u in survivors)) <= 4 / fp.scale() for j, t in enumerate(total))
    assert not any(m.split(".")[0] in ("numpy", "torch", "grpc") for m in sys.modules)
    print("PURE-SECAGG-OK")
    """
)


def test_secagg_runs_without_numpy_torch_grpc_and_imports_without_pynacl() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PURE-SECAGG-OK" in out.stdout
