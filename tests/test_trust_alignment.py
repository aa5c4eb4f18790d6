"""Alignment evidence against updates that oppose the aggregate (docs/trust.md (i)): the pure functions against
a naive reference, hand-written sign-flipping adversaries driving the real TrustState with the real robust rule,
and the real Engine through the harness's direct mode."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aggregation import aggregate
from coordinator.federation.evidence import (
    alignment_evidence,
    debiased_outlier_scores,
    opposition_negative_evidence,
)
from coordinator.federation.trust import ClientTrust, TrustParams, TrustState

D = 2000


def test_alignment_evidence_is_the_cosine_with_the_aggregate() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, D))
    a = rng.normal(size=D)
    x[2] = np.nan
    x[4] = 0.0
    x[[0, 1, 3]] += 0.5 * a  # a majority agreeing clearly with the aggregate: past the gate
    got = alignment_evidence(x, a)
    for i in (0, 1, 3, 5):
        naive = sum(float(p) * float(q) for p, q in zip(x[i], a, strict=True)) / (
            math.sqrt(sum(float(p) ** 2 for p in x[i])) * math.sqrt(sum(float(q) ** 2 for q in a)))
        assert got[i] == pytest.approx(naive, abs=1e-12)
    assert math.isnan(got[2]) and math.isnan(got[4])  # non-finite and zero units: no direction
    assert alignment_evidence(-x[:2], a, gate=-np.inf) == pytest.approx(-got[:2])
    assert np.isnan(alignment_evidence(x, np.zeros(D))).all()  # no aggregate direction: no evidence
    assert np.isnan(alignment_evidence(x, np.full(D, np.inf))).all()


def test_a_round_without_a_clearly_agreeing_majority_gives_no_alignment_evidence() -> None:
    """The gate: units whose median cosine with the aggregate is within chance (cos·√d < 5) give no evidence –
    the aggregate is then no reference (heterogeneous clients, or one steered by coordinated attackers)."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=D)
    unit = a / np.linalg.norm(a)
    noise = rng.normal(size=(9, D))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    weak = noise + 3.0 / np.sqrt(D) * unit  # cos ≈ 3/√d: agreeing, but within chance
    assert np.isnan(alignment_evidence(weak, a)).all()
    strong = noise + 8.0 / np.sqrt(D) * unit  # cos ≈ 8/√d: a clear majority agrees
    assert np.isfinite(alignment_evidence(strong, a)).all()
    assert np.isfinite(alignment_evidence(weak, a, gate=0.0)).all()


def test_opposition_negative_evidence() -> None:
    assert opposition_negative_evidence(-3.0, 1.0, 2.0) == 0.5  # A = −3: half-way from −t to −2t
    assert opposition_negative_evidence(-5.0, 1.0, 2.0) == 1.0
    assert opposition_negative_evidence(-1.9, 1.0, 2.0) == 0.0
    assert opposition_negative_evidence(4.0, 1.0, 2.0) == 0.0  # agreeing: never positive evidence here
    assert opposition_negative_evidence(-9.0, 0.0, 2.0) == 0.0  # no observation yet
    assert opposition_negative_evidence(-9.0, 1.0, 0.0) == 0.0  # off


def _federation(attack: str, seed: int, params: TrustParams | None = None, rounds: int = 60, n: int = 100,
                b: int = 30, m: int = 50) -> tuple[TrustState, list[str], set[str]]:
    """Hand-written federation with groups of 1: honest update = common descent direction μ (norm 1) + a
    client-specific non-IID part (norm 3, so the honest clients are spread wider than a flipped update is far) +
    noise; a sign-flipping attacker sends −(its own honest update) – inside the honest norms, each one different.
    The round's aggregate is the real coordinate-wise median over the units; outlier scores and alignments are
    computed as the engine does."""
    rng = np.random.default_rng(seed)
    clients = [f"c{i:03d}" for i in range(n)]
    attackers = set(clients[:b]) if attack != "none" else set()
    het = {c: rng.normal(size=D) * 3.0 / np.sqrt(D) for c in clients}
    direction = rng.normal(size=D) / np.sqrt(D)
    state = TrustState(params or TrustParams())
    for _ in range(rounds):
        mu = direction + 0.3 * rng.normal(size=D) / np.sqrt(D)
        pool = state.selectable(clients)
        sel = sorted(rng.choice(pool, size=min(m, len(pool)), replace=False).tolist())
        means = np.array([(mu + het[c] + rng.normal(size=D) * 0.3 / np.sqrt(D)) * (-1.0 if c in attackers else 1.0)
                          for c in sel])
        agg = aggregate("median", means, f=int(0.3 * len(sel)))[0].value
        state.observe_units([[c] for c in sel], debiased_outlier_scores(means, np.zeros(len(sel))),
                            alignments=alignment_evidence(means, agg))
    return state, clients, attackers


