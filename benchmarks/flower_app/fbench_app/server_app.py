"""ServerApp: FedAvg over all N clients in ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` – or, with
the run config's ``workflow = "grouped"``, fl-coordinator's ``GroupedSecureFitWorkflow`` (our SecAgg+ per group of
5, its Mod on the clients: flower_interop) –, no evaluation. It writes what bench_flower.py measures to the run config's ``marks`` file, a JSON object a line:

- ``{"event": "start" | "end", "round": r, "t": <time.time()>}`` around each round's fit workflow (model
  broadcast, the 4 SecAgg+ stages with the clients' fit, unmasking, dequantization, FedAvg);
- ``{"event": "stage", "round": r, "stage": name, "s": seconds}`` per SecAgg+ stage, and ``{"event":
  "wait", "round": r, "s": seconds}`` per ``grid.send_and_receive`` call (waiting for the clients' replies);
- ``{"event": "model", "round": r, "path": ..., "results": k}``: the global model after the round, saved as
  .npy beside the marks file for the harness's check against the plain mean of the updates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from fbench_app.common import MAX_WEIGHT

STAGES = ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage", "unmask_stage")


class Marks:
    """Appends JSON lines to the marks file (flushed at once: the harness polls it)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.round = 0

    def write(self, **record: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def marked(base: type, marks: Marks) -> type:
    """``base`` (a fit workflow class) with each round's start and end written to the marks file."""

    class Marked(base):  # type: ignore[misc, valid-type]
        def __call__(self, grid: Grid, context: Any) -> None:
            marks.round += 1
            marks.write(event="start", round=marks.round, t=time.time())
            super().__call__(grid, context)
            marks.write(event="end", round=marks.round, t=time.time())

    return Marked


def grouped_workflow(marks: Marks) -> Any:
    """fl-coordinator's grouped secure fit workflow on the same work: groups of 5 (t = 4), the plain mean across
    the group means, no DP noise, a clip above every update's norm (‖U[−1, 1)^d‖ ≈ 184) and 24-bit quantization
    (grid step ≈ 5e-5), so the global model is the plain mean of the updates within the grid's error."""
    from flower_interop.secure_workflow import GroupedSecureFitWorkflow

    return marked(GroupedSecureFitWorkflow, marks)(group_size=5, aggregation="mean", num_malicious_nodes=0,
                                                   noise_multiplier=0.0, l2_clip=400.0, quantization_bits=24,
                                                   modulus_bits=32)


def timed_workflow(marks: Marks) -> type[SecAggPlusWorkflow]:
    """A SecAggPlusWorkflow subclass that marks each round's start and end and times each stage."""
    Timed = marked(SecAggPlusWorkflow, marks)

    def timed_stage(name: str) -> Any:
        def stage(self: SecAggPlusWorkflow, grid: Grid, context: Any, state: Any) -> bool:
            t = time.perf_counter()
            ok = getattr(SecAggPlusWorkflow, name)(self, grid, context, state)
            marks.write(event="stage", round=marks.round, stage=name, s=time.perf_counter() - t)
            return bool(ok)

        return stage

    for name in STAGES:
        setattr(Timed, name, timed_stage(name))
    return Timed


class KeepModel(FedAvg):
    """FedAvg that saves each round's global model for the harness's correctness check."""

    def __init__(self, marks: Marks, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marks = marks

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        out = super().aggregate_fit(server_round, results, failures)
        path = self.marks.path.with_name(f"model-{server_round}.npy")
        np.save(path, parameters_to_ndarrays(out[0])[0])
        self.marks.write(event="model", round=server_round, path=str(path), results=len(results),
                         failures=len(failures))
        return out


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n, dim = int(cfg["num-clients"]), int(cfg["dim"])
    marks = Marks(str(cfg["marks"]))
    send_and_receive = grid.send_and_receive

    def timed_send_and_receive(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        replies = send_and_receive(*args, **kwargs)
        marks.write(event="wait", round=marks.round, s=time.perf_counter() - t)
        return replies

    grid.send_and_receive = timed_send_and_receive  # type: ignore[method-assign]
    strategy = KeepModel(marks, fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                         min_available_clients=n, min_evaluate_clients=0,
                         on_fit_config_fn=lambda r: {"server-round": r},
                         initial_parameters=ndarrays_to_parameters([np.zeros(dim, np.float32)]))
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=int(cfg["num-rounds"])),
                           strategy=strategy)
    if str(cfg.get("workflow", "secaggplus")) == "grouped":
        workflow = grouped_workflow(marks)
    else:
        workflow = timed_workflow(marks)(num_shares=int(cfg["num-shares"]),
                                         reconstruction_threshold=int(cfg["threshold"]), max_weight=MAX_WEIGHT)
    marks.write(event="main", t=time.time())
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
    marks.write(event="done", t=time.time())
