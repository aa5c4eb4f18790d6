"""Centered clipping and server momentum.

Centered clipping: Karimireddy, He & Jaggi, ICML'21, "Learning from History for Byzantine Robust
Optimization" (Algorithm 2). Starting from the previous round's aggregate v (the *center*, carried across
rounds as explicit state), each of L iterations moves v by the average of the clipped differences:
    v ← v + (1/n) Σ_i (x_i − v) · min(1, τ / ‖x_i − v‖).
One Byzantine input moves v by at most τ/n per iteration. The paper pairs it with momentum, which we provide
as a separate step: m ← β·m + (1 − β)·g (with m = g at the first round).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from aggregation.core import (
    AggregationResult,
    check_matrix,
    check_weights,
    distances_to,
    make_diagnostics,
    split_finite_norms,
)


@dataclass
class CenteredClippingState:
    """The center carried from round to round (``None`` before the first round: start from zero)."""

    center: np.ndarray | None = None


def centered_clipping(x: Any, tau: float, state: CenteredClippingState | None = None, iters: int = 1,
                      weights: Any = None) -> tuple[AggregationResult, CenteredClippingState]:
    """Centered clipping with radius ``tau`` and ``iters`` iterations; returns the result and the new state
    (whose center is the result). ``weights`` (optional) replace the uniform 1/n."""
    x = check_matrix(x)
    if not (tau > 0 and np.isfinite(tau)):
        raise ValueError(f"centered_clipping: tau must be a positive finite number, got {tau}")
    if iters < 1:
        raise ValueError(f"centered_clipping: iters must be >= 1, got {iters}")
    w = check_weights(weights, x.shape[0])
    xs, finite, ws, norms_all = split_finite_norms(x, w)
    n, d = xs.shape
    alpha = np.ones(n) / n if ws is None else ws / ws.sum()
    state = state or CenteredClippingState()
    if state.center is not None and state.center.shape != (d,):
        raise ValueError(f"centered_clipping: state center has shape {state.center.shape}, inputs have d={d}")
    v = np.zeros(d) if state.center is None else state.center.astype(np.float64)
    norms2 = norms_all[finite]
    clip_factors = np.ones(n)
    for _ in range(iters):
        dist = distances_to(xs, v, norms2)
        with np.errstate(divide="ignore"):
            clip_factors = np.minimum(1.0, tau / np.where(dist > 0, dist, np.inf))
        c = alpha * clip_factors
        # v + Σ c_i (x_i − v) = (1 − Σc) v + Σ c_i x_i   (one matrix-vector product, no (n, d) temporary)
        v = (1.0 - c.sum()) * v + (c.astype(xs.dtype) @ xs).astype(np.float64)
    value = v.astype(x.dtype)
    res = AggregationResult(value, make_diagnostics("centered_clipping", x, finite, value, np.ones(n, bool),
                                                    extra={"clip_factors": clip_factors, "tau": tau}, norms2=norms_all))
    return res, CenteredClippingState(center=value.copy())


@dataclass
class MomentumState:
    momentum: np.ndarray | None = None


def server_momentum(g: np.ndarray, beta: float, state: MomentumState | None = None
                    ) -> tuple[np.ndarray, MomentumState]:
    """m ← β·m + (1 − β)·g (m = g at the first step). Returns (m, new state)."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"momentum: beta must be in [0, 1), got {beta}")
    state = state or MomentumState()
    if state.momentum is None:
        m = g.astype(np.float64)
    else:
        if state.momentum.shape != g.shape:
            raise ValueError(f"momentum: state has shape {state.momentum.shape}, update has {g.shape}")
        m = beta * state.momentum.astype(np.float64) + (1.0 - beta) * g.astype(np.float64)
    out = m.astype(g.dtype)
    return out, MomentumState(momentum=out.copy())