def _trust(state: TrustState, names: list[str]) -> float:
    return float(np.mean([state.trust(c) for c in names]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sign_flipping_attackers_lose_trust_and_are_banned(seed: int) -> None:
    """30 of 100 clients flip their updates, 50 per round, 60 rounds: most attackers are banned, the rest end
    below every honest client; no honest client is banned."""
    state, clients, attackers = _federation("sign_flip", seed)
    honest = [c for c in clients if c not in attackers]
    banned = [c for c in attackers if state.ensure(c).banned]
    assert len(banned) >= 20, len(banned)
    assert max((state.trust(c) for c in attackers if c not in banned), default=0.0) < min(
        state.trust(c) for c in honest)
    assert not any(state.ensure(c).banned for c in honest)


def test_without_alignment_evidence_the_sign_flippers_are_not_separated() -> None:
    """The same federation with the alignment evidence off: the distance score alone does not separate them
    (flipped updates are no farther from the honest ones than those are from each other) – what it adds."""
    state, clients, attackers = _federation("sign_flip", 0, TrustParams(alignment_threshold=0.0))
    honest = [c for c in clients if c not in attackers]
    assert abs(_trust(state, list(attackers)) - _trust(state, honest)) < 0.1
    assert not any(state.ensure(c).banned for c in clients)


def test_honest_federation_gets_no_alignment_evidence() -> None:
    """No attack: every client's accumulated alignment is positive, trust is the same as with the evidence off."""
    on, clients, _ = _federation("none", 0)
    off, _, _ = _federation("none", 0, TrustParams(alignment_threshold=0.0))
    assert all(on.ensure(c).align > 0 for c in clients if on.ensure(c).align_energy > 0)
    assert not any(on.ensure(c).banned for c in clients)
    assert [on.trust(c) for c in clients] == [off.trust(c) for c in clients]


def test_alignment_state_round_trip_and_old_states() -> None:
    state, _, _ = _federation("sign_flip", 0, rounds=3)
    again = TrustState.from_dict(state.to_dict())
    assert again.clients == state.clients and any(c.align_energy > 0 for c in again.clients.values())
    old = {"params": {"prior_alpha": 2.0, "prior_beta": 1.0, "decay": 0.9, "outlier_threshold": 2.5, "floor": 0.05,
                      "ban_threshold": 0.2, "min_evidence": 5, "selection": "trust"},
           "clients": {"a": {"alpha": 3.0, "beta": 1.5, "observations": 4, "banned": False, "drift": 0.5,
                             "drift_energy": 1.0, "stalls": 0}}}
    loaded = TrustState.from_dict(old)
    assert loaded.clients["a"] == ClientTrust(3.0, 1.5, 4, False, 0.5, 1.0, 0.0, 0.0, 0)
    assert loaded.params.alignment_threshold == TrustParams().alignment_threshold
    with pytest.raises(ValueError, match="alignment_threshold"):
        TrustParams(alignment_threshold=-1.0)


def _engine_run(threshold: float) -> tuple[float, float]:
    from coordinator.federation.config import DEFAULT_AGGREGATOR
    from simulations import run_simulation
    from simulations.config import load_toml
    from simulations.results_suite import CONFIGS

    data = load_toml(CONFIGS / "suite_digits_a05.toml")
    data.update(rounds=40, seed=0)
    data["federation"].update(clients_per_round=50, byzantine=20, group_size=1, aggregator=DEFAULT_AGGREGATOR,
                              trust_alignment_threshold=threshold)
    data["attack"].update(name="sign_flip(scale=1)", num_byzantine=30)
    r = run_simulation(data)
    byz = set(r.byzantine)
    final = r.extra["trust_final"]
    t_b = float(np.mean([x["trust"] for i, x in enumerate(final) if i in byz]))
    t_h = float(np.mean([x["trust"] for i, x in enumerate(final) if i not in byz]))
    return t_b, t_h


def test_real_engine_sign_flippers_on_digits() -> None:
    """The real Engine through the harness's direct mode (digits, Dirichlet α = 0.5, 100 clients, 30 flip their
    updates, 50 per round in groups of 1, 40 rounds): with the alignment evidence the attackers' mean trust ends
    well below the honest clients'; without it, it does not."""
    t_b, t_h = _engine_run(TrustParams().alignment_threshold)
    assert t_b < t_h - 0.2, (t_b, t_h)
    t_b0, t_h0 = _engine_run(0.0)
    assert t_b0 > t_h0 - 0.1, (t_b0, t_h0)
