"""Averages: the mean, and the weighted mean with a per-client weight cap.

FedAvg's weighted mean (McMahan et al., AISTATS'17) weights each update by its sample count; a Byzantine client
can claim an enormous count and dominate it, so the weight of every input is capped first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aggregation.core import (
    AggregationResult,
    check_matrix,
    check_weights,
    make_diagnostics,
    split_finite_norms,
)


def mean(x: Any, weights: Any = None) -> AggregationResult:
    """Arithmetic mean (weighted if ``weights`` given). Not robust: one input can move it arbitrarily.

    One pass over the inputs: a column sum is NaN/Inf iff the column holds a NaN/Inf (or the float32 sum
    overflows), so a finite result proves every input finite; otherwise the non-finite rows are found exactly,
    dropped, and the mean recomputed (in float64 where float32 overflows)."""
    x = check_matrix(x)
    w = check_weights(weights, x.shape[0])
    # (a zero weight times NaN may be skipped by BLAS, so with zero weights check the rows explicitly)
    value = _mean(x, w) if w is None or np.all(w > 0) else np.full(1, np.nan)
    if np.all(np.isfinite(value)):
        finite, norms_all, n = np.ones(x.shape[0], bool), None, x.shape[0]
    else:
        xs, finite, ws, norms_all = split_finite_norms(x, w)
        if ws is not None and ws.sum() <= 0:
            raise ValueError("mean: every finite input has zero weight")
        value, n = _mean(xs, ws), xs.shape[0]
        if not np.all(np.isfinite(value)):  # float32 accumulation overflowed on huge (finite) inputs
            value = xs.mean(axis=0, dtype=np.float64) if ws is None else (ws @ xs.astype(np.float64)) / ws.sum()
    value = value.astype(x.dtype, copy=False)
    return AggregationResult(value, make_diagnostics("mean", x, finite, value, np.ones(n, bool),
                                                     norms2=norms_all))


def _mean(xs: np.ndarray, ws: np.ndarray | None) -> np.ndarray:
    """(Weighted) mean as one BLAS matrix-vector product ``w·X`` (multi-threaded, no (n, d) temporary):
    measured 2.5× faster than ``X.mean(axis=0)`` on 50 × 10⁶ float32, with float32 accumulation like it."""
    with np.errstate(over="ignore", invalid="ignore"):
        if ws is None:
            return (np.ones(xs.shape[0], dtype=xs.dtype) @ xs) / xs.dtype.type(xs.shape[0])
        return (ws.astype(xs.dtype) @ xs) / xs.dtype.type(ws.sum())


def weighted_mean(x: Any, weights: Any, cap: float | None = None) -> AggregationResult:
    """Weighted mean with each weight capped at ``cap`` (e.g. a maximum credible sample count).

    ``cap=None`` caps at the median weight's double, so that no single input outweighs two typical ones."""
    x = check_matrix(x)
    w = check_weights(weights, x.shape[0])
    assert w is not None
    if cap is None:
        cap = 2.0 * float(np.median(w))
    if not (cap > 0 and np.isfinite(cap)):
        raise ValueError(f"weight cap must be a positive finite number, got {cap}")
    capped = np.minimum(w, cap)
    res = mean(x, capped)
    res.diagnostics.rule = "wmean"
    res.diagnostics.extra["weights_capped"] = capped
    res.diagnostics.extra["cap"] = cap
    return res
