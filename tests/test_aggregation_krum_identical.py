"""Krum / Multi-Krum and identical updates (issue 12, item 5; docs/aggregation.md "Krum and identical updates").

Krum scores x_i by the sum of squared distances to its n − f − 2 nearest other inputs and outputs the lowest.
k attackers that send the *same* vector are at distance 0 from each other, so k − 1 of their n − f − 2 terms
are 0 (all of them once k − 1 ≥ n − f − 2): free-riders sending zeros, or Sybils sending one vector – even a
reversed update – beat honest inputs whose spread is comparable to their mean. Honest inputs never coincide.
Krum's (α, f)-resilience (Blanchard et al. 2017) needs η(n, f)·√d·σ < ‖g‖; where the honest spread is that
small the identical attackers lose, which the last test shows."""

from __future__ import annotations

import math

import numpy as np
import pytest

import aggregation as A
from aggregation import planner

N_HONEST, F, D = 7, 3, 50


def honest(rng: np.random.Generator, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Honest updates around g = 1 (‖g‖ = √d ≈ 7.1) with per-coordinate spread σ (σ√d = ‖g‖ at σ = 1, a
    heterogeneous federation)."""
    g = np.ones(D)
    return g + sigma * rng.normal(size=(N_HONEST, D)), g


@pytest.mark.parametrize("seed", range(20))
def test_zero_free_riders_win_krum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, _ = honest(rng)
    x = np.vstack([h, np.zeros((F, D))])  # 3 free-riders send zeros; n = 10 ≥ 2f + 3
    res = A.krum(x, F)
    assert int(np.flatnonzero(res.diagnostics.selected)[0]) >= N_HONEST  # an attacker is selected …
    np.testing.assert_array_equal(res.value, np.zeros(D))  # … and the model does not move
    scores = res.diagnostics.scores
    assert scores[N_HONEST:].max() < scores[:N_HONEST].min()
    # why: among an attacker's n − f − 2 = 5 nearest, the other 2 attackers are at distance 0
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    k = len(x) - F - 2
    np.testing.assert_allclose(np.sort(d2, axis=1)[:, :k].sum(1), scores, rtol=1e-6)
    assert (np.sort(d2[N_HONEST])[:2] == 0).all()


@pytest.mark.parametrize("seed", range(20))
def test_identical_sybils_win_krum_with_a_reversed_update(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, g = honest(rng)
    sybil = -0.2 * g  # points the wrong way
    x = np.vstack([h, np.tile(sybil, (F, 1))])
    res = A.krum(x, F)
    np.testing.assert_allclose(res.value, sybil)
    assert float(res.value @ g) < 0
    # the pipeline and group mode do the same (here the 10 rows are group means, f_groups = 3)
    out, _ = A.aggregate_groups("krum", x * 5, np.full(len(x), 5), F, f_groups=F)
    np.testing.assert_allclose(out.value, sybil, rtol=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_identical_attackers_are_always_among_multi_krums_selection(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, g = honest(rng)
    for attack in (np.zeros(D), -0.2 * g):
        x = np.vstack([h, np.tile(attack, (F, 1))])
        res = A.multi_krum(x, F)  # m = n − f = 7: all 3 attackers + 4 honest
        assert res.diagnostics.selected[N_HONEST:].all()
        honest_mean = h.mean(0)
        # the average moves 3/7 of the way from the honest inputs to the attackers' vector
        assert float(res.value @ g) < 0.8 * float(honest_mean @ g)


def test_the_same_attackers_made_distinct_lose() -> None:
    """It is identity that wins: the same zero-centred attackers with honest-size noise are not selected."""
    wins = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        h, _ = honest(rng)
        x = np.vstack([h, rng.normal(size=(F, D))])  # around 0, spread like the honest inputs
        wins += int(np.flatnonzero(A.krum(x, F).diagnostics.selected)[0]) >= N_HONEST
    assert wins == 0


def test_score_is_exactly_zero_once_k_minus_1_reaches_n_minus_f_minus_2() -> None:
    """k identical vectors, however far away, with k − 1 ≥ n − f − 2: every term of their score is 0 (k > f
    here – beyond the declared f, where Krum promises nothing)."""
    rng = np.random.default_rng(0)
    h, g = honest(rng)
    n, f = 10, 2
    k = n - f - 1  # 7 identical
    x = np.vstack([h[: n - k], np.tile(-1000.0 * g, (k, 1))])
    res = A.krum(x, f)
    assert res.diagnostics.scores[n - k:].max() == 0.0
    np.testing.assert_allclose(res.value, -1000.0 * g)


def test_with_honest_spread_small_enough_for_krums_condition_zeros_lose() -> None:
    """Blanchard et al.: Krum is (α, f)-resilient when η(n, f)·√d·σ < ‖g‖. With that little honest spread the
    zero vectors' partial zero distances no longer beat the honest inputs."""
    n, f = N_HONEST + F, F
    eta = math.sqrt(2 * (n - f + (f * (n - f - 2) + f * f * (n - f - 1)) / (n - 2 * f - 2)))
    sigma = 0.9 / eta  # η·√d·σ = 0.9·‖g‖ (‖g‖ = √d)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        h, g = honest(rng, sigma)
        assert eta * math.sqrt(D) * sigma < np.linalg.norm(g)
        x = np.vstack([h, np.zeros((F, D))])
        assert int(np.flatnonzero(A.krum(x, F).diagnostics.selected)[0]) < N_HONEST


def test_the_planner_and_the_registry_warn_about_krum() -> None:
    for rule in ("krum", "mkrum", "clip(median)|mkrum(m=4)"):
        assert any("identical updates" in w for w in planner.rule_warnings(rule))
        assert any("identical" in c for cs in planner.known_failures(rule).values() for c in cs)
    assert planner.rule_warnings("median") == []
