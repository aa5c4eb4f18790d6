"""aggregation.planner: the per-round probability that groups break the robust rule – exact values against
brute-force enumeration (both population models, uneven groups), against the groups.py mixture, against Monte
Carlo (with numpy permutations and with the engine's own ``partition``); what each rule tolerates; the largest s
and smallest m searches; the trade-off table; ``check`` on federation configs; and the rule registry."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

import aggregation as A
from aggregation import planner as P
from aggregation.registry import RuleSpec, get_rule, register_rule, unregister_rule
from coordinator.federation.config import FederationConfig
from flcore.modelspec import mlp
from privacy.secagg.graph import partition


def _owner(sizes: tuple[int, ...]) -> list[int]:
    return [g for g, s in enumerate(sizes) for _ in range(s)]


def _brute_hypergeometric(n_pop: int, f: int, m: int, s: int) -> list[Fraction]:
    """Every ordered selection of m of the N clients is equally likely (uniform selection + uniform order);
    the partition cuts the order into groups of the planner's sizes. Client i < f is Byzantine."""
    sizes = P.group_sizes(m, s)
    owner = _owner(sizes)
    counts = [0] * (len(sizes) + 1)
    total = 0
    for order in itertools.permutations(range(n_pop), m):
        counts[len({owner[k] for k, c in enumerate(order) if c < f})] += 1
        total += 1
    return [Fraction(c, total) for c in counts]


def _brute_binomial(beta: Fraction, m: int, s: int) -> list[Fraction]:
    """Every Byzantine pattern of the m selected clients, each client Byzantine independently with prob β, and
    every order of them into the groups (counted per number of Byzantine clients k, then weighted)."""
    sizes = P.group_sizes(m, s)
    owner = _owner(sizes)
    counts = [[0] * (len(sizes) + 1) for _ in range(m + 1)]
    perms = list(itertools.permutations(range(m)))
    for pattern in itertools.product((0, 1), repeat=m):
        for order in perms:
            counts[sum(pattern)][len({owner[pos] for pos, c in enumerate(order) if pattern[c]})] += 1
    return [sum((Fraction(counts[k][j], len(perms)) * beta ** k * (1 - beta) ** (m - k) for k in range(m + 1)),
                Fraction(0)) for j in range(len(sizes) + 1)]


# ── the partition ─────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("m", "s"), [(15, 5), (13, 5), (14, 4), (10, 3), (3, 5), (50, 7), (7, 1), (9, 9)])
def test_group_sizes_are_the_sizes_partition_makes(m: int, s: int) -> None:
    groups = partition([f"c{i}" for i in range(m)], s, b"seed")
    assert P.group_sizes(m, s) == tuple(len(g) for g in groups)


# ── exact values ──────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("n_pop", "f", "m", "s"), [(8, 3, 6, 2), (8, 3, 7, 3), (7, 2, 5, 2), (7, 4, 6, 4),
                                                    (6, 6, 6, 2), (7, 0, 5, 1)])
def test_hypergeometric_model_matches_brute_force_enumeration(n_pop: int, f: int, m: int, s: int) -> None:
    exact = _brute_hypergeometric(n_pop, f, m, s)
    got = P.corrupted_groups_pmf(m, s, population=n_pop, byzantine=f)
    np.testing.assert_allclose(got, [float(x) for x in exact], rtol=0, atol=1e-13)
    for rule in ("median", "krum", "mean", "trmean(f=1)"):
        t = P.tolerated_groups(rule, len(P.group_sizes(m, s)))
        want = 1.0 if t is None else float(sum(exact[t + 1:]))
        assert P.failure_probability(m, s, rule, population=n_pop, byzantine=f) == pytest.approx(want, abs=1e-13)


@pytest.mark.parametrize(("beta", "m", "s"), [(Fraction(1, 5), 6, 2), (Fraction(1, 3), 5, 2), (Fraction(2, 7), 6, 3),
                                              (Fraction(1, 10), 6, 4)])
