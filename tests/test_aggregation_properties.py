"""Properties: hand-checked cases, permutation invariance, robustness bounds under huge/adversarial inputs,
non-finite handling, precondition errors, pipelines and group mode."""

from __future__ import annotations

import numpy as np
import pytest

import aggregation as A

RULES = {
    "mean": lambda x, f: A.mean(x),
    "median": lambda x, f: A.median(x),
    "trmean": lambda x, f: A.trimmed_mean(x, f=f),
    "krum": lambda x, f: A.krum(x, f),
    "mkrum": lambda x, f: A.multi_krum(x, f),
    "bulyan": lambda x, f: A.bulyan(x, f),
    "gm": lambda x, f: A.geometric_median(x),
    "cc": lambda x, f: A.centered_clipping(x, 1.0, iters=3)[0],
}
ROBUST = ["median", "trmean", "krum", "mkrum", "bulyan", "gm", "cc"]


def test_hand_checked_small_cases() -> None:
    x = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, -100.0]])
    np.testing.assert_allclose(A.mean(x).value, [22.0, 0.0])
    np.testing.assert_allclose(A.median(x).value, [3.0, 20.0])
    np.testing.assert_allclose(A.trimmed_mean(x, f=1).value, [3.0, 20.0])  # (2+3+4)/3, (10+20+30)/3
    np.testing.assert_allclose(A.weighted_mean(x[:2], [1, 3], cap=10).value, [1.75, 17.5])
    np.testing.assert_allclose(A.weighted_mean(x[:2], [1, 1000], cap=1).value, [1.5, 15.0])  # capped
    # Krum with n=5, f=1: n-f-2 = 2 neighbours. Points on a line 0,1,2,3,100.
    line = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
    # scores: 0:(1+4)=5, 1:(1+1)=2, 2:(1+1)=2, 3:(1+4)=5, 100: (97²+98²)
    np.testing.assert_allclose(A.krum_scores(A.gram_sq_distances(line), 1), [5, 2, 2, 5, 97**2 + 98**2])
    assert A.krum(line, 1).value[0] == 1.0  # lowest score, first index on ties
    np.testing.assert_allclose(A.multi_krum(line, 1, m=2).value, [1.5])
    np.testing.assert_allclose(A.fltrust(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 5.0]]), [2.0, 0.0]).value,
                               [2.0, 0.0])
    gm = A.geometric_median(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), tol=1e-12, nu=1e-12, max_iter=10000)
    # Fermat point of the right isoceles triangle: (1/(3+sqrt3)) * (1, 1) ≈ 0.2113
    np.testing.assert_allclose(gm.value, [0.21132487, 0.21132487], atol=1e-5)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_permutation_invariance(rule: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(15, 30)).astype(np.float64)
    perm = rng.permutation(15)
    a, b = RULES[rule](x, 3), RULES[rule](x[perm], 3)
    np.testing.assert_allclose(a.value, b.value, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(a.diagnostics.distances[perm], b.diagnostics.distances, rtol=1e-5, atol=1e-8)


def _honest_and_attack(kind: str, rng: np.random.Generator, n: int, f: int, d: int) -> np.ndarray:
    honest = rng.normal(0.0, 1.0, size=(n - f, d)) + 1.0
    mu, sd = honest.mean(0), honest.std(0)
    attacks = {
        "huge": np.full((f, d), 1e12),
        "huge_mixed": rng.choice([-1e9, 1e9], size=(f, d)),
        "sign_flip": -10.0 * np.tile(mu, (f, 1)),
        "alie": np.tile(mu - 1.0 * sd, (f, 1)),  # Baruch et al. 2019: shift by z·σ
        "ipm": np.tile(-0.5 * mu, (f, 1)),  # Xie et al. 2019: −ε · mean
    }
    return np.vstack([honest, attacks[kind]])


@pytest.mark.parametrize("rule", ROBUST)
@pytest.mark.parametrize("attack", ["huge", "huge_mixed", "sign_flip", "alie", "ipm"])
def test_robust_rules_stay_within_their_bound(rule: str, attack: str) -> None:
    """With f Byzantine inputs the result stays close to the honest inputs, whatever their values:
    coordinate-wise rules stay inside the honest range of every coordinate; the others within a small multiple
    of the honest spread of the honest mean (the documented bounds, docs/aggregation.md)."""
    rng = np.random.default_rng(hash((rule, attack)) % 2**32)
    n, f, d = 23, 5, 50
    x = _honest_and_attack(attack, rng, n, f, d)
    honest = x[: n - f]
    value = RULES[rule](x, f).value
    assert np.all(np.isfinite(value))
    if rule in ("median", "trmean", "bulyan"):
        assert np.all(value >= honest.min(0) - 1e-9) and np.all(value <= honest.max(0) + 1e-9)
    spread = float(np.max(np.linalg.norm(honest - honest.mean(0), axis=1)))
    if rule == "cc":
        # starts at 0 and moves at most tau·(n-f)/n·iters towards the honest points plus tau·f/n per
        # iteration from the attackers: within the start's distance + 3·tau·f/n of anything
        assert np.linalg.norm(value - honest.mean(0)) <= np.linalg.norm(honest.mean(0)) + 3 * 1.0
    else:
        assert np.linalg.norm(value - honest.mean(0)) <= 2.0 * spread, (rule, attack)
    # the mean is NOT robust (sanity check that the attack is real)
    if attack.startswith("huge"):
        assert np.linalg.norm(A.mean(x).value - honest.mean(0)) > 1e6


def test_nonfinite_inputs_are_excluded_and_reported() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 20))
    x[2, 5] = np.nan
    x[7, 0] = np.inf
    clean = np.delete(x, [2, 7], axis=0)
    for rule in ["mean", "median", "trmean", "krum", "mkrum", "gm", "cc"]:
        res = RULES[rule](x, 2)
        assert np.all(np.isfinite(res.value)), rule
        assert res.diagnostics.excluded_nonfinite.tolist() == [i in (2, 7) for i in range(12)]
        assert not res.diagnostics.selected[2] and not res.diagnostics.selected[7]
        assert np.isinf(res.diagnostics.outlier_scores[2])
        np.testing.assert_allclose(res.value, RULES[rule](clean, 2).value, rtol=1e-6)
    res, _ = A.aggregate("clip(median)|trmean", x, 2)
    assert np.all(np.isfinite(res.value)) and res.diagnostics.excluded_nonfinite.sum() == 2
    x_all = np.full((3, 4), np.nan)
    with pytest.raises(ValueError, match="NaN"):
        A.median(x_all)
    # huge but finite values are not mistaken for non-finite ones
    big = np.full((5, 3), 3e38, dtype=np.float32)
    assert not A.mean(big).diagnostics.excluded_nonfinite.any()


