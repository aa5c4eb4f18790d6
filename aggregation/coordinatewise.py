"""Coordinate-wise rules: median and trimmed mean (Yin, Chen, Ramchandran & Bartlett, ICML'18,
"Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates").

Both work column by column on transposed chunks that fit in cache (contiguous sorts of n values), in parallel
threads; no copy of the whole (n, d) input is made.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aggregation.core import (
    AggregationResult,
    check_f,
    check_matrix,
    column_chunks,
    make_diagnostics,
    split_finite_norms,
)


def _sorted_chunk(xs: np.ndarray, a: int, b: int) -> np.ndarray:
    t = np.ascontiguousarray(xs[:, a:b].T)
    t.sort(axis=1)
    return t


def median(x: Any) -> AggregationResult:
    """Coordinate-wise median (the mean of the two middle values when n is even).

    Robust to f < n/2 arbitrary inputs: every coordinate of the result lies within the range of the honest
    inputs' values of that coordinate."""
    x = check_matrix(x)
    xs, finite, _, norms_all = split_finite_norms(x, None)
    n, d = xs.shape
    out = np.empty(d, dtype=xs.dtype)
    lo, hi = (n - 1) // 2, n // 2

    def work(a: int, b: int) -> None:
        t = _sorted_chunk(xs, a, b)
        out[a:b] = t[:, lo] if lo == hi else (t[:, lo] + t[:, hi]) * xs.dtype.type(0.5)

    column_chunks(d, work)
    return AggregationResult(out, make_diagnostics("median", x, finite, out, np.ones(n, bool), norms2=norms_all))


def trimmed_mean(x: Any, f: int | None = None, fraction: float | None = None) -> AggregationResult:
    """Coordinate-wise trimmed mean: drop the ``b`` largest and ``b`` smallest values of every coordinate and
    average the rest, with ``b = f`` or ``b = floor(fraction · n)``. Requires ``n >= 2b + 1``.

    Each coordinate of the result lies within the range of the honest values when at most b inputs are
    Byzantine (Yin et al. 2018)."""
    x = check_matrix(x)
    xs, finite, _, norms_all = split_finite_norms(x, None)
    n, d = xs.shape
    if (f is None) == (fraction is None):
        raise ValueError("trimmed_mean: give exactly one of f or fraction")
    if fraction is not None:
        if not 0.0 <= fraction < 0.5:
            raise ValueError(f"trimmed_mean: fraction must be in [0, 0.5), got {fraction}")
        b = int(np.floor(fraction * n))
    else:
        b = f  # type: ignore[assignment]
    check_f(n, b, "trimmed_mean", lambda k: 2 * k + 1, "2f+1")
    out = np.empty(d, dtype=xs.dtype)

    def work(a: int, c: int) -> None:
        t = _sorted_chunk(xs, a, c)
        kept = t[:, b: n - b]
        with np.errstate(over="ignore"):
            m = kept.mean(axis=1, dtype=np.float64 if xs.dtype == np.float64 else np.float32)
        out[a:c] = m if np.all(np.isfinite(m)) else kept.mean(axis=1, dtype=np.float64)

    column_chunks(d, work)
    return AggregationResult(out, make_diagnostics("trimmed_mean", x, finite, out, np.ones(n, bool),
                                                   extra={"trimmed_each_side": b}, norms2=norms_all))