def test_binomial_model_matches_brute_force_enumeration(beta: Fraction, m: int, s: int) -> None:
    exact = _brute_binomial(beta, m, s)
    assert sum(exact) == 1
    got = P.corrupted_groups_pmf(m, s, byzantine_fraction=float(beta))
    np.testing.assert_allclose(got, [float(x) for x in exact], rtol=0, atol=1e-13)


@pytest.mark.parametrize(("beta", "m", "s"), [(0.1, 15, 5), (0.2, 13, 4), (0.3, 50, 5), (0.05, 37, 6), (0.25, 20, 1)])
def test_binomial_closed_form_equals_the_mixture_over_groups_distribution(beta: float, m: int, s: int) -> None:
    """Independent groups (the closed form) = Σ_b Binomial(b; m, β) · corrupted_groups_distribution(sizes, b)."""
    sizes = P.group_sizes(m, s)
    mix = sum(math.comb(m, b) * beta ** b * (1 - beta) ** (m - b) * A.corrupted_groups_distribution(sizes, b)
              for b in range(m + 1))
    np.testing.assert_allclose(P.corrupted_groups_pmf(m, s, byzantine_fraction=beta), mix, rtol=1e-10, atol=1e-14)


def test_a_hand_computed_case() -> None:
    """15 clients in 3 groups of 5, median tolerates 1: a round fails when ≥ 2 of 3 independent groups are hit,
    each with p = 1 − (1 − β)^5."""
    for beta in (1 / 15, 0.1, 0.2, 0.3):
        p = 1 - (1 - beta) ** 5
        want = 3 * p ** 2 * (1 - p) + p ** 3
        assert P.failure_probability(15, 5, "median", byzantine_fraction=beta) == pytest.approx(want, rel=1e-12)
    assert P.failure_probability(15, 5, "median", byzantine_fraction=1 / 15) == pytest.approx(0.2056932572, abs=1e-9)


def test_edge_cases() -> None:
    assert P.failure_probability(15, 5, "median", byzantine_fraction=0.0) == 0.0
    assert P.failure_probability(15, 5, "median", byzantine_fraction=1.0) == 1.0
    assert P.failure_probability(10, 5, "krum", byzantine_fraction=0.0) == 1.0  # krum cannot run over 2 groups
    assert P.failure_probability(15, 5, "median", population=15, byzantine=1) == 0.0  # one attacker, one group
    # every Byzantine client of a full-participation population is in every round
    assert P.failure_probability(15, 3, "median", population=15, byzantine=2) == 0.0
    assert P.failure_probability(15, 3, "median", population=15, byzantine=3) == pytest.approx(
        float(A.corrupted_groups_distribution([3] * 5, 3)[3]), abs=1e-15)
    for kw in ({}, {"byzantine_fraction": 1.5}, {"byzantine_fraction": 0.1, "population": 10, "byzantine": 1},
               {"population": 10}, {"population": 10, "byzantine": 11}):
        with pytest.raises(ValueError):
            P.failure_probability(15, 5, "median", **kw)
    with pytest.raises(ValueError, match="smaller than a round"):
        P.failure_probability(15, 5, "median", population=10, byzantine=1)
    with pytest.raises(ValueError):
        P.group_sizes(0, 5)


# ── Monte Carlo ───────────────────────────────────────────────────────────────────────────────────────────
def _monte_carlo(rng: np.random.Generator, trials: int, m: int, s: int, rule: str, *, beta: float | None = None,
                 n_pop: int | None = None, f: int | None = None) -> float:
    sizes = P.group_sizes(m, s)
    starts = np.cumsum((0, *sizes[:-1]))
    if n_pop is None:
        byz = rng.random((trials, m)) < beta
    else:
        order = np.argsort(rng.random((trials, n_pop)), axis=1)[:, :m]  # uniform selection, uniform order
        byz = order < f
    corrupted = (np.add.reduceat(byz.astype(np.int32), starts, axis=1) > 0).sum(axis=1)
    t = P.tolerated_groups(rule, len(sizes))
    return float(np.mean(corrupted > t))


