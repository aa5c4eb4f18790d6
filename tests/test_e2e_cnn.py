"""End to end over real sockets with the digits CNN (``serve --model cnn:digits``): `fl-coordinator serve` and ten
native clients in two worker processes on loopback, SecAgg+ in groups of 5, FedAvg, a little DP noise.

The clients get the digits as 64 flat features (``fl-client --data digits:I/N``) and train the spec's
(1, 8, 8) input (the native client reshapes row-major); the coordinator evaluates the same spec on the test split
as (n, 1, 8, 8) images. Measured on this configuration (2 cores): 0.90–0.93 after 10 rounds (0.92 with three
busy loops competing for the cores), ≈ 0.6 after 3; the loss falls ≈ 2.2 → 0.3. The assertions (≥ 0.6, loss
halved) keep a margin a loaded machine cannot break."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from e2e_support import UTILITY_POLICY, Coordinator, Workers

import mle
from coordinator.service.store import Store
from flcore.modelspec import CNN_DIGITS, ModelSpec

pytestmark = pytest.mark.slow

ROUNDS, CLIENTS = 10, 10
FLAGS = ["--model", "cnn:digits", "--rounds", str(ROUNDS), "--clients-per-round", str(CLIENTS),
         "--population", str(CLIENTS), "--group-size", "5", "--aggregator", "mean", "--local-epochs", "3",
         "--lr", "0.2", "--l2-clip", "1.0", "--noise-multiplier", "0.05", "--epsilon", "1e6", "--delta", "1e-5",
         "--ban-threshold", "0", "--train-timeout", "60", "--exit-when-finished"]


@pytest.fixture
def workers() -> Iterator[Workers]:
    w = Workers()
    yield w
    w.kill()


def test_native_clients_learn_digits_with_the_cnn(tmp_path: Path, workers: Workers) -> None:
    coord = Coordinator(tmp_path, FLAGS).start()
    server = f"127.0.0.1:{coord.grpc_port}"
    for k in range(2):
        workers.spawn(tmp_path, server, list(range(k, CLIENTS, 2)), CLIENTS, "--policy", UTILITY_POLICY)
    summaries = workers.wait(300)
    assert coord.wait(60) == 0, coord.log_text()
    assert len(summaries) == CLIENTS
    assert all(s["stop_reason"] == f"all {ROUNDS} rounds done" and not s["errors"] for s in summaries), summaries
    store = Store.open(coord.data_dir)
    try:
        metrics = dict(store.metrics())
        last = store.latest_completed_round()
    finally:
        store.close()
    assert last is not None and last.round == ROUNDS
    assert sorted(metrics) == list(range(1, ROUNDS + 1))
    acc = [metrics[r]["accuracy"] for r in sorted(metrics)]
    loss = [metrics[r]["loss"] for r in sorted(metrics)]
    assert acc[-1] >= 0.6, (acc, coord.log_text())
    assert loss[-1] < loss[0] / 2, loss
    # the global model is the CNN: its spec in the .mle metadata, a tensor of torch's layout per parameter
    model = mle.load(last.model_path)
    assert ModelSpec.from_dict(model.metadata["model"]) == CNN_DIGITS
    for name, shape in CNN_DIGITS.parameter_shapes():
        assert np.asarray(model[name]).shape == shape, name
