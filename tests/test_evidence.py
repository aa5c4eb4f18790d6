"""coordinator.federation.evidence against naive references written from the definitions (docs/trust.md, "Evidence used
by the engine"): noise-debiased pairwise-distance outlier scores, the honest norm bound on group means, and the
measured noise (properties of the estimator here; the omitted-share attack through the real client pipeline is in
tests/test_evidence_omission.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.federation.evidence import (
    BOUND_MARGIN_K,
    DEFICIT_MARGIN_K,
    MAD_TO_SIGMA,
    MIN_MEASURED_DIMENSION,
    bound_noise_variance,
    debiased_outlier_scores,
    effective_noise_variance,
    mean_norm_bound,
    measured_noise_variance,
    noise_deficient,
    noise_variance_of_mean,
)
from privacy.backends import numpy_backend
from privacy.client_pipeline import DistributedDPConfig
from privacy.dp.discrete_gaussian import sample_discrete_gaussian
from privacy.randomness import RandomStream


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


# ── the measured noise ─────────────────────────────────────────────────────────────────────────────────────────
def naive_measured(row: np.ndarray) -> float:
    """(1.4826 · median |x − median x|)², straight from the definition."""
    xs = [float(v) for v in row]
    if not all(math.isfinite(v) for v in xs):
        return math.inf
    med = float(np.median(xs))
    return (1.4826 * float(np.median([abs(v - med) for v in xs]))) ** 2


def test_measured_variance_matches_the_definition() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 101)) * rng.uniform(0.1, 5, size=(5, 1)) + rng.normal(size=(5, 1)) * 10
    np.testing.assert_allclose(measured_noise_variance(x), [naive_measured(r) for r in x], rtol=1e-12)
    assert abs(MAD_TO_SIGMA * 0.6744897501960817 - 1) < 1e-4  # 1/Φ⁻¹(3/4)


def test_measured_variance_of_pure_noise_rows_is_within_a_few_percent() -> None:
    """Rows of N(c, σ²) at d = 10⁴, σ from 0.01 to 100, any offset c: each σ estimate within 5 % (4.3 standard
    errors of 1.17/√d), the average variance within 2 %; float32 rows (what the engine decodes) give the same."""
    rng = np.random.default_rng(7)
    sigma = np.geomspace(0.01, 100, 24)
    x = rng.normal(size=(24, 10_000)) * sigma[:, None] + rng.normal(size=(24, 1)) * 50
    ratio = measured_noise_variance(x) / sigma**2
    assert np.all(np.abs(np.sqrt(ratio) - 1) < 0.05), ratio
    assert abs(ratio.mean() - 1) < 0.02, ratio.mean()
    # float32 rounding of an offset of ~50 is ~4e-6, i.e. < 0.1 % of σ = 0.01
    np.testing.assert_allclose(measured_noise_variance(x.astype(np.float32)), ratio * sigma**2, rtol=2e-3)


def test_measured_variance_relative_standard_error_is_2_33_over_sqrt_d() -> None:
    """The figure the margins are built on (docs/trust.md): std of the estimate / σ² ≈ 2.33/√d."""
    rng = np.random.default_rng(8)
    d = 2000
    est = measured_noise_variance(rng.normal(size=(3000, d)))
    assert est.std() * math.sqrt(d) == pytest.approx(2.33, rel=0.08)
    assert est.mean() == pytest.approx(1.0, abs=0.005)


def test_measured_variance_ignores_a_sparse_shift() -> None:
    """1 % of the coordinates shifted by 50 σ (energy 25× the noise's, the sample variance is ≈ 26 σ²): the estimate
    moves by ≈ 2.3 % (the median of |x − med| moves from the 75th to the 75.25th percentile of the noise)."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(4, 100_000))
    x[:, :1000] += 50.0
    assert np.all(x.var(axis=1) > 20)
    got = measured_noise_variance(x)
    assert np.all((got > 0.99) & (got < 1.06)), got


def test_measured_variance_degenerate_rows() -> None:
    x = np.ones((5, 8))
    x[0] = 0.0  # zero row
    x[1, 3] = np.inf
    x[2, 0] = -np.inf
    x[3, 5] = np.nan
    x[4] = np.arange(8.0)
    got = measured_noise_variance(x)
    assert got[0] == 0.0 and np.all(np.isinf(got[1:4]))
    assert got[4] == pytest.approx(naive_measured(x[4]))
    np.testing.assert_array_equal(measured_noise_variance(np.array([[3.0], [np.inf]])), [0.0, np.inf])  # d = 1
    np.testing.assert_array_equal(measured_noise_variance(np.zeros((3, 0))), np.zeros(3))
    assert measured_noise_variance(np.zeros((0, 5))).shape == (0,)
    with pytest.raises(ValueError):
        measured_noise_variance(np.zeros(5))


def test_effective_variance_is_the_smaller_of_assumed_and_measured() -> None:
    rng = np.random.default_rng(10)
    x = rng.normal(size=(4, 5000)) * np.array([[0.5], [1.0], [2.0], [1.0]])
    x[3, 7] = np.nan
    assumed = np.array([1.0, 1.0, 1.0, 1.0])
    got = effective_noise_variance(assumed, x)
    np.testing.assert_allclose(got, np.minimum(assumed, measured_noise_variance(x)))
    assert got[0] == pytest.approx(0.25, rel=0.15) and got[2] == 1.0 and got[3] == 1.0
    np.testing.assert_array_equal(effective_noise_variance(1.0, x), got)  # a scalar is broadcast
    np.testing.assert_array_equal(effective_noise_variance(assumed, x, measured=np.full(4, 0.5)), np.full(4, 0.5))


def test_bound_variance_small_d_and_form() -> None:
    rng = np.random.default_rng(11)
    small = rng.normal(size=(3, MIN_MEASURED_DIMENSION - 1)) * 0.1
    np.testing.assert_array_equal(bound_noise_variance(np.array([1.0, 2.0, 3.0]), small), [1.0, 2.0, 3.0])
    d = 4 * MIN_MEASURED_DIMENSION
    x = rng.normal(size=(2, d)) * 0.5
    m = measured_noise_variance(x)
    res = 0.01
    expected = np.minimum(1.0, (np.sqrt(m) + MAD_TO_SIGMA * res) ** 2 * (1 + BOUND_MARGIN_K / math.sqrt(d)))
    np.testing.assert_allclose(bound_noise_variance(1.0, x, res), expected)
    assert np.all(bound_noise_variance(0.01, x) == 0.01)  # never more than prescribed


@pytest.mark.parametrize("d", [MIN_MEASURED_DIMENSION, 4000])
def test_honest_means_stay_under_the_bound_from_the_measured_variance(d: int) -> None:
    """20,000 honest group means, worst case signal (norm exactly C + rounding allowance, one direction shared by
    all draws) plus Gaussian noise of exactly the prescribed variance: never over the bound computed from
    ``bound_noise_variance`` (observed: the largest ‖x‖² − B² is 2.4–3.3 noise-energy standard deviations below 0,
    as for the bound from the prescribed variance, which the measured one undercuts for honest means only when
    the MAD is ≥ 3.4 standard errors low)."""
    rng = np.random.default_rng(d)
    scale, v, n = 100.0, 0.05, 20_000
    c = 1.0 + math.sqrt(d) / scale
    s = rng.normal(size=d)
    s *= c / np.linalg.norm(s)
    worst = -math.inf
    for _ in range(n // 2000):
        x = s + rng.normal(size=(2000, d)) * math.sqrt(v)
        bounds = np.array([mean_norm_bound(1.0, d, scale, w) for w in bound_noise_variance(v, x)])
        worst = max(worst, float(np.max((np.linalg.norm(x, axis=1) ** 2 - bounds**2) / (math.sqrt(2 * d) * v))))
    assert worst < 0, worst  # in units of the noise energy's std


def test_noise_deficit_on_gaussian_rows() -> None:
    """Rows with the full prescribed noise are never flagged (20,000 rows at d = 1000, the smallest d used);
    rows with 4/5 of it are at d = 20,000; d too small or nothing prescribed: never flagged."""
    rng = np.random.default_rng(12)
    for _ in range(10):
        assert not noise_deficient(1.0, rng.normal(size=(2000, MIN_MEASURED_DIMENSION))).any()
    short = rng.normal(size=(20, 20_000)) * math.sqrt(0.8)
    assert noise_deficient(1.0, short).all()
    assert not noise_deficient(0.0, short).any()
    assert not noise_deficient(1.0, short[:, : MIN_MEASURED_DIMENSION - 1] * 0).any()
    bad = short[:2].copy()
    bad[0, 0] = np.inf
    np.testing.assert_array_equal(noise_deficient(1.0, bad), [False, True])  # non-finite: the norm bound's job


def _log10_tail(n: int, p: float, k: int) -> float:
    """log10 P(Binomial(n, p) ≥ k)."""
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
             + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / math.log(10)


def test_deficit_false_alarm_probability_from_the_exact_order_statistic() -> None:
    """The MAD of N(0, σ²) data (median-centring ignored) falls below σ/(1.4826·√f) iff at least half of the |x_k|
    do, a binomial tail: with f = 1 + 16/√d it is ≤ 1e-7 at d = 1000 and ≤ 3e-10 at d = 10⁴ (docstring claim)."""
    q = 1 / MAD_TO_SIGMA
    for d, limit in ((MIN_MEASURED_DIMENSION, -7.0), (10_000, -9.5)):
        f = 1 + DEFICIT_MARGIN_K / math.sqrt(d)
        p = math.erf(q / math.sqrt(f) / math.sqrt(2))  # P(|N(0,1)| ≤ q/√f)
        assert _log10_tail(d, p, (d + 1) // 2) < limit


@pytest.mark.parametrize("sigma_c", [2.0, 2.5, 4.0])
def test_noise_deficit_on_lattice_data_needs_the_resolution(sigma_c: float) -> None:
    """Integer-valued sums of 4 discrete-Gaussian shares (the real sampler) with a noise std of only a few grid
    units: the MAD of lattice data can fall well below the continuous one (σ_c = 2.5: 0.79 of the truth), so without
    the grid spacing honest sums would be flagged; with ``resolution`` = 1 grid unit they never are."""
    be = numpy_backend()
    d = 20_000
    rows = np.stack([sum(np.asarray(sample_discrete_gaussian(d, sigma_c, RandomStream(bytes([r, k]) + bytes(30)), be),
                                    dtype=np.float64) for k in range(4)) for r in range(6)])
    assert not noise_deficient(4 * sigma_c**2, rows, 1.0).any()
    assert np.all(bound_noise_variance(4 * sigma_c**2 + 4 / 6, rows, 1.0) >= 4 * sigma_c**2 * 0.999)
