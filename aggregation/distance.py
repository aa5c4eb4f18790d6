"""Distance-based rules, all computed from one Gram matrix ``X·Xᵀ``.

- Krum and Multi-Krum: Blanchard, El Mhamdi, Guerraoui & Stainer, NeurIPS'17, "Machine Learning with
  Adversaries: Byzantine Tolerant Gradient Descent". score(i) = Σ of the squared distances from x_i to its
  n − f − 2 closest other inputs; Krum outputs the input with the lowest score; Multi-Krum averages the m
  inputs with the lowest scores. Requires n ≥ 2f + 3.
- Bulyan: El Mhamdi, Guerraoui & Rouault, ICML'18, "The Hidden Vulnerability of Distributed Learning in
  Byzantium". θ = n − 2f inputs are selected by applying Krum recursively (select, remove, repeat); then each
  coordinate is the average of the β = θ − 2f selected values closest to that coordinate's median.
  Requires n ≥ 4f + 3.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aggregation.core import (
    AggregationResult,
    check_f,
    check_matrix,
    check_weights,
    column_chunks,
    make_diagnostics,
    no_weights,
    split_finite_gram,
)


def krum_scores(d2: np.ndarray, f: int, members: np.ndarray | None = None) -> np.ndarray:
    """Krum scores of ``members`` (default all) within the set ``members``, from squared distances ``d2``.

    The number of neighbours is ``n' − f − 2`` for the set size ``n'`` (at least 1, as Bulyan's recursion
    needs when the set shrinks below 2f + 3)."""
    idx = np.arange(d2.shape[0]) if members is None else members
    sub = d2[np.ix_(idx, idx)].copy()
    np.fill_diagonal(sub, np.inf)
    k = max(len(idx) - f - 2, 1)
    k = min(k, len(idx) - 1)
    if k <= 0:
        return np.zeros(len(idx))
    part = np.partition(sub, k - 1, axis=1)[:, :k]
    return part.sum(axis=1)


def krum(x: Any, f: int, weights: Any = None) -> AggregationResult:
    """Krum: the input with the lowest score (Blanchard et al. 2017). Requires n ≥ 2f+3.

    The output is one of the inputs, so per-input weights have no meaning: ``weights`` must be None."""
    x = check_matrix(x)
    no_weights(weights, "krum")
    xs, finite, d2, norms_all = split_finite_gram(x)
    n = xs.shape[0]
    check_f(n, f, "krum", lambda k: 2 * k + 3, "2f+3")
    scores = krum_scores(d2, f)
    best = int(np.argmin(scores))
    value = xs[best].copy()
    sel = np.zeros(n, bool)
    sel[best] = True
    return AggregationResult(value, make_diagnostics("krum", x, finite, value, sel, scores, norms2=norms_all))


def multi_krum(x: Any, f: int, m: int | None = None, weights: Any = None) -> AggregationResult:
    """Multi-Krum: the mean of the m inputs with the lowest Krum scores (default m = n − f).
    Requires n ≥ 2f+3 and 1 ≤ m ≤ n. With ``weights`` the selected inputs are averaged with them (selection
    is by score only, as in the paper)."""
    x = check_matrix(x)
    w = check_weights(weights, x.shape[0])
    xs, finite, d2, norms_all = split_finite_gram(x)
    if w is not None:
        w = w[finite]
    n = xs.shape[0]
    check_f(n, f, "multi_krum", lambda k: 2 * k + 3, "2f+3")
    m = n - f if m is None else m
    if not 1 <= m <= n:
        raise ValueError(f"multi_krum: m must be in [1, n={n}], got {m}")
    scores = krum_scores(d2, f)
    chosen = np.argsort(scores, kind="stable")[:m]
    sel = np.zeros(n, bool)
    sel[chosen] = True
    # the (weighted) mean of the selected rows as one matrix-vector product over all rows (zero coefficients
    # for the others): no copy of the selected rows
    coef = sel.astype(np.float64) if w is None else np.where(sel, w, 0.0)
    if coef.sum() <= 0:
        raise ValueError("multi_krum: the selected inputs all have zero weight")
    with np.errstate(over="ignore", invalid="ignore"):
        value = (coef.astype(xs.dtype) @ xs) / xs.dtype.type(coef.sum())
    if not np.all(np.isfinite(value)):  # float32 overflow on huge finite inputs
        value = ((coef / coef.sum()) @ xs.astype(np.float64)).astype(xs.dtype)
    return AggregationResult(value, make_diagnostics("multi_krum", x, finite, value, sel, scores, {"m": m}, norms2=norms_all))


def bulyan(x: Any, f: int, weights: Any = None) -> AggregationResult:
    """Bulyan over Krum (El Mhamdi et al. 2018). Requires n ≥ 4f+3.

    Bulyan counts inputs (selection and coordinate-wise trimming), so ``weights`` must be None."""
    x = check_matrix(x)
    no_weights(weights, "bulyan")
    xs, finite, d2, norms_all = split_finite_gram(x)
    n, d = xs.shape
    check_f(n, f, "bulyan", lambda k: 4 * k + 3, "4f+3")
    theta, beta = n - 2 * f, n - 4 * f
    remaining = np.arange(n)
    chosen: list[int] = []
    first_scores = krum_scores(d2, f)
    for _ in range(theta):
        s = krum_scores(d2, f, remaining)
        pick = int(np.argmin(s))
        chosen.append(int(remaining[pick]))
        remaining = np.delete(remaining, pick)
    sel_idx = np.array(sorted(chosen))
    out = np.empty(d, dtype=xs.dtype)

    lo, hi = (theta - 1) // 2, theta // 2
    span = np.arange(beta)

    def work(a: int, b: int) -> None:
        t = np.ascontiguousarray(xs[sel_idx, a:b].T)  # (cols, θ)
        t.sort(axis=1)
        med = (t[:, lo] + t[:, hi]) * t.dtype.type(0.5)
        # In sorted order the β values closest to the median are a contiguous window t[s : s+β]; its start is
        # the number of windows whose left end is farther from the median than the value just past their right
        # end (a monotone condition; ties keep the smaller value). No partition or argsort needed.
        start = np.count_nonzero((med[:, None] - t[:, : theta - beta]) > (t[:, beta:] - med[:, None]), axis=1)
        vals = np.take_along_axis(t, start[:, None] + span[None, :], axis=1)
        out[a:b] = vals.mean(axis=1, dtype=np.float64 if xs.dtype == np.float64 else np.float32)

    column_chunks(d, work)
    sel = np.zeros(n, bool)
    sel[sel_idx] = True
    return AggregationResult(out, make_diagnostics("bulyan", x, finite, out, sel, first_scores,
                                                   {"theta": theta, "beta": beta}, norms2=norms_all))