def test_preconditions_raise_value_errors_that_state_them() -> None:
    x = np.zeros((6, 3))
    with pytest.raises(ValueError, match=r"krum needs n >= 2f\+3: got n=6, f=2"):
        A.krum(x, 2)
    with pytest.raises(ValueError, match=r"bulyan needs n >= 4f\+3"):
        A.bulyan(x, 1)
    with pytest.raises(ValueError, match=r"trimmed_mean needs n >= 2f\+1"):
        A.trimmed_mean(x, f=3)
    with pytest.raises(ValueError, match="f must be a non-negative integer"):
        A.krum(x, -1)
    with pytest.raises(ValueError, match="tau"):
        A.centered_clipping(x, 0.0)
    with pytest.raises(ValueError, match="2-D"):
        A.median(np.zeros(5))
    with pytest.raises(ValueError, match="weights"):
        A.mean(x, weights=[1, 2])
    with pytest.raises(ValueError, match="root update"):
        A.fltrust(x, np.zeros(3))
    with pytest.raises(ValueError, match="exactly one of"):
        A.trimmed_mean(x)
    with pytest.raises(ValueError, match="m must be"):
        A.multi_krum(np.zeros((9, 2)), 1, m=20)


def test_pipeline_parsing_and_validation() -> None:
    p = A.parse_pipeline("clip(median)|bucket(2)|cc(tau=1, iters=2)|momentum(beta=0.5)")
    assert [s.name for s in p.steps] == ["clip", "bucket", "cc", "momentum"]
    assert p.steps[2].args == {"tau": 1, "iters": 2}
    assert A.parse_pipeline(["nnm", {"name": "krum"}]).steps[1].name == "krum"
    for bad, msg in [("krum|median", "exactly one aggregator"), ("momentum|mean", "order"),
                     ("foo", "unknown pipeline step"), ("cc(rho=1)", "unknown argument"),
                     ("mean|clip(1)", "order"), ("cc(tau=1, tau=2)", "twice"), ("clip(1", "bad pipeline step")]:
        with pytest.raises(ValueError, match=msg):
            A.parse_pipeline(bad)
    # bucketing halves n before Krum's precondition is checked
    A.parse_pipeline("krum", n=7, f=2)
    with pytest.raises(ValueError, match=r"krum needs n >= 2f\+3: got n=4, f=2 after bucket"):
        A.parse_pipeline("bucket(2)|krum", n=7, f=2)
    with pytest.raises(ValueError, match="wmean needs per-input weights"):
        A.parse_pipeline("wmean", n=5, f=0)


