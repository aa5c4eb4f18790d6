"""Group mode: aggregation over the sums of secure-aggregation groups.

With secure aggregation inside groups (the SHARE pattern: Velicheti, Xia & Koyejo 2022, "Secure Byzantine-
Robust Distributed Learning via Clustering"), the server learns only each group's sum and size. Robust rules
then run over the G group *means*, weighted by group size where the rule is a mean.

How f Byzantine clients become corrupted groups: one Byzantine member is enough to corrupt a group's sum
(it can shift it arbitrarily), so up to ``min(f, G)`` groups may be corrupted. The partition comes from public
randomness, so attackers cannot choose to share a group; in expectation fewer groups are hit. The rule's
precondition is checked for the worst case ``f_groups = min(f, G)`` unless the caller passes a smaller value
it has justified (e.g. from :func:`corrupted_groups_tail` at a risk it accepts). Large groups make robustness
harder: with 5 attackers among 25 clients in groups of 5, every one of the 5 groups may be corrupted.
"""

from __future__ import annotations

from functools import lru_cache
from math import comb
from typing import Any

import numpy as np

from aggregation.core import AggregationResult
from aggregation.pipeline import Pipeline, PipelineState, parse_pipeline


def worst_case_corrupted_groups(f: int, num_groups: int) -> int:
    return min(f, num_groups)


def group_means(group_sums: Any, group_sizes: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(group_sums)
    sizes = np.asarray(group_sizes, dtype=np.float64)
    if s.ndim != 2 or sizes.shape != (s.shape[0],):
        raise ValueError(f"group sums must be (G, d) with G sizes, got {s.shape} and {sizes.shape}")
    if np.any(sizes <= 0) or not np.all(np.isfinite(sizes)):
        raise ValueError("group sizes must be positive")
    dtype = s.dtype if s.dtype in (np.float32, np.float64) else np.float32
    return (s / sizes[:, None]).astype(dtype, copy=False), sizes


def aggregate_groups(pipeline: str | Pipeline, group_sums: Any, group_sizes: Any, f_clients: int, *,
                     f_groups: int | None = None, state: PipelineState | None = None,
                     rng: np.random.Generator | None = None, root_update: Any = None
                     ) -> tuple[AggregationResult, PipelineState]:
    """Run ``pipeline`` over group means (weights = group sizes). Diagnostics are per group.

    ``f_groups`` defaults to the worst case ``min(f_clients, G)``."""
    means, sizes = group_means(group_sums, group_sizes)
    g = means.shape[0]
    fg = worst_case_corrupted_groups(f_clients, g) if f_groups is None else f_groups
    if fg < 0 or fg > g:
        raise ValueError(f"f_groups must be in [0, G={g}], got {fg}")
    p = pipeline if isinstance(pipeline, Pipeline) else parse_pipeline(pipeline)
    # sizes weight the rules that average (mean, wmean, gm, cc, mkrum's final mean); counting rules (median,
    # trmean, krum, bulyan, fltrust) take every group once, as the f_groups precondition counts groups
    res, st = p(means, fg, weights=sizes, state=state, rng=rng, root_update=root_update, unit="groups")
    res.diagnostics.extra["f_groups"] = fg
    res.diagnostics.extra["group_sizes"] = sizes
    return res, st


@lru_cache(maxsize=256)
def _hit_distribution(sizes: tuple[int, ...], f: int) -> tuple[float, ...]:
    """P(exactly j groups contain at least one of f attackers), for a uniformly random placement of the f
    attackers among the n = Σ sizes clients (equivalently, a uniformly random partition)."""
    # ways[a][j]: placements of a attackers in the groups so far with j groups hit
    ways = [[0] * (len(sizes) + 1) for _ in range(f + 1)]
    ways[0][0] = 1
    for s in sizes:
        new = [[0] * (len(sizes) + 1) for _ in range(f + 1)]
        for a in range(f + 1):
            for j in range(len(sizes) + 1):
                w = ways[a][j]
                if not w:
                    continue
                for k in range(0, min(s, f - a) + 1):
                    new[a + k][j + (k > 0)] += w * comb(s, k)
        ways = new
    total = comb(sum(sizes), f)
    return tuple(ways[f][j] / total for j in range(len(sizes) + 1))


def corrupted_groups_distribution(group_sizes: list[int] | tuple[int, ...], f: int) -> np.ndarray:
    """Exact distribution of the number of corrupted groups (index j = exactly j groups corrupted)."""
    sizes = tuple(int(s) for s in group_sizes)
    if any(s < 1 for s in sizes) or f < 0 or f > sum(sizes):
        raise ValueError(f"need positive group sizes and 0 <= f <= n, got sizes={sizes}, f={f}")
    return np.array(_hit_distribution(sizes, f))


def corrupted_groups_tail(group_sizes: list[int] | tuple[int, ...], f: int, k: int) -> float:
    """P(more than k groups are corrupted) under a random partition."""
    dist = corrupted_groups_distribution(group_sizes, f)
    return float(dist[k + 1:].sum())


def prob_at_most_corrupted_groups(group_sizes: list[int] | tuple[int, ...], f: int, k: int) -> float:
    """P(at most k groups are corrupted) when f attackers land in a uniformly random partition with these group
    sizes (the expected-case counterpart of the worst case ``min(f, G)``). For equal groups of size s this is
    the multivariate-hypergeometric occupancy law: P(exactly j groups hit) =
    C(G, j) · Σ_i (−1)^i C(j, i) C((j − i)s, f) / C(Gs, f)."""
    dist = corrupted_groups_distribution(group_sizes, f)
    return float(min(1.0, dist[: max(k, -1) + 1].sum()))


def f_groups_at_risk(group_sizes: list[int] | tuple[int, ...], f: int, risk: float) -> int:
    """The smallest k with P(more than k groups corrupted) ≤ ``risk``: an expected-case f_groups a caller may
    pass to :func:`aggregate_groups` if it accepts that risk per round (the default stays the worst case)."""
    if not 0.0 <= risk < 1.0:
        raise ValueError(f"risk must be in [0, 1), got {risk}")
    dist = corrupted_groups_distribution(group_sizes, f)
    tail = 1.0 - np.cumsum(dist)
    return int(np.flatnonzero(tail <= risk + 1e-15)[0])