@pytest.mark.parametrize(("m", "s", "rule", "model"), [
    (50, 5, "median", {"beta": 0.2}),
    (50, 7, "krum", {"beta": 0.1}),
    (37, 4, "bucket(2)|cc(tau=1)", {"beta": 0.15}),
    (50, 5, "median", {"n_pop": 200, "f": 40}),
    (60, 6, "trmean(frac=0.3)", {"n_pop": 100, "f": 20}),
])
def test_monte_carlo_agrees(m: int, s: int, rule: str, model: dict) -> None:
    trials = 30_000
    mc = _monte_carlo(np.random.default_rng(12), trials, m, s, rule, **model)
    kw = ({"byzantine_fraction": model["beta"]} if "beta" in model
          else {"population": model["n_pop"], "byzantine": model["f"]})
    exact = P.failure_probability(m, s, rule, **kw)
    se = math.sqrt(max(exact * (1 - exact), 1e-4) / trials)
    assert abs(mc - exact) < 4.5 * se, (mc, exact)


def test_monte_carlo_through_the_engines_partition() -> None:
    """The engine's partition (public seed → permutation) with random selections: the same probability."""
    rng = np.random.default_rng(5)
    m, s, n_pop, f, trials = 20, 4, 40, 8, 3000
    ids = [f"client-{i:03d}" for i in range(n_pop)]
    byzantine = set(ids[:f])
    fails = 0
    t = P.tolerated_groups("median", len(P.group_sizes(m, s)))
    for _ in range(trials):
        chosen = [ids[i] for i in rng.choice(n_pop, m, replace=False)]
        groups = partition(chosen, s, rng.bytes(32))
        fails += sum(any(c in byzantine for c in g) for g in groups) > t
    exact = P.failure_probability(m, s, "median", population=n_pop, byzantine=f)
    assert abs(fails / trials - exact) < 4.5 * math.sqrt(exact * (1 - exact) / trials), (fails / trials, exact)


# ── what a rule tolerates ─────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("rule", "g", "capacity", "with_f1"), [
    ("median", 5, 2, 2), ("median", 3, 1, 1), ("median", 2, 0, 0), ("median", 1, 0, 0),
    ("gm", 7, 3, 3), ("cc(tau=1)", 4, 1, 1),
    ("krum", 7, 2, 1), ("krum", 5, 1, 1), ("krum", 2, None, None), ("mkrum(m=3)", 9, 3, 1),
    ("bulyan", 7, 1, 1), ("bulyan", 6, 0, 0), ("bulyan", 2, None, None),
    ("trmean", 5, 2, 1), ("trmean(f=1)", 5, 1, 1), ("trmean(frac=0.2)", 10, 2, 2),
    ("mean", 5, 0, 0), ("wmean", 5, 0, 0), ("fltrust", 5, 0, 0), ("nnm|mean", 5, 0, 0), ("nnm|median", 5, 2, 1),
    ("bucket(2)|cc(tau=1)", 10, 2, 2), ("clip(median)|bucket(2)|cc(tau=1)|momentum(beta=0.9)", 3, 0, 0),
    ("bucket(2)|median", 6, 1, 1),
])
def test_tolerated_groups(rule: str, g: int, capacity: int | None, with_f1: int | None) -> None:
    """Capacity: the largest f_g for which parse_pipeline(rule, n=G, f=f_g) is valid and the aggregator covers
    it; with a configured f_g = 1, rules that take f (krum, mkrum, bulyan, trmean, nnm) tolerate only that."""
    assert P.tolerated_groups(rule, g) == capacity
    if capacity is not None:
        A.parse_pipeline(rule, n=g, f=capacity, has_weights=True, has_root_update=True)  # valid …
        agg = A.parse_pipeline(rule).aggregator
        if capacity < g and get_rule(agg.name).tolerates(agg.args, g) is None:
            with pytest.raises(ValueError):  # … and one more is not
                A.parse_pipeline(rule, n=g, f=capacity + 1, has_weights=True, has_root_update=True)
    assert P.tolerated_groups(rule, g, f_groups=1 if (capacity or 0) >= 1 else 0) == with_f1


