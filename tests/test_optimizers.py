"""Server optimizers against the papers' update rules, written out step by step in float64."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.federation.optimizers import OptimizerState, ServerOptimizer, apply_update


def _run(opt: ServerOptimizer, x: np.ndarray, deltas: list[np.ndarray]) -> np.ndarray:
    state = OptimizerState()
    for d in deltas:
        x, state = apply_update(opt, x, d, state)
        # the state survives serialization (the store persists it between rounds)
        state = OptimizerState.from_dict(state.to_dict(), x.size)
    return x


@pytest.fixture
def data() -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(1)
    return rng.normal(size=50).astype(np.float32), [rng.normal(size=50).astype(np.float32) for _ in range(4)]


def test_fedavg(data) -> None:
    x, ds = data
    got = _run(ServerOptimizer("fedavg", lr=0.5), x, ds)
    np.testing.assert_allclose(got, x.astype(np.float64) + 0.5 * np.sum(ds, axis=0), rtol=1e-5, atol=1e-5)


def test_fedavgm(data) -> None:
    x, ds = data
    ref, m = x.astype(np.float64), np.zeros(50)
    for d in ds:
        m = 0.9 * m + d
        ref = ref + 0.7 * m
    np.testing.assert_allclose(_run(ServerOptimizer("fedavgm", lr=0.7, momentum=0.9), x, ds), ref, rtol=1e-5, atol=1e-5)


def test_fedadam(data) -> None:
    x, ds = data
    ref, m, v = x.astype(np.float64), np.zeros(50), np.zeros(50)
    for d in ds:
        m = 0.9 * m + 0.1 * d
        v = 0.99 * v + 0.01 * d * d
        ref = ref + 0.1 * m / (np.sqrt(v) + 1e-3)
    got = _run(ServerOptimizer("fedadam", lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3), x, ds)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_rejects_bad_input(data) -> None:
    x, ds = data
    with pytest.raises(ValueError, match="unknown server optimizer"):
        ServerOptimizer("sgd")
    with pytest.raises(ValueError, match="learning rate"):
        ServerOptimizer("fedavg", lr=0)
    bad = ds[0].copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        apply_update(ServerOptimizer(), x, bad, OptimizerState())
    with pytest.raises(ValueError, match="equal-length"):
        apply_update(ServerOptimizer(), x, ds[0][:10], OptimizerState())
    with pytest.raises(ValueError, match="entries"):
        OptimizerState.from_dict(OptimizerState(1, m=np.zeros(3, np.float32)).to_dict(), 50)
