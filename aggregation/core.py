"""Shared types and helpers: results with diagnostics, input validation, non-finite exclusion, distances."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

FloatArray = np.ndarray


class Diagnostics:
    """What an aggregator saw, per input (indexed like the caller's rows, excluded rows included).

    - ``scores``: the rule's own score (Krum: sum of squared distances to neighbours; FLTrust: trust score;
      other rules: the distance to the result). ``nan`` for excluded rows.
    - ``selected``: the input contributed to the result.
    - ``excluded_nonfinite``: the input had a NaN/Inf and was dropped before aggregation.
    - ``distances``: ``‖x_i − result‖₂`` (``inf`` for non-finite rows).
    - ``outlier_scores``: ``distances / median(distances of finite rows)`` – about 1 for a typical input,
      large for an outlier, ``inf`` for a non-finite row; comparable across rounds and rules. The
      coordinator's trust system consumes this (docs/trust.md).

    Distances cost one pass over the inputs, so they are computed on first access (and cached): a caller that
    only needs the aggregate pays nothing for them.
    """

    def __init__(self, rule: str, x: FloatArray, finite: np.ndarray, value: FloatArray, selected: np.ndarray,
                 scores: np.ndarray | None, extra: dict[str, Any] | None, norms2: np.ndarray | None = None
                 ) -> None:
        self.rule = rule
        self.selected = selected
        self.excluded_nonfinite = ~finite
        self.extra: dict[str, Any] = dict(extra or {})
        self._x, self._finite, self._value, self._norms2 = x, finite, value, norms2
        self._scores = scores
        self._distances: np.ndarray | None = None

    @property
    def distances(self) -> np.ndarray:
        if self._distances is None:
            x, finite = self._x, self._finite
            n = x.shape[0]
            dist = np.full(n, np.inf)
            idx = np.flatnonzero(finite)
            rows = x if len(idx) == n else x[idx]
            norms2 = None if self._norms2 is None else self._norms2[idx]
            dist[idx] = distances_to(rows, self._value, norms2)
            self._distances = dist
            self._x = None  # drop the reference to the inputs
        return self._distances

    @property
    def outlier_scores(self) -> np.ndarray:
        dist = self.distances
        finite = ~self.excluded_nonfinite
        med = float(np.median(dist[finite])) if finite.any() else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            out = dist / med if med > 0 else np.where(dist > 0, np.inf, 1.0)
        out[~finite] = np.inf
        return out

    @property
    def scores(self) -> np.ndarray:
        n = len(self.selected)
        out = np.full(n, np.nan)
        idx = np.flatnonzero(~self.excluded_nonfinite)
        out[idx] = self.distances[idx] if self._scores is None else self._scores
        return out

    def __repr__(self) -> str:
        return (f"Diagnostics(rule={self.rule!r}, n={len(self.selected)}, selected={int(self.selected.sum())}, "
                f"excluded_nonfinite={int(self.excluded_nonfinite.sum())})")


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


def no_weights(weights: Any, rule: str) -> None:
    """Rules defined by counting inputs (order statistics, selection of one input) have no per-input weights
    in their papers; rather than silently ignore weights, refuse them."""
    if weights is not None:
        raise ValueError(f"{rule}: the rule counts inputs and has no per-input weights in its paper's "
                         f"definition; pass weights=None (docs/aggregation.md, 'Weights')")


def finite_rows(x: FloatArray) -> np.ndarray:
    """Boolean mask of rows without NaN/Inf (one BLAS dot per row; no (n, d) temporary)."""
    return finite_rows_and_norms(x)[0]


def finite_rows_and_norms(x: FloatArray) -> tuple[np.ndarray, np.ndarray]:
    """(finite-row mask, squared row norms) in one pass: ``x_i·x_i`` is NaN/Inf iff the row has a NaN/Inf,
    except when huge finite values overflow float32, which is re-checked exactly for those rows."""
    norms2 = _row_dots(x)
    ok = np.isfinite(norms2)
    for i in np.flatnonzero(~ok):
        if np.all(np.isfinite(x[i])):
            ok[i] = True
            r = x[i].astype(np.float64)
            norms2[i] = float(np.dot(r, r))
    return ok, norms2


def _row_dots(x: FloatArray) -> np.ndarray:
    """``x_i·x_i`` per row (float32 BLAS dot, may overflow to inf), rows split across threads."""
    def dot(r: np.ndarray) -> float:
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.dot(r, r))

    k = threads()
    if k == 1 or x.shape[0] * x.shape[1] < 1 << 20:
        return np.array([dot(r) for r in x], dtype=np.float64)
    with ThreadPoolExecutor(max_workers=k) as pool:
        return np.array(list(pool.map(dot, x)), dtype=np.float64)


def scale_rows(x: FloatArray, factors: np.ndarray) -> FloatArray:
    """A new array with row i multiplied by ``factors[i]`` (row blocks in parallel threads: first-touch page
    faults of the new array and the multiply both scale with threads)."""
    out = np.empty_like(x)
    f = factors.astype(x.dtype)
    k = threads()
    if k == 1 or x.size < 1 << 20:
        np.multiply(x, f[:, None], out=out)
        return out
    bounds = np.linspace(0, x.shape[0], min(k, x.shape[0]) + 1).astype(int)

    def work(a: int, b: int) -> None:
        np.multiply(x[a:b], f[a:b, None], out=out[a:b])

    with ThreadPoolExecutor(max_workers=k) as pool:
        list(pool.map(lambda ab: work(*ab), itertools.pairwise(bounds)))
    return out


def sq_norms(x: FloatArray) -> np.ndarray:
    """Squared row norms as float64, without an (n, d) temporary (BLAS dot per row; rows whose float32 dot
    overflows are recomputed in float64)."""
    out = _row_dots(x)
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
    return _sq_distances_from_gram(g)


def _sq_distances_from_gram(g: np.ndarray) -> np.ndarray:
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
                     extra: dict[str, Any] | None = None, norms2: np.ndarray | None = None) -> Diagnostics:
    """Build :class:`Diagnostics` for the caller's rows from per-finite-row selections/scores."""
    selected = np.zeros(x.shape[0], dtype=bool)
    selected[np.flatnonzero(finite)] = selected_finite
    return Diagnostics(rule, x, finite, value, selected, scores_finite, extra, norms2)


