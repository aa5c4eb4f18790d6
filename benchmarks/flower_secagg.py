"""Flower's own SecAgg+ round (flwr 1.42: SecAggPlusWorkflow on the server, secaggplus_mod on the clients), run
through run_simulation with the Ray backend, for benchmarks/bench_secagg.py.

Each of the n clients' fit returns a d-element float32 update drawn from its own seed (no training: our
benchmark's inputs are random field elements too); FedAvg samples all n clients, no evaluation. num_shares = n
(every client's secrets are shared with all the others and itself – Flower's neighbour ring then covers
everyone: the complete graph, like ours) and reconstruction_threshold = our t. The fit workflow of each round is
timed (model broadcast, the 4 SecAgg+ stages with the clients' fit, Flower's unmasking, dequantization and FedAvg
update), and the global model after each round is checked against the plain mean of the clients' updates.
"""

from __future__ import annotations

import logging
import os
import time
import warnings

import numpy as np

MAX_WEIGHT = 1000  # SecAggPlusWorkflow's default max_weight
STAGES = ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage", "unmask_stage")


def versions() -> str:
    import flwr
    import ray

    return f"flwr {flwr.__version__}, ray {ray.__version__}"


def run(n: int, d: int, threshold: int, rounds: int) -> dict:
    """One run_simulation of ``rounds`` SecAgg+ rounds with n clients. Returns the time from the call to the
    start of the first round ('startup'), each round's fit-workflow time ('rounds'), the whole call ('wall') and
    each round's time per SecAgg+ stage ('stages'), each round's time spent in the grid's send_and_receive
    (waiting for the clients' replies: Ray transport, the clients' work, the runtime's polling; 'wait') and the largest deviation of the global model from the plain
    mean of the updates ('check')."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation

    logging.getLogger("flwr").setLevel(logging.WARNING)
    marks: dict[str, list[float]] = {"start": [], "end": [], "wait": [], **{st: [] for st in STAGES}}
    models: list[np.ndarray] = []

    def update(pid: int) -> np.ndarray:
        return np.random.default_rng(pid).uniform(-1.0, 1.0, d).astype(np.float32)

    class Client(NumPyClient):
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            # num_examples = max_weight: the weighting factor is 1, so Flower's quantization keeps its full
            # 2^22 grid (with num_examples = 1 it scales the update by 1/1000 first: ~3e-3 error); equal weights,
            # so the global model is the plain mean either way, and the work is the same.
            return [update(self.pid)], MAX_WEIGHT, {}

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        return Client(int(context.node_config["partition-id"])).to_client()

    class KeepModel(FedAvg):
        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            out = super().aggregate_fit(server_round, results, failures)
            models.append(parameters_to_ndarrays(out[0])[0])
            return out

    class TimedSecAggPlus(SecAggPlusWorkflow):
        def __call__(self, grid, context) -> None:  # type: ignore[no-untyped-def]
            marks["start"].append(time.perf_counter())
            super().__call__(grid, context)
            marks["end"].append(time.perf_counter())

    def timed_stage(name: str):  # type: ignore[no-untyped-def]
        def stage(self, grid, context, state) -> bool:  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            ok = getattr(SecAggPlusWorkflow, name)(self, grid, context, state)
            marks[name].append(time.perf_counter() - t)
            return ok

        return stage

    for st in STAGES:
        setattr(TimedSecAggPlus, st, timed_stage(st))

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        send_and_receive = grid.send_and_receive

        def timed_send_and_receive(*args, **kwargs):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            replies = send_and_receive(*args, **kwargs)
            marks["wait"].append(time.perf_counter() - t)
            return replies

        grid.send_and_receive = timed_send_and_receive  # type: ignore[method-assign]
        strategy = KeepModel(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
                             min_evaluate_clients=0,
                             initial_parameters=ndarrays_to_parameters([np.zeros(d, np.float32)]))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        workflow = TimedSecAggPlus(num_shares=n, reconstruction_threshold=threshold, max_weight=MAX_WEIGHT)
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)

    t0 = time.perf_counter()
    run_simulation(server_app, ClientApp(client_fn=client_fn, mods=[secaggplus_mod]), num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    wall = time.perf_counter() - t0
    if len(marks["end"]) != rounds or len(models) != rounds or len(marks["wait"]) != 4 * rounds:
        raise RuntimeError(f"Flower completed {len(marks['end'])} of {rounds} rounds (n = {n})")
    expected = np.mean([update(p) for p in range(n)], axis=0)
    err = max(float(np.max(np.abs(m - expected))) for m in models)
    return {"startup": marks["start"][0] - t0, "wall": wall,
            "rounds": [e - s for s, e in zip(marks["start"], marks["end"], strict=True)],
            "stages": {st: marks[st] for st in STAGES},
            "wait": [sum(marks["wait"][4 * r: 4 * r + 4]) for r in range(rounds)],
            "check": f"max |global model − mean update| = {err:.1e}" + ("" if err < 1e-4 else " (MISMATCH)")}
