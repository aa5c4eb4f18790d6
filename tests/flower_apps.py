"""Flower apps for tests/test_flower_interop.py: clients written as a Flower user writes them (no import of our
packages in the clients), one of which attacks; the ServerApps record what the test checks.

Every honest client returns its weights moved by its own small offset (0.015–0.08 per coordinate: an update of
norm ≤ 0.8·√(d/100)), the attacker (partition 0) by +5.0 per coordinate.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np

D = 1000  # model size: one array of D float32

ATTACK = 5.0


def offset(pid: int) -> float:
    return ATTACK if pid == 0 else 0.01 + 0.005 * pid


def honest_offsets(n: int) -> np.ndarray:
    return np.array([offset(p) for p in range(1, n)])


def message_api_client_app() -> Any:
    """A Message-API ClientApp (``@app.train()``)."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Any) -> Message:
        pid = int(context.node_config["partition-id"])
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        new = [a + np.float32(offset(pid)) for a in arrays]
        return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": 10})}),
                       reply_to=msg)

    return app


def legacy_client_app(mods: list[Any]) -> Any:
    """A NumPyClient in a legacy ``ClientApp(client_fn=…, mods=…)``: where Flower's SecAgg+ lives."""
    from flwr.client import ClientApp, NumPyClient

    class Client(NumPyClient):
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
            if config.get("fail-partition") == self.pid:  # a client that crashes in its fit: a dropout
                raise RuntimeError(f"partition {self.pid} fails on purpose")
            return [p + np.float32(offset(self.pid)) for p in parameters], 10, {}

    def client_fn(context: Any) -> Any:
        return Client(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn, mods=mods)


def corrupt_masked_vector_mod(msg: Any, context: Any, call_next: Any) -> Any:
    """A Byzantine client's outermost Mod: when the fit config names its partition (``corrupt-partition``), the
    masked vector Flower's ``secaggplus_mod`` returns is replaced by one of another shape."""
    from flwr.app import ConfigRecord
    from flwr.common import ndarray_to_bytes
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    reply = call_next(msg, context)
    fit_config = msg.content.config_records.get("fitins.config")
    if fit_config is not None and fit_config.get("corrupt-partition") == int(context.node_config["partition-id"]):
        cfg = dict(reply.content.config_records[RECORD_KEY_CONFIGS])
        cfg[Key.MASKED_PARAMETERS] = [ndarray_to_bytes(np.zeros(7, np.int64))]
        reply.content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(cfg)
    return reply


def corrupt_partition(pid: int):  # type: ignore[no-untyped-def]
    """An ``on_fit_config_fn`` that makes partition ``pid`` send a malformed masked vector."""
    return lambda server_round: {"corrupt-partition": pid}


def fail_partition(pid: int):  # type: ignore[no-untyped-def]
    """An ``on_fit_config_fn`` that makes partition ``pid`` crash in its fit."""
    return lambda server_round: {"fail-partition": pid}


def run(server_app: Any, client_app: Any, num_supernodes: int, timeout: float = 400) -> None:
    """Flower's simulation engine (Ray backend), quiet. A simulation whose Ray cluster died (e.g. a raylet crash:
    ``run_simulation`` then waits forever) fails after ``timeout`` seconds instead of hanging the suite."""
    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    logging.getLogger("flwr").setLevel(logging.WARNING)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_supernodes,
                           backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                           "init_args": {"num_cpus": 2, "include_dashboard": False}})
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    worker = threading.Thread(target=target, name="flower-simulation", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"Flower's simulation did not finish in {timeout:.0f} s (did its Ray cluster die? see "
                           "/tmp/ray/session_latest/logs)")
    if failure:
        raise failure[0]
