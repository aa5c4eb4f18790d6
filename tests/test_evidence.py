"""coordinator.evidence against naive references written from the definitions (docs/trust.md, "Evidence used
by the engine"): noise-debiased pairwise-distance outlier scores and the honest norm bound on group means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.evidence import debiased_outlier_scores, mean_norm_bound, noise_variance_of_mean
from privacy.client_pipeline import DistributedDPConfig


def naive_scores(means: np.ndarray, noise_var: np.ndarray) -> np.ndarray:
    """Pairwise loops straight from the definition:
    D_ij = sqrt(max(|x_i - x_j|^2 - d (v_i + v_j), 0)), spread_i = median_{j != i} D_ij,
    score_i = spread_i / max(median_i spread_i, 0.05 sqrt(2 d mean(v)) + 1e-12); non-finite rows -> inf and are
    left out of everybody else's spread."""
    g, d = means.shape
    rows = [i for i in range(g) if all(math.isfinite(float(v)) for v in means[i])]
    out = [math.inf] * g
    if len(rows) == 1:
        out[rows[0]] = 1.0
    if len(rows) < 2:
        return np.array(out)
    spread = {}
    for i in rows:
        dists = []
        for j in rows:
            if j == i:
                continue
            sq = sum((float(a) - float(b)) ** 2 for a, b in zip(means[i], means[j], strict=True))
            dists.append(math.sqrt(max(sq - d * (float(noise_var[i]) + float(noise_var[j])), 0.0)))
        spread[i] = float(np.median(dists))
    mean_var = sum(float(noise_var[i]) for i in rows) / len(rows)
    floor = 0.05 * math.sqrt(2 * d * mean_var) + 1e-12
    denom = max(float(np.median(list(spread.values()))), floor)
    for i in rows:
        out[i] = spread[i] / denom
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
def test_debiased_scores_match_the_naive_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    g, d = int(rng.integers(2, 9)), int(rng.integers(1, 40))
    means = rng.normal(size=(g, d)) * rng.uniform(0.1, 3.0)
    noise_var = rng.uniform(0.0, 0.05, size=g)
    np.testing.assert_allclose(debiased_outlier_scores(means, noise_var), naive_scores(means, noise_var),
                               rtol=1e-5, atol=1e-7)  # the Gram product runs in float32


def test_noise_free_scores_are_plain_median_spread_scores() -> None:
    rng = np.random.default_rng(11)
    means = rng.normal(size=(7, 30))
    means[3] += 5.0
    plain = np.array([np.median([np.linalg.norm(means[i] - means[j]) for j in range(7) if j != i])
                      for i in range(7)])
    expected = plain / np.median(plain)
    got = debiased_outlier_scores(means, np.zeros(7))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert int(np.argmax(got)) == 3 and got[3] > 2.5


