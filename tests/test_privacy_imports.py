"""The client-side modules import and work with numpy, torch and grpc unavailable (as in Pyodide)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import builtins, sys
    _real = builtins.__import__
    BLOCKED = ("numpy", "torch", "grpc", "scipy", "dp_accounting", "opacus")
    def _blocked(name, *a, **k):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return _real(name, *a, **k)
    builtins.__import__ = _blocked
    from privacy.backends import default_backend
    from privacy.randomness import RandomStream
    from privacy.fixedpoint import FixedPointConfig, encode, decode_sum
    from privacy.client_pipeline import DistributedDPConfig, prepare_update, decode_sum as dp_decode
    from privacy.dp.discrete_gaussian import sample_discrete_gaussian
    from privacy.dp.clipping import l2_clip
    from privacy.secagg.client import SecAggClient
    from privacy.secagg.server import SecAggServer
    from privacy.secagg.config import GroupConfig
    from flcrypto import default_crypto
    be = default_backend()
    assert be.name == "pure", be.name
    c = default_crypto()
    cfg = DistributedDPConfig(1.0, 0.5, 12, 32, 2, 50)
    ids = ["a", "b", "c"]
    seeds = {u: c.blake2b(u.encode(), key=b"k" * 32) for u in ids}
    gc = GroupConfig(1, 0, tuple(ids), {u: c.ed25519_public_key(s) for u, s in seeds.items()}, 50, 32, b"s" * 32)
    xs = [[0.01 * (i + j) for j in range(50)] for i in range(3)]
    prepared = [prepare_update(x, cfg, RandomStream(bytes([i + 1]) * 32), be)[0] for i, x in enumerate(xs)]
    clients = {u: SecAggClient(gc, u, seeds[u], p, be) for u, p in zip(ids, prepared)}
    server = SecAggServer(gc, be)
    for cl in clients.values():
        server.receive(cl.start())
    while server.phase != "done":
        for u, msg in server.close_phase().items():
            for r in clients[u].handle(msg):
                server.receive(r)
    plain = [sum(col) % (1 << 32) for col in zip(*prepared)]
    assert list(server.result.sum) == plain
    total = dp_decode(server.result.sum, cfg, be)
    assert len(total) == 50
    assert not any(m.split(".")[0] in BLOCKED for m in sys.modules)
    print("PURE-OK")
    """
)


def test_client_side_privacy_modules_work_without_numpy_torch_grpc() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PURE-OK" in out.stdout
