"""Shared types and helpers: results with diagnostics, input validation, non-finite exclusion, distances."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FloatArray = np.ndarray


@dataclass
class Diagnostics:
    """What an aggregator saw, per input (indexed like the caller's rows, excluded rows included).

    - ``scores``: the rule's own score (Krum: sum of squared distances to neighbours; FLTrust: trust score;
      coordinate-wise rules: distance to the result). ``nan`` for excluded rows.
    - ``selected``: the input contributed to the result.
    - ``excluded_nonfinite``: the input had a NaN/Inf and was dropped before aggregation.
    - ``distances``: ``‖x_i − result‖₂`` (``inf`` for non-finite rows).
    - ``outlier_scores``: ``distances / median(distances of finite rows)`` – about 1 for a typical input,
      large for an outlier, ``inf`` for a non-finite row; comparable across rounds and rules. The
      coordinator's trust system consumes this (docs/trust.md).
    """

    rule: str
    scores: FloatArray
    selected: np.ndarray
    excluded_nonfinite: np.ndarray
    distances: FloatArray
    outlier_scores: FloatArray
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AggregationResult:
    value: FloatArray
    diagnostics: Diagnostics


def check_matrix(x: Any, name: str = "updates") -> FloatArray:
    """Validate an (n, d) float array; float32/float64 are used as is (no copy), others converted."""
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) array, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    return x


def check_f(n: int, f: int, rule: str, needed: Callable[[int], int], formula: str) -> None:
    """Raise ``ValueError`` unless ``n >= needed(f)``."""
    if isinstance(f, bool) or not isinstance(f, int | np.integer) or f < 0:
        raise ValueError(f"{rule}: f must be a non-negative integer, got {f!r}")
    if n < needed(f):
        raise ValueError(f"{rule} needs n >= {formula}: got n={n}, f={f} (needs n >= {needed(f)})")


def check_weights(weights: Any, n: int) -> FloatArray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    if w.sum() <= 0:
        raise ValueError("weights must not all be zero")
    return w


def finite_rows(x: FloatArray) -> np.ndarray:
    """Boolean mask of rows without NaN/Inf (one pass; no (n, d) temporary)."""
    # A row's sum is finite iff every entry is finite, except for overflow of huge finite values, which we
    # re-check exactly for the rows that failed.
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.add.reduce(x, axis=1, dtype=np.float64)
    ok = np.isfinite(s)
    for i in np.flatnonzero(~ok):
        ok[i] = bool(np.all(np.isfinite(x[i])))
    return ok


def sq_norms(x: FloatArray) -> np.ndarray:
    """Squared row norms as float64, without an (n, d) temporary (BLAS dot per row; rows whose float32 dot
    overflows are recomputed in float64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array([float(np.dot(r, r)) for r in x], dtype=np.float64)
    for i in np.flatnonzero(~np.isfinite(out)):
        r = x[i].astype(np.float64)
        out[i] = float(np.dot(r, r))
    return out


def matvec(x: FloatArray, v: np.ndarray) -> np.ndarray:
    """``x @ v`` as float64 (float32 BLAS; overflowing rows recomputed in float64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = (x @ v.astype(x.dtype, copy=False)).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        v64 = v.astype(np.float64)
        for i in bad:
            out[i] = float(np.dot(x[i].astype(np.float64), v64))
    return out


def gram_sq_distances(x: FloatArray) -> np.ndarray:
    """Pairwise squared Euclidean distances from one Gram matrix ``X·Xᵀ`` (n×n, float64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        g = (x @ x.T).astype(np.float64)
    if not np.all(np.isfinite(g)):
        x64 = x.astype(np.float64)
        g = x64 @ x64.T
    diag = np.diag(g).copy()
    d2 = diag[:, None] + diag[None, :] - 2.0 * g
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def distances_to(x: FloatArray, v: FloatArray, norms2: np.ndarray | None = None) -> np.ndarray:
    """``‖x_i − v‖₂`` for every row, via ``‖x‖² − 2x·v + ‖v‖²`` (no (n, d) temporary), float64."""
    if norms2 is None:
        norms2 = sq_norms(x)
    dots = matvec(x, v)
    v64 = v.astype(np.float64)
    vv = float(np.dot(v64, v64))
    return np.sqrt(np.maximum(norms2 - 2.0 * dots + vv, 0.0))


def make_diagnostics(rule: str, x: FloatArray, finite: np.ndarray, value: FloatArray,
                     selected_finite: np.ndarray, scores_finite: np.ndarray | None = None,
                     extra: dict[str, Any] | None = None) -> Diagnostics:
    """Build :class:`Diagnostics` for the caller's rows from per-finite-row selections/scores."""
    n = x.shape[0]
    dist = np.full(n, np.inf)
    idx = np.flatnonzero(finite)
    dist[idx] = distances_to(x[idx] if len(idx) < n else x, value)
    selected = np.zeros(n, dtype=bool)
    selected[idx] = selected_finite
    scores = np.full(n, np.nan)
    scores[idx] = dist[idx] if scores_finite is None else scores_finite
    med = float(np.median(dist[idx])) if len(idx) else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        outlier = dist / med if med > 0 else np.where(dist > 0, np.inf, 1.0)
    outlier[~finite] = np.inf
    return Diagnostics(rule, scores, selected, ~finite, dist, outlier, dict(extra or {}))


def split_finite(x: FloatArray, weights: FloatArray | None) -> tuple[FloatArray, np.ndarray,
                                                                     FloatArray | None]:
    """Drop non-finite rows. Returns (rows, finite mask, weights of the kept rows)."""
    finite = finite_rows(x)
    if finite.all():
        return x, finite, weights
    if not finite.any():
        raise ValueError("every input contains NaN or Inf: nothing to aggregate")
    return x[finite], finite, (None if weights is None else weights[finite])


def threads() -> int:
    """Worker threads for column-chunked kernels (numpy releases the GIL while sorting)."""
    env = os.environ.get("AGGREGATION_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(4, os.cpu_count() or 1))


def column_chunks(d: int, fn: Callable[[int, int], None], chunk: int = 8192) -> None:
    """Call ``fn(start, stop)`` over column chunks, in parallel threads."""
    spans = [(j, min(d, j + chunk)) for j in range(0, d, chunk)]
    k = threads()
    if k == 1 or len(spans) < 4:
        for a, b in spans:
            fn(a, b)
        return
    with ThreadPoolExecutor(max_workers=k) as pool:
        list(pool.map(lambda s: fn(*s), spans))