def _noisy_units(seed: int, g: int = 12, d: int = 8000, shift: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """G units: honest means ~28 apart, the last one shifted by ``shift``; each observed with Gaussian noise
    of known per-coordinate variance v_i (different group sizes → different v_i), total noise energy d·v_i ≫ the
    honest signal spread."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=d)
    mu = base + rng.normal(size=(g, d)) * (20.0 / math.sqrt(d))  # honest heterogeneity, |mu_i - mu_j| ~ 28
    direction = rng.normal(size=d)
    mu[-1] += shift * direction / np.linalg.norm(direction)
    noise_var = rng.choice([1.0, 0.75, 0.6], size=g)
    x = mu + rng.normal(size=(g, d)) * np.sqrt(noise_var)[:, None]
    return x, noise_var


@pytest.mark.parametrize("seed", range(10))
def test_known_noise_is_removed_honest_units_near_one_shifted_unit_high(seed: int) -> None:
    x, v = _noisy_units(seed)
    scores = debiased_outlier_scores(x, v)
    honest, shifted = scores[:-1], scores[-1]
    assert np.all((honest > 0.7) & (honest < 1.3)), honest
    assert shifted > 2.5, scores  # τ = 2.5: fully negative evidence
    # why the debiasing is needed: the raw distances hide the same attacker (noise energy d·(v_i + v_j) dominates)
    raw = debiased_outlier_scores(x, np.zeros_like(v))
    assert raw[-1] < 1.6 and raw[-1] < shifted / 2, raw


def test_expected_squared_distance_identity() -> None:
    """E|x_i - x_j|^2 = |mu_i - mu_j|^2 + d (v_i + v_j): what the debiasing subtracts is exact, not a heuristic."""
    rng = np.random.default_rng(5)
    d, trials = 400, 4000
    mu_i, mu_j = rng.normal(size=d), rng.normal(size=d)
    v_i, v_j = 0.3, 0.8
    xi = mu_i + rng.normal(size=(trials, d)) * math.sqrt(v_i)
    xj = mu_j + rng.normal(size=(trials, d)) * math.sqrt(v_j)
    observed = float(np.mean(np.sum((xi - xj) ** 2, axis=1)))
    expected = float(np.sum((mu_i - mu_j) ** 2) + d * (v_i + v_j))
    # std of one squared distance ≈ sqrt(2d)(v_i+v_j) + 2|mu_i-mu_j|sqrt(v_i+v_j); the mean of 4000 is 63× tighter
    tol = 5 * (math.sqrt(2 * d) * (v_i + v_j) + 2 * math.sqrt(expected) * math.sqrt(v_i + v_j)) / math.sqrt(trials)
    assert abs(observed - expected) < tol


def test_large_common_offset_keeps_scores_accurate() -> None:
    """Units that share a component 100× longer than their differences (cancellation in the Gram form)."""
    rng = np.random.default_rng(4)
    d, g = 1000, 9
    base = rng.normal(size=d)
    x = 100.0 * base / np.linalg.norm(base) + rng.normal(size=(g, d)) / math.sqrt(d)
    x[0] += 4.0 * rng.normal(size=d) / math.sqrt(d)
    np.testing.assert_allclose(debiased_outlier_scores(x, np.zeros(g)), naive_scores(x, np.zeros(g)), rtol=1e-2)


def test_non_finite_rows_score_inf_and_are_left_out() -> None:
    rng = np.random.default_rng(2)
    means = rng.normal(size=(6, 10))
    v = np.full(6, 0.01)
    bad = means.copy()
    bad[1, 4] = np.nan
    bad[4, 0] = np.inf
    got = debiased_outlier_scores(bad, v)
    assert np.isinf(got[1]) and np.isinf(got[4])
    keep = [0, 2, 3, 5]
    np.testing.assert_allclose(got[keep], debiased_outlier_scores(means[keep], v[keep]), rtol=1e-6)
    np.testing.assert_allclose(got, naive_scores(bad, v), rtol=1e-5)


def test_single_and_degenerate_units() -> None:
    np.testing.assert_array_equal(debiased_outlier_scores(np.ones((1, 5)), np.zeros(1)), [1.0])
    one_finite = np.array([[1.0, 2.0], [np.nan, 0.0]])
    np.testing.assert_array_equal(debiased_outlier_scores(one_finite, np.zeros(2)), [1.0, np.inf])
    assert np.all(np.isinf(debiased_outlier_scores(np.full((3, 4), np.nan), np.zeros(3))))
    # identical, noise-free units: no spread anywhere → scores 0 (never NaN, never spurious outliers)
    same = debiased_outlier_scores(np.ones((4, 3)), np.zeros(4))
    assert np.all(np.isfinite(same)) and np.all(same <= 1.0)


def test_pure_noise_gives_no_spurious_outliers() -> None:
    """Every unit has the same mean: after debiasing the spreads are noise around 0 and the floor (5 % of the
    noise scale) keeps every score small."""
    rng = np.random.default_rng(9)
    d, g, v = 1000, 10, 0.5
    x = rng.normal(size=(g, d)) * math.sqrt(v)
    scores = debiased_outlier_scores(x, np.full(g, v))
    assert np.all(scores < 2.5), scores


def test_noise_variance_of_mean() -> None:
    assert noise_variance_of_mean(3, 10.0, 100.0) == pytest.approx((100 + 1 / 6) / (3 * 100.0**2))
    assert noise_variance_of_mean(1, 0.0, 2.0) == pytest.approx(1 / 24)
    with pytest.raises(ValueError):
        noise_variance_of_mean(0, 1.0, 1.0)


# ── the honest norm bound ─────────────────────────────────────────────────────────────────────────────────
def _group_means(rng: np.random.Generator, n: int, s: int, d: int, dp: DistributedDPConfig,
                 attacker_scale: float | None) -> np.ndarray:
    """n draws of a group mean as the server decodes it: each of the s members clips its update to C (worst case:
    all at norm exactly C and aligned), quantizes with stochastic rounding at the fixed-point scale, adds a rounded
    Gaussian noise share of std σ_c grid units; the server sums and divides by s·scale. With ``attacker_scale``,
    member 0 instead sends −attacker_scale·C·u, unclipped."""
    scale, sigma = dp.fixed_point().scale(), dp.sigma_client()
    u = rng.normal(size=(n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    total = np.zeros((n, d))
    for k in range(s):
        x = dp.l2_clip * u
        if k == 0 and attacker_scale is not None:
            x = -attacker_scale * dp.l2_clip * u
        g = x * scale
        lo = np.floor(g)
        q = lo + (rng.random(size=g.shape) < (g - lo))
        total += q + np.rint(rng.normal(size=g.shape) * sigma)
    return total / (s * scale)


def test_honest_group_means_stay_under_the_bound_in_10000_draws() -> None:
    d, s = 256, 3
    for z in (0.1, 1.0):
        dp = DistributedDPConfig(1.0, z, 12, 32, 2, d)
        v = noise_variance_of_mean(s, dp.sigma_client(), dp.fixed_point().scale())
        bound = mean_norm_bound(dp.l2_clip, d, dp.fixed_point().scale(), v)
        rng = np.random.default_rng(1234)
        worst = 0.0
        for _ in range(10):
            norms = np.linalg.norm(_group_means(rng, 1000, s, d, dp, None), axis=1)
            worst = max(worst, float(norms.max()))
        assert worst <= bound, (z, worst, bound)
        assert bound >= dp.l2_clip  # honest slack is never below C


def test_an_unclipped_x10_update_exceeds_the_bound() -> None:
    d, s = 256, 3
    dp = DistributedDPConfig(1.0, 0.1, 12, 32, 2, d)
    v = noise_variance_of_mean(s, dp.sigma_client(), dp.fixed_point().scale())
    bound = mean_norm_bound(dp.l2_clip, d, dp.fixed_point().scale(), v)
    norms = np.linalg.norm(_group_means(np.random.default_rng(99), 1000, s, d, dp, 10.0), axis=1)
    assert norms.min() > bound, (norms.min(), bound)


def test_bound_without_noise_is_clip_plus_rounding() -> None:
    assert mean_norm_bound(2.0, 100, 10.0, 0.0) == pytest.approx(2.0 + 10 / 10.0)
