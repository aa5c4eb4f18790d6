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
    ParticipationAccountant,
    PrivacyAccountant,
    PrivacyBudget,
    RoundEvent,
    adaptive_clip_update,
    epsilon_for,
    epsilon_pld,
    epsilon_report,
    l2_clip,
    sample_discrete_gaussian,
)
from privacy.dp.accounting import ORDERS
from privacy.dp.server import adaptive_effective_multiplier, gaussian
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
    while delta_of(hi) > delta:
        hi *= 2
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
    assert adaptive_effective_multiplier(1.0, 1e9) == pytest.approx(1.0)
    assert adaptive_effective_multiplier(1.0, 0.5) == pytest.approx(2 ** -0.5)
    with pytest.raises(ValueError):
        adaptive_effective_multiplier(0.0, 1.0)


# ── adaptive clipping: the centred count ─────────────────────────────────────────────────────────────────
def _released_count(old: AdaptiveClipState, new: AdaptiveClipState, m: int) -> float:
    """The noisy centred count s̃ = Σ(b_i − ½) + noise that the new clip norm reveals: b̃ = γ − ln(C'/C)/η and
    s̃ = (b̃ − ½)·m (m: the fixed denominator)."""
    b = old.target_quantile - math.log(new.clip / old.clip) / old.learning_rate
    return (b - 0.5) * m


def test_adaptive_clipping_count_has_sensitivity_one_half() -> None:
    """Adding or removing one client moves the released count by exactly ½ (the centred indicator): an
    uncentred 0/1 count over the same fixed denominator moves by 0 or 1, so the ½ in the accounting would be
    wrong for it. The accounting then treats the count as a Gaussian with multiplier σ_b/½."""
    state = AdaptiveClipState(clip=1.0, target_quantile=0.5, learning_rate=0.2)
    m = 20
    norms = [0.5, 2.0, 0.7, 3.0, 0.1, 5.0, 0.9]  # 4 unclipped, 3 clipped

    def count(ns: list[float]) -> float:
        return _released_count(state, adaptive_clip_update(state, ns, RandomStream(b"n" * 32), expected_clients=m), m)

    base = count(norms)
    assert base == pytest.approx(sum((n <= 1.0) - 0.5 for n in norms), abs=1e-9)  # Σ(b_i − ½) = 0.5
    changes = [count([*norms, extra]) - base for extra in (0.3, 1.0, 4.0, 1.0000001)]
    changes += [count(norms[:i] + norms[i + 1:]) - base for i in range(len(norms))]
    assert changes == pytest.approx([0.5, 0.5, -0.5, -0.5] + [-0.5 if n <= 1 else 0.5 for n in norms], abs=1e-9)
    sensitivity = max(abs(c) for c in changes)
    assert sensitivity == pytest.approx(0.5, abs=1e-9)
    for z, sigma_b in [(1.0, 0.5), (0.8, 3.0), (2.0, 0.1)]:
        z_count = sigma_b / sensitivity  # the count as a Gaussian mechanism: 2σ_b
        z_eff = adaptive_effective_multiplier(z, sigma_b)
        assert z_eff == pytest.approx((z**-2 + z_count**-2) ** -0.5, rel=1e-12)
        both = epsilon_for([RoundEvent(z, 1.0), RoundEvent(z_count, 1.0)], 1e-5)
        assert epsilon_for([RoundEvent(z_eff, 1.0)], 1e-5) == pytest.approx(both, rel=1e-9)
        # accounting the count with sensitivity 1 (σ_b, not 2σ_b) would give a larger ε: the ½ matters
        assert epsilon_for([RoundEvent(z, 1.0), RoundEvent(sigma_b, 1.0)], 1e-5) > both


def test_adaptive_clipping_count_noise_is_centred_and_calibrated() -> None:
    """With σ_b > 0 the released count is Σ(b_i − ½) + N(0, σ_b²) over the fixed denominator (150 clients,
    denominator 200: an uncentred count would be off by (200 − 150)/2 = 25)."""
    sigma_b, m = 3.0, 200
    norms = np.concatenate([np.full(90, 0.5), np.full(60, 2.0)])
    state = AdaptiveClipState(clip=1.0, target_quantile=0.5, learning_rate=0.2, count_noise=sigma_b)
    stream = RandomStream(b"k" * 32)
    resid = np.array([_released_count(state, adaptive_clip_update(state, norms, stream, expected_clients=m), m)
                      for _ in range(3000)]) - (90 - 75)
    assert abs(resid.mean()) < 5 * sigma_b / math.sqrt(len(resid))
    assert _var_ci_ok(resid, sigma_b**2) and not _var_ci_ok(resid, (sigma_b * 1.2) ** 2)
    with pytest.raises(ValueError, match="expected_clients"):
        adaptive_clip_update(state, norms, stream)  # a noisy count needs a fixed denominator
    with pytest.raises(ValueError, match="expected_clients"):
        adaptive_clip_update(state, norms, stream, expected_clients=0)
    # b̃ is clamped to [0, 1]: every client unclipped over a denominator of 1 moves the clip by exp(−η(1 − γ))
    s0 = AdaptiveClipState(clip=1.0, target_quantile=0.3, learning_rate=0.2)
    assert adaptive_clip_update(s0, [0.1] * 10, stream, expected_clients=1).clip == pytest.approx(math.exp(-0.2 * 0.7))


