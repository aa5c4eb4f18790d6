"""FLTrust: Cao, Fang, Liu & Gong, NDSS'21, "FLTrust: Byzantine-robust Federated Learning via Trust
Bootstrapping".

The server computes its own update g0 on a small clean root dataset. Each client update gets trust score
TS_i = ReLU(cos(x_i, g0)), is rescaled to g0's norm, and the result is Σ TS_i · (‖g0‖/‖x_i‖) x_i / Σ TS_i.
If every trust score is 0 the result is the zero vector (nothing is trusted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aggregation.core import AggregationResult, check_matrix, make_diagnostics, no_weights, split_finite_norms


def fltrust(x: Any, root_update: Any, weights: Any = None) -> AggregationResult:
    """FLTrust aggregate of ``x`` given the server's ``root_update`` g0. The paper weights inputs by their trust
    scores only, so ``weights`` must be None. ``diagnostics.scores`` are the trust scores."""
    x = check_matrix(x)
    no_weights(weights, "fltrust")
    g0 = np.asarray(root_update, dtype=np.float64)
    if g0.shape != (x.shape[1],):
        raise ValueError(f"fltrust: root update must have shape ({x.shape[1]},), got {g0.shape}")
    if not np.all(np.isfinite(g0)):
        raise ValueError("fltrust: root update contains NaN or Inf")
    g0_norm = float(np.linalg.norm(g0))
    if g0_norm == 0:
        raise ValueError("fltrust: root update is the zero vector (no direction to trust)")
    xs, finite, _, norms_all = split_finite_norms(x, None)
    norms = np.sqrt(norms_all[finite])
    dots = (xs @ g0.astype(xs.dtype)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norms > 0, dots / (norms * g0_norm), 0.0)
    ts = np.maximum(cos, 0.0)
    if ts.sum() == 0:
        value = np.zeros(x.shape[1], dtype=x.dtype)
    else:
        coef = ts * g0_norm / np.where(norms > 0, norms, 1.0) / ts.sum()
        value = (coef.astype(xs.dtype) @ xs).astype(x.dtype)
    return AggregationResult(value, make_diagnostics("fltrust", x, finite, value, ts > 0, ts,
                                                     {"cosine": cos}, norms2=norms_all))