def test_configured_f_beyond_what_the_rule_can_run_with() -> None:
    assert P.tolerated_groups("krum", 5, f_groups=2) is None  # 5 < 2·2 + 3
    assert P.tolerated_groups("median", 5, f_groups=4) == 2  # median takes no f: its capacity
    assert P.failure_probability(25, 5, "krum", byzantine_fraction=0.01, configured_f=2) == 1.0
    with pytest.raises(ValueError, match="not both"):
        P.failure_probability(25, 5, "krum", byzantine_fraction=0.01, configured_f=1, f_groups=1)


# ── planning ──────────────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("m", "rule", "beta"), [(15, "median", 1 / 15), (50, "median", 0.2), (50, "krum", 0.05),
                                                 (30, "bucket(2)|cc(tau=1)", 0.1)])
def test_largest_group_size_is_the_largest_that_holds(m: int, rule: str, beta: float) -> None:
    s = P.largest_group_size(m, rule, byzantine_fraction=beta)
    probs = {k: P.failure_probability(m, k, rule, byzantine_fraction=beta) for k in range(1, m + 1)}
    holding = [k for k, p in probs.items() if p <= 0.01]
    assert s == (max(holding) if holding else None)


@pytest.mark.parametrize(("s", "rule", "beta"), [(5, "median", 1 / 15), (5, "median", 0.1), (3, "krum", 0.05),
                                                 (4, "gm", 0.1)])
def test_smallest_clients_per_round_is_the_smallest_that_holds(s: int, rule: str, beta: float) -> None:
    m = P.smallest_clients_per_round(s, rule, byzantine_fraction=beta)
    assert m is not None and P.failure_probability(m, s, rule, byzantine_fraction=beta) <= 0.01
    assert all(P.failure_probability(k, s, rule, byzantine_fraction=beta) > 0.01 for k in range(s, m))


def test_searches_that_find_nothing() -> None:
    assert P.largest_group_size(10, "mean", byzantine_fraction=0.2) is None
    assert P.smallest_clients_per_round(5, "mean", byzantine_fraction=0.2, m_max=60) is None
    assert P.smallest_clients_per_round(5, "median", population=20, byzantine=10) is None  # half the population
    # groups of 4 at β = 0.2 are each corrupted with probability 1 − 0.8⁴ = 0.59 > ½: a majority rule over the
    # group means fails more often, not less, as m grows
    assert P.smallest_clients_per_round(4, "gm", byzantine_fraction=0.2) is None
    with pytest.raises(ValueError, match="bound"):
        P.largest_group_size(10, "median", byzantine_fraction=0.1, bound=1.0)


def test_tradeoff_table() -> None:
    rows = P.tradeoff_rows(15, "median", (0.1, 0.2, 0.3))
    assert [(r.group_sizes_range, r.num_groups, r.tolerated) for r in rows] == [
        ((1, 1), 15, 7), ((2, 2), 7, 3), ((3, 3), 5, 2), ((4, 5), 3, 1), ((6, 7), 2, 0), ((8, 15), 1, 0)]
    for r in rows:
        for beta, p in zip((0.1, 0.2, 0.3), r.failure, strict=True):
            assert p == P.failure_probability(15, r.group_sizes_range[1], "median", byzantine_fraction=beta)
    text = P.tradeoff_table(15, "median", (0.1, 0.2, 0.3))
    assert "4–5" in text and "3×5" in text and "1×8 + 1×7" in text and "0.3657" in text
    md = P.tradeoff_table(10, "median", 0.2, markdown=True)
    assert md.count("\n| ") == len(P.tradeoff_rows(10, "median", 0.2)) + 1 and "β = 0.2" in md
    assert " – " in P.tradeoff_table(10, "krum", 0.1)  # krum cannot run over 1 or 2 groups