def split_finite(x: FloatArray, weights: FloatArray | None) -> tuple[FloatArray, np.ndarray,
                                                                     FloatArray | None]:
    """Drop non-finite rows. Returns (rows, finite mask, weights of the kept rows)."""
    xs, finite, w, _ = split_finite_norms(x, weights)
    return xs, finite, w


def split_finite_norms(x: FloatArray, weights: FloatArray | None
                       ) -> tuple[FloatArray, np.ndarray, FloatArray | None, np.ndarray]:
    """:func:`split_finite` plus the squared norms of the caller's rows (``inf``/``nan`` where non-finite)."""
    finite, norms2 = finite_rows_and_norms(x)
    if finite.all():
        return x, finite, weights, norms2
    if not finite.any():
        raise ValueError("every input contains NaN or Inf: nothing to aggregate")
    return x[finite], finite, (None if weights is None else weights[finite]), norms2


def split_finite_gram(x: FloatArray) -> tuple[FloatArray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-finite exclusion fused with the Gram matrix: (finite rows, finite mask, their pairwise squared
    distances, squared norms of the caller's rows).

    ``X·Xᵀ`` has a NaN/Inf in row i iff input i has one (or overflows float32), so the common all-finite case
    costs the one Gram matrix and no separate pass; otherwise rows are checked exactly and the Gram matrix of
    the finite rows is recomputed (in float64 where float32 overflows)."""
    with np.errstate(over="ignore", invalid="ignore"):
        g = (x @ x.T).astype(np.float64)
    if np.all(np.isfinite(g)):
        return x, np.ones(x.shape[0], bool), _sq_distances_from_gram(g), np.diag(g).copy()
    xs, finite, _, norms2 = split_finite_norms(x, None)
    return xs, finite, gram_sq_distances(xs), norms2


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
