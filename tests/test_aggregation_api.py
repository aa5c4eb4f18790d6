"""Weights, the one-pass non-finite detection paths, pipeline validation wording, centered clipping's per-step
bound, selection by Krum under attack, and the expected-case group helpers."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest

import aggregation as A


def test_validate_pipeline_states_the_precondition_in_groups() -> None:
    with pytest.raises(ValueError, match=r"^krum needs n >= 2f\+3: got n=5 groups, f=2 \(needs n >= 7\)$"):
        A.validate_pipeline("krum", 5, 2, unit="groups")
    with pytest.raises(ValueError, match=r"bulyan needs n >= 4f\+3: got n=10, f=2"):
        A.validate_pipeline("clip(median)|bulyan", 10, 2)
    with pytest.raises(ValueError, match=r"median needs n >= 2f\+1: got n=3, f=2 after nnm\|bucket\(s=2\)"):
        A.validate_pipeline("nnm|bucket(2)|median", 5, 2)
    with pytest.raises(ValueError, match="fltrust needs a root update"):
        A.validate_pipeline("fltrust", 5, 1)
    p = A.validate_pipeline("bucket(2)|mkrum(m=3)|momentum(beta=0.5)", 14, 2)
    assert str(p) == "bucket(s=2)|mkrum(m=3)|momentum(beta=0.5)"


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum", "bulyan", "fltrust"])
def test_counting_rules_refuse_weights_instead_of_ignoring_them(rule: str) -> None:
    x = np.random.default_rng(0).normal(size=(11, 4))
    call = {
        "median": lambda w: A.median(x, weights=w),
        "trimmed_mean": lambda w: A.trimmed_mean(x, f=1, weights=w),
        "krum": lambda w: A.krum(x, 1, weights=w),
        "bulyan": lambda w: A.bulyan(x, 1, weights=w),
        "fltrust": lambda w: A.fltrust(x, x[0], weights=w),
    }[rule]
    call(None)
    with pytest.raises(ValueError, match=f"{rule}: the rule counts inputs"):
        call(np.ones(11))


def test_weighted_rules_match_their_weighted_definitions() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(13, 6))
    w = rng.integers(1, 20, size=13).astype(float)
    np.testing.assert_allclose(A.mean(x, w).value, (w[:, None] * x).sum(0) / w.sum())
    res = A.multi_krum(x, 2, m=7, weights=w)
    sel = res.diagnostics.selected
    assert sel.sum() == 7
    np.testing.assert_allclose(res.value, (w[sel, None] * x[sel]).sum(0) / w[sel].sum())
    # selection is by score only: the same inputs as unweighted
    np.testing.assert_array_equal(A.multi_krum(x, 2, m=7).diagnostics.selected, sel)
    # geometric median with integer weights = unweighted geometric median of the repeated inputs
    reps = np.repeat(x, w.astype(int), axis=0)
    np.testing.assert_allclose(A.geometric_median(x, w, tol=1e-12, nu=1e-12, max_iter=20000).value,
                               A.geometric_median(reps, tol=1e-12, nu=1e-12, max_iter=20000).value, atol=1e-6)
    # a zero-weight row with a NaN is still reported, and all-zero finite weights are refused
    x2 = x.copy()
    x2[3, 2] = np.nan
    w2 = w.copy()
    w2[3] = 0.0
    r = A.mean(x2, w2)
    assert r.diagnostics.excluded_nonfinite[3] and np.all(np.isfinite(r.value))
    with pytest.raises(ValueError, match="zero weight"):
        A.mean(x2[:4], [0.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_found_in_any_column_chunk(bad: float) -> None:
    """The coordinate-wise rules detect non-finite values while sorting, the mean from its column sums and the
    distance rules from the Gram matrix; a value in the last column chunk must be found as well as one in the
    first, and the result must equal the rule on the clean rows."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 70_000)).astype(np.float32)
    x[5, 69_999] = bad
    x[9, 3] = bad
    clean = np.delete(x, [5, 9], axis=0)
    for name, fn in [("mean", lambda a: A.mean(a)), ("median", lambda a: A.median(a)),
                     ("trmean", lambda a: A.trimmed_mean(a, f=2)), ("trfrac", lambda a: A.trimmed_mean(a, fraction=0.2)),
                     ("krum", lambda a: A.krum(a, 2)), ("mkrum", lambda a: A.multi_krum(a, 2)),
                     ("bulyan", lambda a: A.bulyan(a, 1))]:
        res = fn(x)
        assert res.diagnostics.excluded_nonfinite.tolist() == [i in (5, 9) for i in range(12)], name
        np.testing.assert_array_equal(res.value, fn(clean).value, err_msg=name)
    # +inf and -inf in the same column sum to NaN: still detected
    y = rng.normal(size=(6, 5))
    y[1, 0], y[2, 0] = np.inf, -np.inf
    assert A.mean(y).diagnostics.excluded_nonfinite.tolist() == [False, True, True, False, False, False]
    # the fraction-based trim is recomputed for the finite rows: floor(0.2 · 10) = 2
    assert A.trimmed_mean(x, fraction=0.2).diagnostics.extra["trimmed_each_side"] == 2


