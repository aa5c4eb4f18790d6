"""Differential privacy: noise distributions, accountant cross-checked against opacus and the analytic
Gaussian mechanism, budget refusal, DP-FedAvg and adaptive clipping, and the distributed-DP client pipeline
composed with secure aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from privacy.backends import numpy_backend, pure_backend
from privacy.client_pipeline import DistributedDPConfig, decode_sum, prepare_update
from privacy.dp import (
    AdaptiveClipState,
    BudgetExceeded,
    DPFedAvg,
    PrivacyAccountant,
    PrivacyBudget,
    RoundEvent,
    adaptive_clip_update,
    l2_clip,
    sample_discrete_gaussian,
)
from privacy.dp.accounting import ORDERS
from privacy.dp.server import gaussian
from privacy.randomness import RandomStream

NB, PB = numpy_backend(), pure_backend()


def _var_ci_ok(samples: np.ndarray, var: float) -> bool:
    """The sample variance is within the 99.9% chi-square interval of the true variance (a 20% error fails)."""
    n = len(samples)
    s2 = float(np.var(samples, ddof=1))
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], n - 1) * var / (n - 1)
    return lo <= s2 <= hi


@pytest.mark.parametrize("sigma", [0.7, 3.0, 25.5, 300.0])
def test_discrete_gaussian_has_the_intended_variance_and_shape(sigma: float) -> None:
    x = sample_discrete_gaussian(200_000, sigma, RandomStream(b"d" * 32), NB)
    assert x.dtype == np.int64
    # variance of N_Z(0, σ²) is σ² up to an exponentially small term (exact below via the pmf for small σ)
    ks = np.arange(-int(12 * sigma) - 10, int(12 * sigma) + 11)
    pmf = np.exp(-(ks.astype(float) ** 2) / (2 * sigma**2))
    pmf /= pmf.sum()
    true_var = float(np.sum(pmf * ks**2))
    assert _var_ci_ok(x.astype(float), true_var)
    assert not _var_ci_ok(x.astype(float), true_var * 1.2) and not _var_ci_ok(x.astype(float), true_var / 1.2)
    assert abs(x.mean()) < 5 * math.sqrt(true_var / len(x))
    if sigma < 5:  # the full distribution against the pmf (chi-square goodness of fit)
        obs = np.array([np.sum(x == k) for k in ks])
        keep = pmf * len(x) > 5
        chi = stats.chisquare(obs[keep], pmf[keep] / pmf[keep].sum() * obs[keep].sum())
        assert chi.pvalue > 1e-4


def test_sum_of_client_shares_has_the_target_variance() -> None:
    cfg = DistributedDPConfig(l2_clip=1.0, noise_multiplier=0.05, bits=12, modulus_bits=32, min_contributors=5,
                              dimension=20_000)
    target = (cfg.noise_multiplier * cfg.sensitivity()) ** 2
    total = sum(sample_discrete_gaussian(cfg.dimension, cfg.sigma_client(), RandomStream(bytes([i]) * 32), NB)
                for i in range(5))
    assert _var_ci_ok(total.astype(float), target)
    assert not _var_ci_ok(total.astype(float), target * 1.2)


def test_numpy_and_pure_samplers_agree() -> None:
    a = sample_discrete_gaussian(300, 4.2, RandomStream(b"s" * 32), NB)
    b = sample_discrete_gaussian(300, 4.2, RandomStream(b"s" * 32), PB)
    assert a.tolist() == b


def test_gaussian_noise_variance() -> None:
    z = gaussian(100_001, 2.5, RandomStream(b"g" * 32))
    assert _var_ci_ok(z, 6.25) and len(z) == 100_001
    assert stats.kstest(z / 2.5, "norm").pvalue > 1e-4


def _opacus_epsilon(z: float, q: float, steps: int, delta: float) -> float:
    from opacus.accountants.analysis import rdp as ordp

    rdp = ordp.compute_rdp(q=q, noise_multiplier=z, steps=steps, orders=list(ORDERS))
    return float(ordp.get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=delta)[0])


@pytest.mark.parametrize(("z", "q", "steps"), [(1.0, 0.1, 5), (1.1, 0.01, 1000), (0.8, 1.0, 1), (2.0, 0.2, 30),
                                               (4.0, 0.3, 200)])
def test_accountant_agrees_with_opacus(z: float, q: float, steps: int) -> None:
    ours = PrivacyAccountant([RoundEvent(z, q, steps)]).epsilon(1e-5)
    theirs = _opacus_epsilon(z, q, steps, 1e-5)
    assert ours == pytest.approx(theirs, rel=0.01)
    # composing round by round gives the same as one event with count=steps
    if steps <= 30:
        assert PrivacyAccountant([RoundEvent(z, q)] * steps).epsilon(1e-5) == pytest.approx(ours, rel=1e-9)


def _analytic_gaussian_epsilon(z: float, delta: float) -> float:
    """Balle & Wang ICML'18: the exact ε of the Gaussian mechanism with σ = z·Δ at δ (bisection)."""
    def delta_of(eps: float) -> float:
        return stats.norm.cdf(1 / (2 * z) - eps * z) - math.exp(eps) * stats.norm.cdf(-1 / (2 * z) - eps * z)

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_of(mid) > delta else (lo, mid)
    return hi


