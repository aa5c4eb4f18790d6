"""Trust: evidence mapping, group testing singles out persistent attackers, exploration floor, bans,
inclusion-probability bound, serialization."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.federation.trust import (
    TrustParams,
    TrustState,
    evidence_from_score,
    max_inclusion_probability,
    select,
)
from privacy.secagg import partition


def test_evidence_mapping() -> None:
    p = TrustParams(outlier_threshold=3.0)
    assert evidence_from_score(1.0, p) == (1.0, 0.0)
    assert evidence_from_score(0.5, p) == (1.0, 0.0)
    assert evidence_from_score(2.0, p) == (0.5, 0.5)
    assert evidence_from_score(10.0, p) == (0.0, 1.0)
    assert evidence_from_score(float("inf"), p) == (0.0, 1.0)
    assert evidence_from_score(float("nan"), p) == (0.0, 1.0)


@pytest.mark.parametrize("seed", range(8))
def test_group_evidence_singles_out_persistent_attackers(seed: int) -> None:
    """15 clients, 2 persistent attackers, fresh random groups of 3 each round (from a public seed): a group
    containing an attacker scores as an outlier, N(3, 1), honest groups |N(1, 0.5)| – the two distributions
    overlap. After 30 rounds both attackers' trust is below every honest client's."""
    rng = np.random.default_rng(seed)
    clients = [f"c{i:02d}" for i in range(15)]
    attackers = {"c03", "c11"}
    state = TrustState(TrustParams(ban_threshold=0.0))
    for r in range(30):
        groups = partition(clients, 3, (seed * 1000 + r).to_bytes(32, "little"))
        scores = [max(0.0, rng.normal(3.0, 1.0)) if set(g) & attackers else abs(rng.normal(1.0, 0.5))
                  for g in groups]
        state.observe_units(groups, scores)
    honest_min = min(state.trust(c) for c in clients if c not in attackers)
    assert max(state.trust(a) for a in attackers) < honest_min
    # the evidence is group-level only: an honest client grouped with an attacker did get negative evidence
    assert honest_min < TrustParams().prior_alpha / (TrustParams().prior_alpha + TrustParams().prior_beta)


def test_floor_keeps_everyone_selectable_and_bans_apply() -> None:
    clients = [f"c{i}" for i in range(10)]
    state = TrustState(TrustParams(floor=0.3, ban_threshold=0.0))  # no bans: only the floor acts
    for _ in range(20):
        state.observe("c0", 0.0, 1.0)
    assert state.trust("c0") < 0.3  # below the floor …
    rng = np.random.default_rng(1)
    counts = dict.fromkeys(clients, 0)
    for _ in range(2000):
        for c in state.select(clients, 3, rng):
            counts[c] += 1
    assert counts["c0"] > 100  # … yet still selected regularly: never starved
    # a fully negative observation weighs w⁻ = 2: after 2 of them trust is 2/6.8 = 0.294 < 0.3, but the ban waits
    # for min_evidence = 3 observations
    banning = TrustState(TrustParams(floor=0.1, ban_threshold=0.3, min_evidence=3))
    for k in range(1, 6):
        banning.observe("c9", 0.0, 1.0)
        assert banning.ensure("c9").banned == (k >= 3), (k, banning.trust("c9"))
    assert all("c9" not in banning.select(clients, 5, rng) for _ in range(50))
    with pytest.raises(ValueError, match="only"):
        banning.select(clients, 10, rng)


def test_low_trust_is_selected_less_and_bound_holds() -> None:
    state = TrustState(TrustParams(ban_threshold=0.0))
    clients = [f"c{i}" for i in range(12)]
    for _ in range(10):
        state.observe("c0", 0.0, 1.0)
        state.observe("c1", 1.0, 0.0)
    rng = np.random.default_rng(2)
    n = 5000
    counts = dict.fromkeys(clients, 0)
    for _ in range(n):
        for c in state.select(clients, 4, rng):
            counts[c] += 1
    assert counts["c0"] < counts["c5"] < counts["c1"] * 1.2
    bound = state.max_inclusion_probability(clients, 4)
    assert max(counts.values()) / n <= bound + 0.02 and bound < 1


def test_serialization_round_trip() -> None:
    s = TrustState()
    s.observe("a", 1.0, 0.0)
    s.observe("b", 0.0, 1.0)
    t = TrustState.from_dict(s.to_dict())
    assert t.trust("a") == s.trust("a") and t.trust("b") == s.trust("b") and t.params == s.params


def _exact_inclusion(w: list[float], m: int) -> list[float]:
    """Successive sampling's inclusion probabilities by enumerating every ordered draw sequence."""
    from itertools import permutations

    n, total = len(w), sum(w)
    p = [0.0] * n
    for seq in permutations(range(n), m):
        prob, left = 1.0, total
        for i in seq:
            prob *= w[i] / left
            left -= w[i]
        for i in seq:
            p[i] += prob
    return p