def test_rule_warnings_and_known_failures() -> None:
    for rule in ("krum", "mkrum", "bucket(2)|mkrum(m=3)|momentum(beta=0.9)"):
        (w,) = P.rule_warnings(rule)
        assert "identical updates" in w and "n − f − 2" in w
    assert P.rule_warnings("median") == [] and P.rule_warnings("clip(median)|bucket(2)|cc(tau=1)") == []
    assert "no robustness" in P.rule_warnings("mean")[0]
    failures = P.known_failures("clip(median)|krum")
    assert set(failures) == {"krum"} and any("identical" in x for x in failures["krum"])


# ── a configured federation ───────────────────────────────────────────────────────────────────────────────
def _cfg(**kw) -> FederationConfig:
    cfg = FederationConfig(model=mlp([64, 10]), **kw)
    cfg.validate()
    return cfg


def test_check_defaults_have_no_risk() -> None:
    r = P.check(_cfg())  # m = 15, s = 5, median, byzantine 0 → β = 0
    assert r.ok and r.failure_probability == 0.0 and r.byzantine_fraction == 0.0 and r.byzantine_fraction_derived
    assert r.largest_group_size == 15 and r.smallest_clients_per_round == 5 and r.warnings == ()


def test_check_derives_beta_from_byzantine_and_suggests() -> None:
    r = P.check(_cfg(byzantine=1))
    assert r.byzantine_fraction == pytest.approx(1 / 15) and not r.ok
    assert r.failure_probability == pytest.approx(P.failure_probability(15, 5, "median", byzantine_fraction=1 / 15))
    assert r.largest_group_size == P.largest_group_size(15, "median", byzantine_fraction=1 / 15) == 2
    assert r.smallest_clients_per_round == P.smallest_clients_per_round(5, "median", byzantine_fraction=1 / 15)
    text = r.message()
    assert "0.2057" in text and "exceeds the bound 0.01" in text and "largest group size" in text
    assert f"is {r.smallest_clients_per_round}" in text
    assert P.check(_cfg(byzantine=1), byzantine_fraction=0.0).ok
    assert P.check(_cfg(byzantine=1), bound=0.25).ok
    # a known population of 15 (full participation): the one attacker corrupts one group at most
    assert P.check(_cfg(byzantine=1), population=15).failure_probability == 0.0


def test_check_covers_the_smaller_rounds_min_clients_allows() -> None:
    r = P.check(_cfg(clients_per_round=50, min_clients_per_round=15, byzantine=1, aggregator="median"), byzantine_fraction=0.02)
    assert r.full_round.failure_probability <= 0.01 < r.failure_probability
    assert r.worst_round.clients < 50 and not r.ok
    k = r.smallest_min_clients_per_round
    assert k is not None and all(P.failure_probability(n, 5, "median", byzantine_fraction=0.02) <= 0.01
                                 for n in range(k, 51))
    assert P.failure_probability(k - 1, 5, "median", byzantine_fraction=0.02) > 0.01
    assert f"min_clients_per_round ≥ {k}" in r.message()


def test_check_runs_krum_with_the_configured_f_and_warns() -> None:
    cfg = _cfg(clients_per_round=45, group_size=5, aggregator="krum", byzantine=1)  # G = 9: capacity 3, runs with 1
    r = P.check(cfg, byzantine_fraction=0.05)
    assert r.rule_takes_f and r.full_round.tolerated == 1
    assert r.failure_probability == pytest.approx(P.failure_probability(45, 5, "krum", byzantine_fraction=0.05,
                                                                        configured_f=1))
    assert r.failure_probability > P.failure_probability(45, 5, "krum", byzantine_fraction=0.05)  # capacity 3
    assert any("identical updates" in w for w in r.warnings)
    assert "takes f" in r.message()


def test_check_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError):
        P.check(_cfg(), byzantine_fraction=-0.1)
    with pytest.raises(ValueError):
        P.check(_cfg(), bound=1.5)


