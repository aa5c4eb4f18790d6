"""Geometric median by smoothed Weiszfeld iterations: RFA, Pillutla, Kakade & Harchaoui, IEEE TSP 2022,
"Robust Aggregation for Federated Learning" (Algorithm 2).

Minimizes Σ α_i · max(ν, ‖z − x_i‖) (the ν-smoothed geometric median objective): each step
z ← Σ β_i x_i / Σ β_i with β_i = α_i / max(ν, ‖z − x_i‖), until a step moves z by at most
``tol · (1 + ‖z‖)`` (or ``max_iter`` steps). The paper's stopping rule on the objective's relative decrease
stops far too early when a few huge outliers dominate the objective, so we test the iterate instead. Breakdown point 1/2: with fewer than half of the total weight Byzantine, the
result stays within a constant factor of the honest inputs' spread of their geometric median.
"""

from __future__ import annotations

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


def geometric_median(x: Any, weights: Any = None, tol: float = 1e-6, nu: float = 1e-6,
                     max_iter: int = 1000) -> AggregationResult:
    """Smoothed-Weiszfeld geometric median (weighted by ``weights`` if given, the α_i of the paper).

    Stops when a step moves the iterate by at most ``tol · (1 + ‖z‖)``; ``max_iter`` is a safety cap, and
    ``diagnostics.extra`` reports ``iterations``, ``converged`` and the smoothed ``objective``."""
    x = check_matrix(x)
    w = check_weights(weights, x.shape[0])
    if not tol > 0 or not nu > 0 or max_iter < 1:
        raise ValueError(f"geometric_median: tol and nu must be > 0 and max_iter >= 1 (tol={tol}, nu={nu}, "
                         f"max_iter={max_iter})")
    xs, finite, ws, norms_all = split_finite_norms(x, w)
    n = xs.shape[0]
    alpha = np.ones(n) / n if ws is None else ws / ws.sum()
    norms2 = norms_all[finite]
    z = (alpha.astype(xs.dtype) @ xs).astype(np.float64)
    dist = distances_to(xs, z, norms2)
    obj = float(np.sum(alpha * np.maximum(nu, dist)))
    iters, converged = 0, False
    for iters in range(1, max_iter + 1):  # noqa: B007 - reported below
        beta = alpha / np.maximum(nu, dist)
        z_new = (beta.astype(xs.dtype) @ xs).astype(np.float64)
        z_new /= beta.sum()
        step = float(np.linalg.norm(z_new - z))
        z = z_new
        dist = distances_to(xs, z, norms2)
        obj = float(np.sum(alpha * np.maximum(nu, dist)))
        if step <= tol * (1.0 + float(np.linalg.norm(z))):
            converged = True
            break
    value = z.astype(x.dtype)
    return AggregationResult(value, make_diagnostics("geometric_median", x, finite, value, np.ones(n, bool),
                                                     extra={"iterations": iters, "converged": converged,
                                                            "objective": obj}, norms2=norms_all))
