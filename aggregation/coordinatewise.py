"""Coordinate-wise rules: median and trimmed mean (Yin, Chen, Ramchandran & Bartlett, ICML'18,
"Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates").

Both work column by column on transposed chunks that fit in cache (contiguous sorts of n values), in parallel
threads; no copy of the whole (n, d) input is made. Full sorts, not ``np.partition``: for rows of n ≈ 50
values numpy's SIMD sort is about 4× faster than its introselect (measured: 0.25 s vs 1.0–1.3 s for
50 × 10⁶ float32 on one core), so selection by partition would be slower here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from aggregation.core import (
    AggregationResult,
    check_f,
    check_matrix,
    column_chunks,
    make_diagnostics,
    no_weights,
    split_finite_norms,
)


def _sorted_columns(xs: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    """``reduce`` applied to every column chunk sorted along the inputs (shape (cols, n)), or None if some
    column holds a NaN/Inf.

    NaN sorts last and ±Inf to the ends, so a chunk is all-finite iff its first and last sorted values are: the
    non-finite check rides on the sort and costs no extra pass over the inputs."""
    d = xs.shape[1]
    out = np.empty(d, dtype=xs.dtype)
    bad = []

    def work(a: int, b: int) -> None:
        if bad:
            return
        t = np.ascontiguousarray(xs[:, a:b].T)
        t.sort(axis=1)
        if not (np.isfinite(t[:, 0]).all() and np.isfinite(t[:, -1]).all()):
            bad.append(a)
            return
        out[a:b] = reduce(t)

    column_chunks(d, work)
    return None if bad else out


def _run(x: np.ndarray, reduce_for_n: Callable[[int], Callable[[np.ndarray], np.ndarray]]
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(result, finite mask, squared norms or None): optimistic pass over all rows; if a non-finite value
    shows up, the non-finite rows are found exactly, dropped, and the rule runs again on the rest."""
    out = _sorted_columns(x, reduce_for_n(x.shape[0]))
    if out is not None:
        return out, np.ones(x.shape[0], bool), None
    xs, finite, _, norms_all = split_finite_norms(x, None)
    out = _sorted_columns(xs, reduce_for_n(xs.shape[0]))
    assert out is not None  # every remaining row is finite
    return out, finite, norms_all


def median(x: Any, weights: Any = None) -> AggregationResult:
    """Coordinate-wise median (the mean of the two middle values when n is even).

    Robust to f < n/2 arbitrary inputs: every coordinate of the result lies within the range of the honest
    inputs' values of that coordinate. The rule counts inputs: ``weights`` must be None."""
    x = check_matrix(x)
    no_weights(weights, "median")

    def reducer(n: int) -> Callable[[np.ndarray], np.ndarray]:
        lo, hi = (n - 1) // 2, n // 2
        half = x.dtype.type(0.5)
        return (lambda t: t[:, lo]) if lo == hi else (lambda t: (t[:, lo] + t[:, hi]) * half)

    out, finite, norms_all = _run(x, reducer)
    n = int(finite.sum())
    return AggregationResult(out, make_diagnostics("median", x, finite, out, np.ones(n, bool), norms2=norms_all))


def trimmed_mean(x: Any, f: int | None = None, fraction: float | None = None, weights: Any = None
                 ) -> AggregationResult:
    """Coordinate-wise trimmed mean: drop the ``b`` largest and ``b`` smallest values of every coordinate and
    average the rest, with ``b = f`` or ``b = floor(fraction · n)``. Requires ``n >= 2b + 1``.

    Each coordinate of the result lies within the range of the honest values when at most b inputs are
    Byzantine (Yin et al. 2018). The rule counts inputs: ``weights`` must be None."""
    x = check_matrix(x)
    no_weights(weights, "trimmed_mean")
    if (f is None) == (fraction is None):
        raise ValueError("trimmed_mean: give exactly one of f or fraction")
    if fraction is not None and not 0.0 <= fraction < 0.5:
        raise ValueError(f"trimmed_mean: fraction must be in [0, 0.5), got {fraction}")

    def trim(n: int) -> int:
        b = int(np.floor(fraction * n)) if fraction is not None else f
        check_f(n, b, "trimmed_mean", lambda k: 2 * k + 1, "2f+1")  # type: ignore[arg-type]
        return b  # type: ignore[return-value]

    trim(x.shape[0])

    def reducer(n: int) -> Callable[[np.ndarray], np.ndarray]:
        b = trim(n)

        def reduce(t: np.ndarray) -> np.ndarray:
            kept = t[:, b: n - b]
            with np.errstate(over="ignore"):
                m = kept.mean(axis=1, dtype=np.float64 if t.dtype == np.float64 else np.float32)
            return m if np.all(np.isfinite(m)) else kept.mean(axis=1, dtype=np.float64)

        return reduce

    out, finite, norms_all = _run(x, reducer)
    n = int(finite.sum())
    return AggregationResult(out, make_diagnostics("trimmed_mean", x, finite, out, np.ones(n, bool),
                                                   extra={"trimmed_each_side": trim(n)}, norms2=norms_all))
