"""Benchmark: our SecAgg+ round against Flower's SecAgg+ round, measured in the same run on the same work.

Ours: one full in-process round (all clients and the server in one process, numpy backend) with exactly the
product's configuration – complete graph (degree n − 1), threshold t = required_threshold(n, "two-thirds", 1),
a 32-byte configuration binding mixed into every KDF and signature – at d = 100,000, m = 32; per-client time by
phase, server time, total time (sequential, and each phase's clients on 2 threads), bytes sent per client vs
float32; every round's unmasked sum is checked bit for bit against the plain sum of the inputs. Also a
sparse-graph row (degree = default_degree(n), which clients' default policy refuses) and a dropout row.

Flower: its own SecAgg+ (flwr 1.42 SecAggPlusWorkflow + secaggplus_mod) in run_simulation with the Ray backend,
same n, each client's fit returning a d = 100,000 float32 update (benchmarks/flower_secagg.py); the first
round (Ray actors starting, ClientApps loading) is reported separately from the mean of the warmed-up rounds.

Run: `.venv-bench/bin/python benchmarks/bench_secagg.py` (`--no-flower`: our side only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # flower_secagg
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's code, before any installed copy
from flcore.policy import required_threshold
from flcrypto import default_crypto
from privacy.backends import numpy_backend
from privacy.secagg import GroupConfig, SecAggClient, SecAggServer, default_degree

ROOT = Path(__file__).resolve().parent.parent

D = 100_000
M = 32
SIZES = (5, 10, 20)
PHASES = ["advertise keys", "share keys", "masked input", "consistency", "unmasking"]
PHASE_OF_REPLY = {"keys": "share keys", "shares_in": "masked input", "survivors": "consistency",
                  "unmask_request": "unmasking"}


def product_threshold(n: int) -> int:
    """The threshold the product uses for a group of n (and clients' default policy requires)."""
    return required_threshold(n, "two-thirds", 1)


def one_round(n: int, d: int = D, m: int = M, drop: int = 0, workers: int = 1, sparse: bool = False) -> dict:
    """One round with the product's configuration (complete graph, t = product_threshold(n), 32-byte binding);
    ``sparse``: SecAgg+'s sparse graph (degree default_degree(n), GroupConfig's default threshold: a strict
    majority of the k + 1 holders). With ``workers`` > 1 the clients of each phase run on that many threads
    (libsodium and numpy release the GIL), as Flower's Ray simulation spreads its clients over the cores."""
    c, be = default_crypto(), numpy_backend()
    ids = [f"c{i:03d}" for i in range(n)]
    seeds = {u: c.random_bytes(32) for u in ids}
    keys = {u: c.ed25519_public_key(s) for u, s in seeds.items()}
    if sparse:
        cfg = GroupConfig(1, 0, tuple(ids), keys, d, m, c.random_bytes(32), degree=default_degree(n),
                          threshold=None, binding=c.random_bytes(32))
    else:
        cfg = GroupConfig(1, 0, tuple(ids), keys, d, m, c.random_bytes(32), degree=None,
                          threshold=product_threshold(n), binding=c.random_bytes(32))
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
    assert len(server.result.survivors) == n - drop
    live = [u for u in ids if u not in dropped]
    return {"total": total, "server": server_t, "client": {k: v / n for k, v in client_t.items()},
            "bytes": float(np.mean([sent[u] for u in live])), "k": cfg.k, "t": cfg.t}


def _phase(msg: bytes) -> str:
    from privacy.secagg.messages import Message

    return Message.from_bytes(msg).phase


def median_round(reps: int, **kw) -> dict:  # type: ignore[no-untyped-def]
    """The round with the median total time of ``reps`` rounds (its breakdown is reported as measured)."""
    runs = sorted((one_round(**kw) for _ in range(reps)), key=lambda r: r["total"])
    return runs[len(runs) // 2]


def provenance() -> list[str]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              check=False).stdout.strip()

    import flcore
    import privacy

    status = git("status", "--porcelain")
    return [f"commit {git('rev-parse', 'HEAD')}  git status --porcelain: "
            f"{'empty (clean checkout)' if not status else 'NOT EMPTY: ' + status.replace(chr(10), '; ')}",
            f"code imported from {Path(flcore.__file__).parent.parent} (flcore) and "
            f"{Path(privacy.__file__).parent.parent} (privacy); repo root {ROOT}",
            f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cores, "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-flower", action="store_true", help="our side only")
    ap.add_argument("--reps", type=int, default=5, help="our rounds per configuration (median reported)")
    ap.add_argument("--flower-rounds", type=int, default=8, help="Flower rounds per n (first one = start-up)")
    args = ap.parse_args()
    for line in provenance():
        print(line)
    flower_mod = None
    if not args.no_flower:
        try:
            import flower_secagg as flower_mod
        except ImportError as e:  # flwr not installed in this environment
            print(f"Flower not available ({e}); benchmarks/requirements-peers.txt: flwr[simulation] 1.42")
    if flower_mod:
        print(flower_mod.versions())
    print()

    # ---- ours -------------------------------------------------------------------------------------------------
    print(f"OURS: full SecAgg+ round, numpy backend, d = {D:,}, m = {M}, product configuration: complete graph "
          f"(k = n − 1), t = required_threshold(n, 'two-thirds', 1), 32-byte binding; one process: 'total' = all "
          f"clients + server run one after the other; '2 thr' = each phase's clients on 2 threads (as Flower's Ray "
          f"simulation spreads its clients over these 2 cores); median of {args.reps} rounds after one warm-up "
          f"round; every unmasked sum checked bit for bit against the plain sum")
    one_round(5)  # warm-up: imports, libsodium, numpy's first allocations
    one_round(5, workers=2)
    ours: dict[int, tuple[dict, dict]] = {}
    hdr = (f"{'n':>4}{'k':>4}{'t':>4}{'client ms':>11}{'server s':>10}{'total s':>9}{'2 thr s':>9}"
           f"{'bytes/client':>14}{'× f32':>7}")
    print(hdr)

    def row(label: str, n: int, r: dict, r2: dict | None) -> None:
        two = f"{r2['total']:>9.3f}" if r2 else f"{'–':>9}"
        print(f"{n:>4}{r['k']:>4}{r['t']:>4}{sum(r['client'].values()) * 1e3:>11.1f}{r['server']:>10.3f}"
              f"{r['total']:>9.3f}{two}{r['bytes']:>14,.0f}{r['bytes'] / (4 * D):>7.3f}  {label}", flush=True)

    for n in SIZES:
        r = median_round(args.reps, n=n)
        r2 = median_round(args.reps, n=n, workers=2)
        ours[n] = (r, r2)
        row("complete graph (product)", n, r, r2)
    sparse = {}
    for n in SIZES:
        if default_degree(n) >= n - 1:
            print(f"{n:>4}  sparse: default_degree({n}) = {default_degree(n)} = n − 1, the complete graph (row above)")
            continue
        sparse[n] = median_round(args.reps, n=n, sparse=True)
        row("sparse (refused by clients' default policy), t = majority of k + 1", n, sparse[n], None)
    rd = median_round(args.reps, n=20, drop=3)
    row("complete graph, 3 of 20 drop before the masked input (their pairwise masks removed)", 20, rd, None)

    print("\nOURS: per-client time by phase (ms), complete graph, sequential round")
    print(f"{'n':>4}" + "".join(f"{p:>16}" for p in PHASES) + f"{'total':>10}")
    for n, (r, _) in ours.items():
        print(f"{n:>4}" + "".join(f"{r['client'].get(p, 0.0) * 1e3:>16.2f}" for p in PHASES)
              + f"{sum(r['client'].values()) * 1e3:>10.2f}")

    if not flower_mod:
        return 0

    # ---- Flower -----------------------------------------------------------------------------------------------
    print(f"\nFLOWER: SecAggPlusWorkflow + secaggplus_mod in run_simulation (Ray backend, client_resources "
          f"num_cpus = 1: 2 actors on these 2 cores), FedAvg, all n clients sampled, no evaluation, each client's "
          f"fit returns a d = {D:,} float32 update (no training); num_shares = n (each client's secrets shared "
          f"with all others and itself: the complete graph, like ours), reconstruction_threshold = our t, "
          f"Flower's default quantization (clipping_range 8, quantization_range 2^22, modulus_range 2^32, i.e. "
          f"m = 32 like ours); {args.flower_rounds} rounds per n. A Flower round = its fit workflow: "
          f"broadcast of the global model (d float32) + 4 SecAgg+ stages (setup, share keys, collect masked "
          f"vectors with the clients' fit, unmask) + its own dequantization and FedAvg update of the global model.")
    flower: dict[int, dict] = {}
    for n in SIZES:
        f = flower_mod.run(n, D, product_threshold(n), args.flower_rounds)
        flower[n] = f
        warm = f["rounds"][1:]
        mean = statistics.mean
        print(f"  n={n:>3}: run_simulation call → first round {f['startup']:.2f} s; first round {f['rounds'][0]:.2f} s "
              f"(Ray start-up, actors, ClientApps loading); warmed-up rounds {' '.join(f'{x:.2f}' for x in warm)} s "
              f"(mean {mean(warm):.2f}); whole run_simulation call {f['wall']:.2f} s (incl. shut-down); {f['check']}",
              flush=True)
        print("         warmed-up mean by stage: " + ", ".join(
              f"{st.removesuffix('_stage').replace('_', ' ')} {mean(v[1:]):.3f} s" for st, v in f["stages"].items())
              + f"; waiting in send_and_receive {mean(f['wait'][1:]):.3f} s, server work outside it "
              f"{mean(r - w for r, w in zip(f['rounds'][1:], f['wait'][1:], strict=True)):.3f} s", flush=True)

    print("  notes: Flower's round also carries the global-model broadcast (ours has none: the coordinator's "
          "download is not part of our SecAgg+ round) and Ray's message transport; its simulation runtime polls "
          "(the in-memory grid pulls replies every 0.1 s, the fleet sweeps for new messages every 0.1 s), so each "
          "of its 4 stages waits for at least one such tick: part of its round is that latency, as shipped.")

    # ---- ratios -----------------------------------------------------------------------------------------------
    print(f"\nSUMMARY (d = {D:,}, m = 32; ratio = Flower warmed-up round s / our round s; Flower: mean of the "
          f"{args.flower_rounds - 1} rounds after the first; ≈ start-up = first round − warmed-up mean)")
    print(f"{'n':>4}{'t':>4}{'ours client ms':>16}{'ours server s':>15}{'ours total s':>14}{'ours 2 thr s':>14}"
          f"{'Flower warm s':>15}{'Flower 1st s':>14}{'≈ start-up s':>14}{'ratio seq':>11}{'ratio 2 thr':>13}")
    for n in SIZES:
        r, r2 = ours[n]
        f = flower[n]
        warm = statistics.mean(f["rounds"][1:])
        print(f"{n:>4}{r['t']:>4}{sum(r['client'].values()) * 1e3:>16.1f}{r['server']:>15.3f}{r['total']:>14.3f}"
              f"{r2['total']:>14.3f}{warm:>15.2f}{f['rounds'][0]:>14.2f}{f['rounds'][0] - warm:>14.2f}"
              f"{warm / r['total']:>10.1f}×"
              f"{warm / r2['total']:>12.1f}×")
    r, r2 = ours[10]
    warm = statistics.mean(flower[10]["rounds"][1:])
    ok = warm / r["total"] >= 5 and warm / r2["total"] >= 5
    print(f"\ncheck (ours ≥ 5× faster than Flower's warmed-up SecAgg+ round at n = 10, d = 100k): "
          f"{'met' if ok else 'NOT met'} ({warm / r['total']:.1f}× sequential, {warm / r2['total']:.1f}× on 2 threads)")
    again = {n: median_round(args.reps, n=n)["total"] for n in SIZES}
    print("ours re-measured after Flower (sequential total s, median of the same number of rounds): "
          + ", ".join(f"n={n}: {t:.3f}" for n, t in again.items()))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