@pytest.mark.parametrize("z", [0.7, 1.0, 2.0, 5.0])
def test_one_round_is_an_upper_bound_close_to_the_analytic_gaussian(z: float) -> None:
    exact = _analytic_gaussian_epsilon(z, 1e-5)
    ours = PrivacyAccountant([RoundEvent(z, 1.0)]).epsilon(1e-5)
    assert exact <= ours <= exact * 1.6


def test_budget_refuses_a_round_that_would_exceed_it_and_resumes_from_its_ledger() -> None:
    budget = PrivacyBudget(epsilon=3.0, delta=1e-5)
    ev = RoundEvent(1.0, 0.1)
    spent = [budget.spend(ev) for _ in range(5)]
    assert spent == sorted(spent) and spent[-1] <= 3.0
    with pytest.raises(BudgetExceeded, match="round refused"):
        while True:
            budget.spend(ev)
    n_ok = len(budget.accountant.events)
    assert budget.epsilon_spent() <= 3.0 < budget.epsilon_after(ev)
    restored = PrivacyBudget(3.0, 1e-5, PrivacyAccountant.from_dict(budget.accountant.to_dict()))
    assert restored.epsilon_spent() == budget.epsilon_spent() and len(restored.accountant.events) == n_ok
    with pytest.raises(BudgetExceeded):
        restored.check(ev)
    with pytest.raises(ValueError):
        RoundEvent(0.0, 0.1)
    with pytest.raises(ValueError):
        RoundEvent(1.0, 1.5)
    with pytest.raises(ValueError):
        PrivacyBudget(0.0, 1e-5)


def test_dp_fedavg_clips_and_adds_calibrated_noise() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 5000)) * np.array([[0.001], [10.0]] * 5)
    agg = DPFedAvg(clip=1.0, noise_multiplier=0.0, expected_clients=10)
    out, info = agg.aggregate(x, RandomStream(b"a" * 32))
    factors = np.minimum(1.0, 1.0 / np.linalg.norm(x, axis=1))
    np.testing.assert_allclose(out, (x * factors[:, None]).sum(0) / 10)
    assert info["clipped_fraction"] == 0.5
    noisy, info = DPFedAvg(clip=1.0, noise_multiplier=2.0, expected_clients=10).aggregate(x, RandomStream(b"b" * 32))
    resid = (noisy - out) * 10
    assert _var_ci_ok(resid, 4.0)
    with pytest.raises(ValueError, match="NaN"):
        agg.aggregate(np.array([[np.nan, 1.0]]), RandomStream(b"c" * 32))


