"""Benchmark: simulated client updates per second for FedAvg on digits, 100 and 1,000 clients per round, ours
vs Flower's simulation (flwr 1.42, Ray backend) of the same task, in the same run.

Task (both sides): digits (scikit-learn), IID split over N = m clients (all sampled every round), the model-spec
MLP 64-32-10, 1 local epoch of SGD (batch 32, lr 0.1), FedAvg (mean of the updates), 3 rounds.
- ours "direct": the engine's round arithmetic with the production client pipeline (clip, quantize, field
  elements), per-group sums, robust-aggregation code and optimizer, training batched across clients.
- ours "engine": the full protocol through coordinator.federation.engine.Engine and one flcore ClientSession per client
  (Ed25519-signed messages, SecAgg+ with groups of 1), training batched across clients.
- Flower: run_simulation with a ClientApp whose NumPyClient trains with client_native.torch_model.train_local
  (torch, one client at a time per Ray actor; default resources: one actor per core).
Updates/s are measured in steady state: Flower's from the strategy's configure_fit → aggregate_fit times of
rounds 2..R (Ray start-up excluded); ours from a whole run after a warm-up (engine set-up and per-round
evaluation included), best of 2. The machine's load average is printed: other processes skew both sides.

Run: `bash benchmarks/setup_env.sh && .venv-bench/bin/python benchmarks/bench_simulation.py [--quick]`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROUNDS = 3
HIDDEN = 32
_CACHE: dict[int, tuple] = {}


def ours(m: int, mode: str, rounds: int = ROUNDS, repeats: int = 2) -> float:
    """Best of ``repeats`` runs (after a warm-up run that pays the imports)."""
    ours_once(min(m, 10), mode, 1)
    return max(ours_once(m, mode, rounds) for _ in range(repeats))


def ours_once(m: int, mode: str, rounds: int) -> float:
    from simulations.config import SimulationConfig
    from simulations.runner import Simulation

    cfg = SimulationConfig.from_dict({
        "name": f"bench-{mode}-{m}", "rounds": rounds, "seed": 0, "mode": mode, "plots": False,
        "model": {"hidden": [HIDDEN]}, "data": {"num_clients": m, "partition": "iid"},
        "federation": {"clients_per_round": m, "group_size": 1, "aggregator": "mean", "bans": False,
                       "local_epochs": 1, "batch_size": 32, "lr": 0.1}})
    sim = Simulation(cfg)
    t = time.perf_counter()
    r = sim.run()
    return r.client_updates / (time.perf_counter() - t)


def flower(m: int, rounds: int = ROUNDS) -> float | None:
    try:
        import flwr  # noqa: F401
    except ImportError:
        return None
    warnings.filterwarnings("ignore")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from flcore.modelspec import mlp

    logging.getLogger("flwr").setLevel(logging.WARNING)
    spec = mlp([64, HIDDEN, 10])
    init = [np.asarray(v, np.float32).reshape(s) for (_, s), v in
            zip(spec.parameter_shapes(), spec.init_parameters(0).values(), strict=True)]
    marks: list[tuple[str, int, float]] = []

    class Timed(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
            marks.append(("start", server_round, time.perf_counter()))
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            out = super().aggregate_fit(server_round, results, failures)
            marks.append(("end", server_round, time.perf_counter()))
            marks.append(("n", server_round, len(results)))
            return out

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        import torch

        from client_native.torch_model import build_module, flatten, set_parameters, train_local
        from federated_data import iid, load_digits

        torch.set_num_threads(1)
        pid = int(context.node_config["partition-id"])
        n = int(context.node_config["num-partitions"])
        if n not in _CACHE:  # per Ray actor: load and split once, not per client instantiation
            ds = load_digits(seed=0)
            _CACHE[n] = (ds, iid(ds.y_train, n, np.random.default_rng(0)))
        ds, parts = _CACHE[n]
        part = parts[pid]

        class Client(NumPyClient):
            def fit(self, parameters, config):  # type: ignore[no-untyped-def]
                module = build_module(spec)
                set_parameters(module, {name: p for (name, _), p in
                                        zip(spec.parameter_shapes(), parameters, strict=True)})
                delta, _ = train_local(module, ds.x_train[part], ds.y_train[part], epochs=1, batch_size=32,
                                       lr=0.1, seed=pid)
                vec = flatten(delta, spec)
                new, pos = [], 0
                for p in parameters:
                    new.append(p + vec[pos: pos + p.size].reshape(p.shape))
                    pos += p.size
                return new, len(part), {}

        return Client().to_client()

    def server_fn(context: Context):  # type: ignore[no-untyped-def]
        strategy = Timed(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=m, min_available_clients=m,
                         min_evaluate_clients=0, initial_parameters=ndarrays_to_parameters(init))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    run_simulation(ServerApp(server_fn=server_fn), ClientApp(client_fn=client_fn), num_supernodes=m,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    starts = {r: t for k, r, t in marks if k == "start"}
    ends = {r: t for k, r, t in marks if k == "end"}
    counts = {r: t for k, r, t in marks if k == "n"}
    steady = [r for r in ends if r >= 2] or list(ends)
    if not steady:
        return None
    return sum(counts[r] for r in steady) / sum(ends[r] - starts[r] for r in steady)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="100 clients per round only")
    ap.add_argument("--no-flower", action="store_true")
    args = ap.parse_args()
    import torch

    sizes = [100] if args.quick else [100, 1000]
    print(f"FedAvg on digits, MLP 64-{HIDDEN}-10, 1 local epoch, {ROUNDS} rounds, N = m clients (IID); "
          f"{os.cpu_count()} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for m in sizes:
        d = ours(m, "direct")
        e = ours(m, "engine") if m <= 1000 else float("nan")
        f = None if args.no_flower else flower(m)
        rows.append((m, d, e, f))
        print(f"m={m}: ours direct {d:,.0f}/s, ours engine {e:,.0f}/s, Flower "
              f"{'n/a' if f is None else f'{f:,.0f}/s'}", flush=True)
    print("\nclient updates per second")
    print(f"{'clients/round':>13} {'ours direct':>12} {'ours engine':>12} {'Flower':>10} {'direct/Flower':>14} "
          f"{'engine/Flower':>14}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    for m, d, e, f in rows:
        fr = "n/a" if f is None else f"{f:,.0f}"
        r1 = "n/a" if f is None else f"{d / f:.1f}×"
        r2 = "n/a" if f is None else f"{e / f:.1f}×"
        print(f"{m:>13} {d:>12,.0f} {e:>12,.0f} {fr:>10} {r1:>14} {r2:>14}")
    if any(f is None for *_, f in rows):
        print("Flower is not installed in this environment (benchmarks/requirements-peers.txt: flwr[simulation] 1.42)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