def test_inclusion_bound_against_exact_enumeration() -> None:
    rng = np.random.default_rng(4)
    for _ in range(30):
        n = int(rng.integers(2, 7))
        m = int(rng.integers(1, n + 1))
        t = rng.uniform(0, 1, n)
        t[rng.integers(n)] = 0.0  # below the floor
        w = np.maximum(t, 0.05).tolist()
        exact = max(_exact_inclusion(w, m))
        bound = max_inclusion_probability(t, m, 0.05)
        assert exact <= bound + 1e-12, (t, m, exact, bound)
        if m == 1:
            assert bound == pytest.approx(exact)
    # equal weights: m/(n − m + 1), against the exact m/n
    assert max_inclusion_probability([0.5] * 10, 3, 0.05) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        max_inclusion_probability([0.5, float("nan")], 1, 0.05)


def test_module_select_validates_and_is_reproducible() -> None:
    trust = {f"c{i}": 0.5 for i in range(6)}
    a = select(list(trust), 3, trust, np.random.default_rng(9), 0.1)
    assert a == select(list(trust), 3, trust, np.random.default_rng(9), 0.1) and len(set(a)) == 3
    with pytest.raises(ValueError, match="duplicate"):
        select(["c0", "c0"], 1, trust, np.random.default_rng(0), 0.1)
    with pytest.raises(ValueError, match="only 6"):
        select(list(trust), 7, trust, np.random.default_rng(0), 0.1)


def test_default_ban_threshold_spares_honest_clients_grouped_with_attackers() -> None:
    """With the defaults, 30 rounds of the scenario above (banned clients leave the pool) ban no honest client,
    although honest clients share outlier groups with the attackers."""
    clients = [f"c{i:02d}" for i in range(15)]
    attackers = {"c03", "c11"}
    banned_attackers = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        state = TrustState()
        for r in range(30):
            groups = partition(state.selectable(clients), 3, (seed * 1000 + r).to_bytes(32, "little"))
            state.observe_units(groups, [max(0.0, rng.normal(3.0, 1.0)) if set(g) & attackers
                                         else abs(rng.normal(1.0, 0.5)) for g in groups])
        assert not any(state.ensure(c).banned for c in clients if c not in attackers)
        banned_attackers += sum(state.ensure(a).banned for a in attackers)
    assert banned_attackers > 0


def test_uniform_selection_ignores_trust_but_keeps_bans() -> None:
    import numpy as np

    from coordinator.federation.trust import TrustParams, TrustState

    st = TrustState(TrustParams(selection="uniform"))
    for c in ("a", "b", "c", "d"):
        st.ensure(c)
    st.clients["a"].alpha, st.clients["a"].beta = 1.0, 50.0  # very low trust
    picks = [st.select(["a", "b", "c", "d"], 1, np.random.default_rng(i))[0] for i in range(4000)]
    assert abs(picks.count("a") / 4000 - 0.25) < 0.04  # as often as anyone (binomial sd ≈ 0.007)
    assert st.max_inclusion_probability(["a", "b", "c", "d"], 1) == 0.25
    trusting = TrustState(TrustParams())
    trusting.clients = st.clients
    picks = [trusting.select(["a", "b", "c", "d"], 1, np.random.default_rng(i))[0] for i in range(4000)]
    assert picks.count("a") / 4000 < 0.1
    st.clients["a"].banned = True
    assert "a" not in st.select(["a", "b", "c", "d"], 3, np.random.default_rng(0))


@pytest.mark.parametrize(("weight", "needed"), [(2.0, 5), (1.0, 12)])
def test_ban_reachability_under_persistent_negative_evidence(weight: float, needed: int) -> None:
    """From the prior (trust 2/3), the default ban (trust < 0.2, ≥ 5 observations) needs 5 fully negative
    observations with the default negative weight w⁻ = 2 (β = 1 + 2·Σ0.9^k ≥ 8 at k = 5); with w⁻ = 1 (the beta
    reputation's unweighted update) 12, as before. After a long fully positive record (30 observations) 15
    instead of 27."""
    state = TrustState(TrustParams(negative_weight=weight))
    k = 0
    while not state.ensure("x").banned:
        state.observe("x", 0.0, 1.0)
        k += 1
    assert k == needed
    state = TrustState(TrustParams(negative_weight=weight))
    for _ in range(30):
        state.observe("y", 1.0, 0.0)
    k = 0
    while not state.ensure("y").banned and k < 100:
        state.observe("y", 0.0, 1.0)
        k += 1
    assert k == (15 if weight == 2.0 else 27)


def test_to_dict_reuses_the_rows_of_unchanged_clients_and_sees_every_change() -> None:
    """Saving the state each round costs O(changed clients): an unchanged client's row is the same object as in
    the previous call (the store skips it without serializing), a changed one is a fresh row with the new values,
    and a forgotten identity leaves no row behind."""
    from dataclasses import asdict

    t = TrustState()
    for c in ("a", "b", "c"):
        t.ensure(c)
    first = t.to_dict()["clients"]
    t.observe("b", 0.0, 1.0)
    t.ensure("c").banned = True  # mutated in place, as the engine does
    second = t.to_dict()["clients"]
    assert second["a"] is first["a"]
    assert second["b"] is not first["b"] and second["b"] == asdict(t.clients["b"])
    assert second["c"]["banned"] is True and first["c"]["banned"] is False
    del t.clients["a"]
    assert set(t.to_dict()["clients"]) == {"b", "c"} and "a" not in t._rows
    assert TrustState.from_dict(t.to_dict()).clients == t.clients
