"""Pre-aggregation steps: they transform the (n, d) inputs before a rule aggregates them.

- Norm clipping: x_i ← x_i · min(1, c/‖x_i‖), with a fixed c or c = median of the norms (adaptive).
- Bucketing: Karimireddy, He & Jaggi, ICLR'22, "Byzantine-Robust Learning on Heterogeneous Datasets via
  Bucketing" (Algorithm 1): shuffle the inputs at random, average them in buckets of s; a Byzantine input
  corrupts at most one bucket, so ⌈n/s⌉ buckets hold at most f corrupted ones, while heterogeneity
  among honest inputs shrinks.
- Nearest-neighbour mixing (NNM): Allouah, Farhadkhani, Guerraoui, Gupta, Pinot & Stephan, AISTATS'23,
  "Fixing by Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity": each x_i is replaced by the
  average of its n − f nearest neighbours (itself included), computed from one Gram matrix.

Each step returns the new inputs and a ``mixing`` matrix (n_out × n_in): output j = Σ_i mixing[j, i] · x_i,
so diagnostics can be traced back to the original inputs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from aggregation.core import gram_sq_distances, scale_rows, sq_norms, threads


@dataclass
class StepOutput:
    x: np.ndarray
    mixing: np.ndarray  # (n_out, n_in)
    f: int  # the number of possibly-Byzantine outputs
    info: dict


def clip_norms(x: np.ndarray, c: float | str, f: int) -> StepOutput:
    """Clip every row to L2 norm ``c`` (a number, or ``"median"`` for the median row norm)."""
    norms = np.sqrt(sq_norms(x))
    if isinstance(c, str):
        if c != "median":
            raise ValueError(f"clip: threshold must be a positive number or 'median', got {c!r}")
        threshold = float(np.median(norms))
    else:
        threshold = float(c)
    if not threshold > 0:
        if isinstance(c, str):  # every input (or the median one) is zero: nothing to clip
            return StepOutput(x, np.eye(len(x)), f, {"threshold": threshold})
        raise ValueError(f"clip: threshold must be > 0, got {c}")
    with np.errstate(divide="ignore"):
        factors = np.minimum(1.0, threshold / np.where(norms > 0, norms, np.inf))
    out = scale_rows(x, factors) if np.any(factors < 1) else x
    return StepOutput(out, np.diag(factors), f, {"threshold": threshold, "factors": factors})


def bucketing(x: np.ndarray, s: int, f: int, rng: np.random.Generator) -> StepOutput:
    """Random buckets of ``s`` inputs, averaged. Requires s ≥ 1."""
    if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1:
        raise ValueError(f"bucket: bucket size s must be an integer >= 1, got {s!r}")
    n = len(x)
    perm = rng.permutation(n)
    buckets = [perm[i: i + s] for i in range(0, n, s)]
    mixing = np.zeros((len(buckets), n))
    out = np.empty((len(buckets), x.shape[1]), dtype=x.dtype)

    def fill(j: int) -> None:
        # row sums in place: one read of each input row, one write of each bucket row
        b = buckets[j]
        np.copyto(out[j], x[b[0]])
        for i in b[1:]:
            out[j] += x[i]
        if len(b) > 1:
            out[j] *= x.dtype.type(1.0 / len(b))

    for j, b in enumerate(buckets):
        mixing[j, b] = 1.0 / len(b)
    k = threads()
    if k == 1 or x.size < 1 << 20:
        for j in range(len(buckets)):
            fill(j)
    else:
        with ThreadPoolExecutor(max_workers=k) as pool:
            list(pool.map(fill, range(len(buckets))))
    return StepOutput(out, mixing, min(f, len(buckets)), {"buckets": [b.tolist() for b in buckets]})


def nnm(x: np.ndarray, f: int) -> StepOutput:
    """Nearest-neighbour mixing with n − f neighbours (including the input itself). Requires n > f."""
    n = len(x)
    if f >= n:
        raise ValueError(f"nnm needs n > f: got n={n}, f={f}")
    d2 = gram_sq_distances(x)
    k = n - f
    mixing = np.zeros((n, n))
    for i in range(n):
        # self first (distance 0), ties broken by index for determinism
        order = np.lexsort((np.arange(n), d2[i]))
        mixing[i, order[:k]] = 1.0 / k
    out = mixing.astype(x.dtype) @ x
    return StepOutput(out, mixing, f, {"neighbours": k})
