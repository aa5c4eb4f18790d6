"""Test helper: run one SecAgg+ group over given field-element inputs (used by several test files)."""

from __future__ import annotations

from typing import Any

from flcrypto import default_crypto
from privacy.backends import numpy_backend
from privacy.secagg import GroupConfig, SecAggClient, SecAggServer

PHASES = ["advertise", "shares", "masked", "consistency", "unmask"]


def run_group(inputs: list[Any], modulus_bits: int, drop: dict[str, str] | None = None, backend: Any = None
              ) -> tuple[Any, list[int]]:
    c = default_crypto()
    be = backend or numpy_backend()
    drop = drop or {}
    ids = [f"client-{i:02d}" for i in range(len(inputs))]
    seeds = {u: c.blake2b(u.encode(), key=b"k" * 32) for u in ids}
    cfg = GroupConfig(1, 0, tuple(ids), {u: c.ed25519_public_key(s) for u, s in seeds.items()}, len(inputs[0]),
                      modulus_bits, b"s" * 32)
    clients = {u: SecAggClient(cfg, u, seeds[u], x, be) for u, x in zip(ids, inputs, strict=True)}
    server = SecAggServer(cfg, be)
    for u, cl in clients.items():
        if drop.get(u) != "advertise":
            server.receive(cl.start())
    while server.phase != "done":
        for u, msg in server.close_phase().items():
            if u in drop and PHASES.index(server.phase) >= PHASES.index(drop[u]):
                continue
            for r in clients[u].handle(msg):
                server.receive(r)
    assert server.result is not None
    return server.result.sum, [ids.index(u) for u in server.result.survivors]
