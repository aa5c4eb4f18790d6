"""Benchmark: one full in-process SecAgg+ round (all clients and the server in one process, numpy backend):
total time, per-client time per phase, server time, and bytes per client relative to plaintext float32.

Flower's SecAgg+ (flwr 1.41, Ray simulation) measured on these machines: 3.9 s/round for n=10, d=100k and
7.8 s/round for n=20, d=1M (design brief); flwr does not install next to our pins here, so those measured
figures are the reference. Run: `.venv-bench/bin/python benchmarks/bench_secagg.py`.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flcrypto import default_crypto
from privacy.backends import numpy_backend
from privacy.secagg import GroupConfig, SecAggClient, SecAggServer

FLOWER = {(10, 100_000): 3.9, (20, 1_000_000): 7.8}
PHASE_OF_REPLY = {"keys": "share keys", "shares_in": "masked input", "survivors": "consistency",
                  "unmask_request": "unmasking"}


def one_round(n: int, d: int, m: int = 32, drop: int = 0, workers: int = 1) -> dict:
    """One round; with ``workers`` > 1 the clients of each phase run on that many threads (libsodium and
    numpy release the GIL), as Flower's Ray simulation spreads its clients over the cores."""
    c, be = default_crypto(), numpy_backend()
    ids = [f"c{i:03d}" for i in range(n)]
    seeds = {u: c.random_bytes(32) for u in ids}
    cfg = GroupConfig(1, 0, tuple(ids), {u: c.ed25519_public_key(s) for u, s in seeds.items()}, d, m,
                      c.random_bytes(32))
    rng = np.random.default_rng(0)
    inputs = {u: rng.integers(0, 1 << m, d, dtype=np.uint64).astype(np.uint16 if m <= 16 else np.uint32)
              for u in ids}
    client_t: dict[str, float] = defaultdict(float)
    server_t = 0.0
    sent: dict[str, int] = defaultdict(int)
    dropped = set(ids[:drop])
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    t_start = time.perf_counter()
    clients = {u: SecAggClient(cfg, u, seeds[u], inputs[u], be) for u in ids}
    server = SecAggServer(cfg, be)
    for u, cl in clients.items():
        t0 = time.perf_counter()
        msg = cl.start()
        client_t["advertise keys"] += time.perf_counter() - t0
        sent[u] += len(msg)
        t0 = time.perf_counter()
        server.receive(msg)
        server_t += time.perf_counter() - t0
    while server.phase != "done":
        t0 = time.perf_counter()
        out = server.close_phase()
        server_t += time.perf_counter() - t0
        todo = [(u, msg) for u, msg in out.items() if not (u in dropped and server.phase == "masked")]

        def handle(item: tuple[str, bytes]) -> tuple[str, str, float, list[bytes]]:
            u, msg = item
            t0 = time.perf_counter()
            replies = clients[u].handle(msg)
            return u, PHASE_OF_REPLY[_phase(msg)], time.perf_counter() - t0, replies

        results = list(pool.map(handle, todo)) if pool else [handle(i) for i in todo]
        for u, phase, dt, replies in results:
            client_t[phase] += dt
            for r in replies:
                sent[u] += len(r)
                t0 = time.perf_counter()
                server.receive(r)
                server_t += time.perf_counter() - t0
    total = time.perf_counter() - t_start
    if pool:
        pool.shutdown()
    expected = np.zeros(d, np.uint64)
    for u in server.result.survivors:
        expected += inputs[u]
    assert np.array_equal(server.result.sum.astype(np.uint64), expected % (1 << m)), "sum mismatch"
    live = [u for u in ids if u not in dropped]
    return {"total": total, "server": server_t, "client": {k: v / n for k, v in client_t.items()},
            "bytes": float(np.mean([sent[u] for u in live])), "k": cfg.k, "t": cfg.t}


def _phase(msg: bytes) -> str:
    from privacy.secagg.messages import Message

    return Message.from_bytes(msg).phase


def main() -> None:
    print("full SecAgg+ rounds (numpy backend; one process: 'total' = all clients + server, sequential;\n"
          "'2 thr' runs each phase's clients on 2 threads, like Flower's Ray simulation on these 2 cores;\n"
          "every round's unmasked sum is checked bit for bit against the plain sum of the inputs)")
    print(f"{'n':>4}{'d':>10}{'m':>4}{'k':>4}{'t':>4}{'total s':>9}{'2 thr s':>9}{'server s':>10}{'client s':>10}"
          f"{'bytes/client':>14}{'× f32':>7}{'Flower s':>10}{'speedup 1/2 thr':>17}")
    rows = []
    for n, d, m in [(10, 100_000, 32), (20, 1_000_000, 32), (100, 100_000, 32), (10, 100_000, 16),
                    (20, 1_000_000, 16)]:
        r = one_round(n, d, m)
        r2 = one_round(n, d, m, workers=2)
        client_total = sum(r["client"].values())
        fl = FLOWER.get((n, d))
        fl_s = f"{fl:.1f}" if fl else "–"
        speed = f"{fl / r['total']:.1f}× / {fl / r2['total']:.1f}×" if fl else "–"
        print(f"{n:>4}{d:>10,}{m:>4}{r['k']:>4}{r['t']:>4}{r['total']:>9.2f}{r2['total']:>9.2f}{r['server']:>10.2f}"
              f"{client_total:>10.3f}{r['bytes']:>14,.0f}{r['bytes'] / (4 * d):>7.3f}{fl_s:>10}{speed:>17}",
              flush=True)
        if m == 32:
            rows.append((n, d, r))
    print("\nper-client time by phase (s), m = 32")
    phases = ["advertise keys", "share keys", "masked input", "consistency", "unmasking"]
    print(f"{'n':>4}{'d':>10}" + "".join(f"{p:>16}" for p in phases))
    for n, d, r in rows:
        print(f"{n:>4}{d:>10,}" + "".join(f"{r['client'].get(p, 0.0):>16.4f}" for p in phases))
    print("\nclient cost vs n at d = 100,000 (should grow with log n: the neighbour degree k)")
    for n in (10, 20, 50, 100):
        r = one_round(n, 100_000)
        print(f"  n={n:>4}  k={r['k']:>3}  client {sum(r['client'].values()) * 1e3:8.1f} ms  "
              f"server {r['server']:.2f} s", flush=True)
    r = one_round(20, 100_000, drop=3)
    print(f"\nwith 3 of 20 clients dropping before the masked input: total {r['total']:.2f} s, "
          f"server {r['server']:.2f} s (reconstructs their mask keys and removes their pairwise masks)")


if __name__ == "__main__":
    main()