def test_pipeline_with_state_and_diagnostics_on_original_inputs() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(20, 16)) + 1.0
    x[:3] = -50.0  # 3 attackers
    p = A.parse_pipeline("clip(median)|bucket(2)|cc(tau=1)|momentum(beta=0.9)", n=20, f=3)
    state = A.PipelineState()
    for _ in range(5):
        res, state = p(x, 3, state=state, rng=rng)
    assert state.cc and state.momentum
    restored = A.PipelineState.from_dict(state.to_dict())
    np.testing.assert_array_equal(restored.cc[2].center, state.cc[2].center)
    d = res.diagnostics
    assert d.distances.shape == (20,) and d.selected.all()  # every input contributed to some bucket
    assert d.outlier_scores[:3].min() > d.outlier_scores[3:].max()  # attackers stand out
    assert np.linalg.norm(res.value - x[3:].mean(0)) < np.linalg.norm(x[3:].mean(0))
    with pytest.raises(ValueError, match="rng"):
        p(x, 3)


def test_group_mode() -> None:
    rng = np.random.default_rng(11)
    clients = rng.normal(size=(15, 8)) + 2.0
    clients[4] = 1e6  # one attacker
    groups = [list(range(i, i + 3)) for i in range(0, 15, 3)]
    sums = np.array([clients[g].sum(0) for g in groups])
    res, _ = A.aggregate_groups("median", sums, [3] * 5, f_clients=1)
    assert res.diagnostics.extra["f_groups"] == 1
    assert int(np.argmax(res.diagnostics.outlier_scores)) == 1  # the group holding client 4
    assert np.linalg.norm(res.value - np.delete(clients, 4, 0).mean(0)) < 3.0
    # the mean of group means weighted by size equals the plain mean of clients
    res_mean, _ = A.aggregate_groups("mean", sums, [3] * 5, f_clients=0)
    np.testing.assert_allclose(res_mean.value, clients.mean(0), rtol=1e-9)
    # uneven sizes
    res_w, _ = A.aggregate_groups("mean", sums[:2], [3, 1], f_clients=0)
    np.testing.assert_allclose(res_w.value, (sums[0] + sums[1]) / 4)
    with pytest.raises(ValueError, match=r"krum needs n >= 2f\+3: got n=5 groups, f=2"):
        A.aggregate_groups("krum", sums, [3] * 5, f_clients=2)
    # 5 attackers among 25 clients in groups of 5: all 5 groups corrupted with positive probability
    dist = A.corrupted_groups_distribution([5] * 5, 5)
    assert dist[5] > 0.05 and abs(dist.sum() - 1) < 1e-12
    assert A.corrupted_groups_tail([5] * 5, 5, 2) > 0.5