def test_noisy_adaptive_clipping_tracks_the_target_quantile() -> None:
    rng = np.random.default_rng(5)
    state = AdaptiveClipState(clip=0.05, target_quantile=0.7, learning_rate=0.2, count_noise=2.0)
    stream = RandomStream(b"r" * 32)
    for _ in range(300):
        state = adaptive_clip_update(state, rng.lognormal(0.0, 0.5, size=100), stream, expected_clients=100)
    assert 0.85 < state.clip / math.exp(0.5 * stats.norm.ppf(0.7)) < 1.18


# ── PLD and the reported figure ───────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("z", "q", "steps"), [(1.0, 0.05, 200), (1.1, 0.01, 1000), (1.0, 1.0, 10), (4.0, 0.3, 200),
                                               (0.5, 1.0, 100), (0.8, 1.0, 1)])
def test_pld_is_below_rdp_and_within_a_sane_factor(z: float, q: float, steps: int) -> None:
    ev = [RoundEvent(z, q, steps)]
    rdp, pld = epsilon_for(ev, 1e-5), epsilon_pld(ev, 1e-5)
    print(f"z={z} q={q} T={steps}: RDP ε={rdp:.4f}  PLD ε={pld:.4f}")
    assert 0.6 * rdp < pld <= rdp
    if q == 1.0:  # T Gaussians are one Gaussian with z/√T: the exact ε (Balle & Wang) is a lower bound
        exact = _analytic_gaussian_epsilon(z / math.sqrt(steps), 1e-5)
        assert exact <= pld <= exact * (1 + 1e-4)
    else:  # the default resolution agrees with a 10× finer one
        assert pld == pytest.approx(epsilon_pld(ev, 1e-5, value_discretization_interval=1e-4), rel=2e-3)


def test_epsilon_report_reports_pld_only_for_the_continuous_gaussian() -> None:
    ev = [RoundEvent(1.0, 0.05, 200)]
    discrete = epsilon_report(ev, 1e-5, continuous_gaussian=False)
    continuous = epsilon_report(ev, 1e-5, continuous_gaussian=True)
    assert discrete["rdp"] == continuous["rdp"] == epsilon_for(ev, 1e-5)
    assert discrete["pld"] == continuous["pld"] < discrete["rdp"]
    assert discrete["reported"] == discrete["rdp"] and discrete["method"] == "rdp"
    assert continuous["reported"] == continuous["pld"] and continuous["method"] == "pld"
    assert epsilon_report([], 1e-5, True) == {"rdp": 0.0, "pld": 0.0, "reported": 0.0, "method": "rdp"}
    assert epsilon_pld([], 1e-5) == 0.0
    with pytest.raises(ValueError):
        epsilon_report(ev, 0.0, True)
    with pytest.raises(ValueError):
        epsilon_pld(ev, 1e-5, value_discretization_interval=0.0)


# ── per-client accounting against the coordinator ────────────────────────────────────────────────────────
def _rdp_gaussians(zs: list[float], delta: float) -> float:
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    acc = RdpAccountant(list(ORDERS))
    acc.compose(dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z) for z in zs]))
    return float(acc.get_epsilon(delta))