def test_adaptive_clipping_tracks_the_target_quantile() -> None:
    rng = np.random.default_rng(2)
    state = AdaptiveClipState(clip=0.01, target_quantile=0.5, learning_rate=0.2)
    stream = RandomStream(b"q" * 32)
    for _ in range(200):
        norms = rng.lognormal(mean=0.0, sigma=0.5, size=100)  # median 1.0
        state = adaptive_clip_update(state, norms, stream)
    assert 0.8 < state.clip < 1.25


def test_l2_clip() -> None:
    v, n = l2_clip([3.0, 4.0], 1.0, PB)
    assert n == 5.0 and abs(math.hypot(*v) - 1.0) < 1e-12
    v, n = l2_clip(np.array([0.3, 0.4]), 1.0, NB)
    np.testing.assert_allclose(v, [0.3, 0.4])
    with pytest.raises(ValueError, match="NaN"):
        l2_clip([float("nan")], 1.0, PB)


def test_distributed_dp_with_secure_aggregation_end_to_end() -> None:
    """Clients clip, quantize, add noise shares, mask; the unmasked group sum equals the plaintext sum of the
    prepared (noised) updates bit for bit, and decodes to the true sum within the noise."""
    from secagg_helpers import run_group

    d, n = 2000, 5
    cfg = DistributedDPConfig(l2_clip=1.0, noise_multiplier=0.5, bits=14, modulus_bits=32, min_contributors=3,
                              dimension=d)
    cfg.validate(n)
    rng = np.random.default_rng(3)
    deltas = [rng.normal(size=d) * 0.01 for _ in range(n)]
    prepared = [prepare_update(x, cfg, RandomStream(bytes([i + 1]) * 32), NB)[0] for i, x in enumerate(deltas)]
    group_sum, survivors = run_group(prepared, modulus_bits=32, drop={"client-04": "masked"})
    plain = np.zeros(d, dtype=np.uint64)
    for i in survivors:
        plain = plain + prepared[i].astype(np.uint64)
    np.testing.assert_array_equal(np.asarray(group_sum, np.uint64), plain % (1 << 32))
    decoded = decode_sum(group_sum, cfg, NB)
    true = sum(deltas[i] for i in survivors)
    noise_sd = cfg.sigma_client() * math.sqrt(len(survivors)) / cfg.fixed_point().scale()
    assert np.std(decoded - true) == pytest.approx(noise_sd, rel=0.1)
    assert cfg.effective_noise_multiplier() == pytest.approx(0.5, rel=1e-6)


def test_pipeline_validation_catches_a_too_small_modulus() -> None:
    with pytest.raises(ValueError, match="modulus 2\\^16 too small"):
        DistributedDPConfig(1.0, 1.0, 14, 16, 3, 1000).validate(3)
    with pytest.raises(ValueError, match="l2_clip"):
        DistributedDPConfig(0.0, 1.0, 14, 32, 3, 1000)
    with pytest.raises(ValueError, match="coordinates"):
        prepare_update([0.0] * 3, DistributedDPConfig(1.0, 0.0, 8, 16, 1, 4), RandomStream(b"x" * 32), PB)


def test_pure_pipeline_matches_numpy_pipeline() -> None:
    cfg = DistributedDPConfig(1.0, 0.3, 12, 32, 3, 500)
    x = (np.random.default_rng(4).normal(size=500) * 0.1).tolist()
    a, _ = prepare_update(np.array(x), cfg, RandomStream(b"p" * 32), NB)
    b, _ = prepare_update(x, cfg, RandomStream(b"p" * 32), PB)
    assert a.tolist() == list(b)


def test_adaptive_effective_multiplier() -> None:
    from privacy.dp.server import adaptive_effective_multiplier

    assert adaptive_effective_multiplier(1.0, 1e9) == pytest.approx(1.0)
    assert adaptive_effective_multiplier(1.0, 0.5) == pytest.approx(2 ** -0.5)
    with pytest.raises(ValueError):
        adaptive_effective_multiplier(0.0, 1.0)