# ── the registry ──────────────────────────────────────────────────────────────────────────────────────────
def test_registry_a_new_rule_is_parsed_validated_run_and_planned() -> None:
    def trimk(x, f, w, args, ctx):
        return A.trimmed_mean(x, f=int(args.get("k", 0)))

    register_rule(RuleSpec("firstk", "aggregator", ("k",), run=trimk,
                           precondition=lambda args, f: (3 * f + 1, "3f+1"), fails_on=("anything",)))
    try:
        p = A.parse_pipeline("clip(median)|firstk(k=2)", n=7, f=2)
        with pytest.raises(ValueError, match=r"^firstk needs n >= 3f\+1: got n=6 groups, f=2 after clip"):
            A.validate_pipeline(p, 6, 2, unit="groups")
        with pytest.raises(ValueError, match="firstk: unknown argument 'j'"):
            A.parse_pipeline("firstk(j=1)")
        x = np.arange(15, dtype=np.float64).reshape(5, 3) ** 2
        res, _ = A.aggregate("firstk(k=2)", x, 1)
        np.testing.assert_allclose(res.value, x[2])
        assert P.tolerated_groups("firstk", 7) == 2 and P.known_failures("firstk") == {"firstk": ("anything",)}
        with pytest.raises(ValueError, match="already registered"):
            register_rule(RuleSpec("firstk", "aggregator", run=trimk))
    finally:
        unregister_rule("firstk")
    with pytest.raises(ValueError, match="unknown pipeline step 'firstk'"):
        A.parse_pipeline("firstk")
    with pytest.raises(ValueError, match="built-in"):
        unregister_rule("median")
    with pytest.raises(ValueError, match="lower-case"):
        RuleSpec("Bad1", "aggregator", run=trimk)


def test_registry_holds_every_builtin_step_with_its_arguments() -> None:
    from aggregation import registry

    builtin = {"clip", "bucket", "nnm", "mean", "wmean", "median", "trmean", "krum", "mkrum", "bulyan", "gm", "cc",
               "fltrust", "momentum"}
    assert builtin == registry.BUILTIN_NAMES
    assert get_rule("trmean").args == ("f", "frac") and get_rule("gm").args == ("tol", "nu", "max_iter")
    assert {n for n in registry.BUILTIN_NAMES if get_rule(n).kind == "aggregator"} == {
        "mean", "wmean", "median", "trmean", "krum", "mkrum", "bulyan", "gm", "cc", "fltrust"}


@pytest.mark.parametrize("rule", ["nnm|cc(tau=0.3, iters=3)|momentum(beta=0.9)", "trmean", "krum"])
def test_smallest_configured_f_is_the_first_f_within_the_bound(rule: str) -> None:
    """30 of 100 Byzantine, 50 per round, groups of 1: telling the rule the expected 15 leaves the hypergeometric
    tail uncovered; the smallest f within the bound, found by scanning every f, is what the function returns."""
    kw = {"population": 100, "byzantine": 30}
    f = P.smallest_configured_f(50, 1, rule, **kw)
    assert f is not None and f > 15
    assert P.failure_probability(50, 1, rule, configured_f=15, **kw) > 0.3
    assert P.failure_probability(50, 1, rule, configured_f=f, **kw) <= P.DEFAULT_BOUND
    assert P.failure_probability(50, 1, rule, configured_f=f - 1, **kw) > P.DEFAULT_BOUND
    assert P.smallest_configured_f(10, 1, rule, **kw) is None  # n ≥ 2f+1 caps f below the tail at 10 per round


def test_smallest_configured_f_of_rules_that_take_no_f() -> None:
    kw = {"population": 100, "byzantine": 30}
    assert P.smallest_configured_f(50, 1, "clip(median)|cc(tau=0.3, iters=3)|momentum(beta=0.9)", **kw) == 0
    assert P.smallest_configured_f(50, 1, "mean", **kw) is None  # tolerates none, whatever f it is told