def test_participation_accountant_matches_dp_accounting() -> None:
    pa = ParticipationAccountant()
    zs = [1.0, 0.7, 2.0, 1.0, 3.5]
    for i, z in enumerate(zs):
        pa.record(["a", "b"] if i % 2 == 0 else ["a"], z)
    assert pa.count("a") == 5 and pa.count("b") == 3 and pa.count("nobody") == 0
    for delta in (1e-3, 1e-5, 1e-9):
        assert pa.epsilon_of("a", delta) == pytest.approx(_rdp_gaussians(zs, delta), rel=1e-9)
        assert pa.epsilon_of("b", delta) == pytest.approx(_rdp_gaussians(zs[::2], delta), rel=1e-9)
        assert pa.epsilon_of("nobody", delta) == 0.0
        assert pa.max_epsilon(delta) == pa.epsilon_of("a", delta)
        assert pa.epsilon_after("b", 0.9, delta) == pytest.approx(_rdp_gaussians([*zs[::2], 0.9], delta), rel=1e-9)
    for k in (1, 10, 100):  # k participations at one z: one SelfComposed Gaussian event
        one = ParticipationAccountant()
        for _ in range(k):
            one.record(["x"], 1.3)
        assert one.epsilon_of("x", 1e-5) == pytest.approx(epsilon_for([RoundEvent(1.3, 1.0, k)], 1e-5), rel=1e-9)
    assert pa.max_participations() == 5 and ParticipationAccountant().max_epsilon(1e-5) == 0.0
    assert ParticipationAccountant().max_participations() == 0
    for bad_ids, z in [(["a", "a"], 1.0), ("ab", 1.0), ([1], 1.0), (["a"], 0.0), (["a"], -1.0), (["a"], math.nan),
                       (["a"], math.inf), (["a"], 1e-200)]:
        with pytest.raises(ValueError):
            pa.record(bad_ids, z)  # type: ignore[arg-type]
    assert pa.count("a") == 5  # a refused record changes nothing


def test_participation_accountant_round_trip() -> None:
    import json

    pa = ParticipationAccountant()
    rng = np.random.default_rng(9)
    ids = [f"client-{i}" for i in range(300)]
    for _ in range(40):
        pa.record(list(rng.choice(ids, size=25, replace=False)), float(rng.uniform(0.3, 3.0)))
    back = ParticipationAccountant.from_dict(json.loads(json.dumps(pa.to_dict(), allow_nan=False)))
    assert back == pa and back.to_dict() == pa.to_dict()
    assert all(back.inv_z2(c) == pa.inv_z2(c) for c in ids)  # bit for bit
    assert back.max_epsilon(1e-6) == pa.max_epsilon(1e-6)
    assert ParticipationAccountant.from_dict(None) == ParticipationAccountant() == ParticipationAccountant.from_dict({})
    for bad in ([], {"clients": []}, {"other": {}}, {"clients": {"a": {"count": 1}}},
                {"clients": {"a": {"count": 0, "inv_z2": 1.0}}}, {"clients": {"a": {"count": True, "inv_z2": 1.0}}},
                {"clients": {"a": {"count": 1, "inv_z2": -1.0}}}, {"clients": {"a": {"count": 1, "inv_z2": "1"}}},
                {"clients": {"a": {"count": 1, "inv_z2": math.inf}}}, {"clients": {"a": {"count": 1, "inv_z2": 10**400}}},
                {"clients": {"a": [1, 1.0]}}):
        with pytest.raises(ValueError):
            ParticipationAccountant.from_dict(bad)  # type: ignore[arg-type]


def test_participation_accounting_costs_more_than_amplified_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    """N = 1000 clients, m = 50 selected per round (q = 0.05), z = 1, T = 200 rounds. Amplification by
    subsampling gives ε ≈ 5.4; a client that took part in 10 rounds (the expected number) has ε ≈ 19 against
    a coordinator that knows who took part – the per-participation figure is the honest one for that threat."""
    import random

    import privacy.dp.accounting as acc_mod

    n, m, z, rounds, delta = 1000, 50, 1.0, 200, 1e-5
    amplified = epsilon_for([RoundEvent(z, m / n, rounds)], delta)
    pa = ParticipationAccountant()
    rng = random.Random(3)
    ids = [f"c{i}" for i in range(n)]
    for _ in range(rounds):
        pa.record(rng.sample(ids, m), z)
    ten = next(c for c in ids if pa.count(c) == 10)
    per_client = pa.epsilon_of(ten, delta)
    print(f"amplified (q={m / n}, T={rounds}): ε={amplified:.3f}; client with 10 participations: ε={per_client:.3f};"
          f" most participations {pa.max_participations()}: ε={pa.max_epsilon(delta):.3f}")
    assert 5 < amplified < 6 and 18.5 < per_client < 19.5
    assert amplified < per_client <= pa.max_epsilon(delta)
    assert pa.max_epsilon(delta) == max(pa.epsilon_of(c, delta) for c in ids)
    # the maximum over clients is one evaluation (ε is non-decreasing in Σ 1/z²), not one per client
    calls = []
    real = acc_mod.gaussian_rdp_epsilon
    monkeypatch.setattr(acc_mod, "gaussian_rdp_epsilon", lambda v, d: calls.append(v) or real(v, d))
    big = ParticipationAccountant()
    big.record([f"x{i}" for i in range(10_000)], 1.0)
    big.record([f"x{i}" for i in range(0, 10_000, 7)], 0.8)
    assert big.max_epsilon(delta) == real(1 + 0.8**-2, delta) and len(calls) == 1