def test_centered_clipping_byzantine_inputs_move_each_step_by_at_most_f_tau_over_n() -> None:
    """Karimireddy et al. 2021: one iteration from center v is v + (1/n)Σ_i clip_τ(x_i − v); the f Byzantine
    terms have norm ≤ τ each, so the result is within f·τ/n of the honest terms' update, whatever they send."""
    rng = np.random.default_rng(3)
    n, f, d, tau = 20, 4, 30, 0.7
    honest = rng.normal(size=(n - f, d)) + 2.0
    v = honest.mean(0) + rng.normal(size=d) * 0.1
    honest_part = v + sum(
        (h - v) * min(1.0, tau / np.linalg.norm(h - v)) for h in honest) / n
    for attack in (np.full((f, d), 1e15), -1e3 * np.tile(honest.mean(0), (f, 1)), rng.normal(size=(f, d)) * 1e8):
        x = np.vstack([honest, attack])
        res, _ = A.centered_clipping(x, tau, A.CenteredClippingState(v.copy()), iters=1)
        assert np.linalg.norm(res.value - honest_part) <= f * tau / n + 1e-9


def test_krum_picks_an_honest_input_and_multikrum_only_honest_ones_under_gross_attacks() -> None:
    """(Bulyan gives no such selection guarantee – colluding identical attackers are each other's nearest
    neighbour late in its recursion – its bound is coordinate-wise, tested in test_aggregation_properties.)"""
    rng = np.random.default_rng(4)
    n, f, d = 17, 4, 25
    honest = rng.normal(size=(n - f, d))
    for attack in (np.full((f, d), 1e6), 50.0 + rng.normal(size=(f, d)), -20.0 * np.tile(honest.mean(0), (f, 1))):
        x = np.vstack([attack, honest])  # attackers first: index order must not matter
        assert A.krum(x, f).diagnostics.selected[f:].any()
        assert not A.multi_krum(x, f).diagnostics.selected[:f].any()


def test_outlier_scores_are_distance_over_median_distance() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0], [40.0]])
    d = A.median(x).diagnostics  # result 2
    np.testing.assert_allclose(d.distances, [2, 1, 0, 1, 38])
    np.testing.assert_allclose(d.outlier_scores, np.array([2, 1, 0, 1, 38]) / 1.0)
    np.testing.assert_allclose(d.scores, d.distances)
    k = A.krum(x, 1).diagnostics
    np.testing.assert_allclose(k.scores, [5, 2, 2, 5, 37**2 + 38**2])


def test_expected_case_groups_match_the_occupancy_formula() -> None:
    """Equal groups of s: P(exactly j of G groups hit by f attackers) =
    C(G, j) Σ_i (−1)^i C(j, i) C((j − i)s, f) / C(Gs, f) (inclusion–exclusion over the hit groups)."""
    for g, s, f in ((5, 5, 5), (8, 3, 6), (4, 2, 3)):
        exact = [comb(g, j) * sum((-1) ** i * comb(j, i) * comb((j - i) * s, f) for i in range(j + 1))
                 / comb(g * s, f) for j in range(g + 1)]
        np.testing.assert_allclose(A.corrupted_groups_distribution([s] * g, f), exact, atol=1e-12)
        for k in range(g + 1):
            assert abs(A.prob_at_most_corrupted_groups([s] * g, f, k) - sum(exact[: k + 1])) < 1e-12
    # worst case is the default; at 5 % risk fewer groups suffice
    assert A.worst_case_corrupted_groups(5, 5) == 5
    k = A.f_groups_at_risk([5] * 5, 5, 0.05)
    assert A.corrupted_groups_tail([5] * 5, 5, k) <= 0.05 < A.corrupted_groups_tail([5] * 5, 5, k - 1)
    with pytest.raises(ValueError, match="risk"):
        A.f_groups_at_risk([5] * 5, 5, 1.0)


def test_group_mode_weights_the_means_and_counts_groups_for_the_robust_rules() -> None:
    rng = np.random.default_rng(5)
    sizes = np.array([3, 4, 3, 4, 3, 4, 3])
    clients = rng.normal(size=(sizes.sum(), 6))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    sums = np.array([clients[a:b].sum(0) for a, b in itertools.pairwise(bounds)])
    means = sums / sizes[:, None]
    res, _ = A.aggregate_groups("mkrum(m=5)", sums, sizes, f_clients=1)
    sel = res.diagnostics.selected
    np.testing.assert_allclose(res.value, (sizes[sel, None] * means[sel]).sum(0) / sizes[sel].sum(), rtol=1e-6)
    med, _ = A.aggregate_groups("median", sums, sizes, f_clients=3)
    np.testing.assert_allclose(med.value, np.median(means, axis=0), rtol=1e-6)
    assert med.diagnostics.extra["f_groups"] == 3
