"""Routes 4, 5 and 6 (docs/threat-model.md) on the coordinator: noise calibrated for each group's actual
threshold, ε reported per participation against the coordinator (amplification only as a separately named
third-party figure), no values that bypass DP, no ε = 0 that reads as perfect privacy, δ < 1/N.

Driven by the real engine and real client sessions in-process (tests/test_engine_rules.py's harness)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_engine_rules import SPEC, Fed

import mle
from coordinator.federation.config import FederationConfig
from coordinator.federation.events import Send
from flcore.policy import PrivacyPolicy, required_threshold
from flcore.protocol import MESSAGE_TYPES
from privacy.client_pipeline import DistributedDPConfig
from privacy.dp import epsilon_for
from privacy.dp.accounting import RoundEvent
from privacy.dp.ledger import gaussian_rdp_epsilon

OPEN = PrivacyPolicy(min_noise_multiplier=0.0, epsilon_budget=math.inf, delta=1e-4)


def _fed(config: FederationConfig, n: int, policy: PrivacyPolicy = OPEN) -> Fed:
    fed = Fed(config, policy=policy)
    for i in range(n):
        fed.connect(f"c{i}")
    fed.pump()
    return fed


def _run(fed: Fed, rounds: int | None = None, max_steps: int = 400) -> None:
    for _ in range(max_steps):
        fed.pump()
        if fed.engine.finished or (rounds is not None and fed.engine.round_number >= rounds):
            return
        fed.fire_timer()
    raise AssertionError(f"stuck at round {fed.engine.round_number}")


def _tasks(fed: Fed) -> list[dict]:
    out = []
    for a in fed.actions:
        if isinstance(a, Send):
            fl = mle.loads(a.data).metadata["fl"]
            if fl["type"] == "task":
                out.append(fl["body"]["config"])
    return out


def _cfg(**kw) -> FederationConfig:
    base = dict(rounds=3, clients_per_round=10, group_size=5, aggregator="mean", noise_multiplier=1.0,
                epsilon=1e6, delta=1e-4, lr=0.1, train_timeout=10, phase_timeout=5)
    base.update(kw)
    return FederationConfig(SPEC, **base)


@pytest.mark.parametrize("group_size, n_clients", [(5, 10), (8, 8), (6, 13)])
def test_route_4_every_groups_noise_is_calibrated_for_its_own_threshold(group_size: int, n_clients: int) -> None:
    fed = _fed(_cfg(clients_per_round=n_clients, group_size=group_size, rounds=1), n_clients)
    _run(fed, 1)
    tasks = _tasks(fed)
    assert len(tasks) == n_clients
    for cfg in tasks:
        n, t = len(cfg["members"]), cfg["threshold"]
        assert cfg["degree"] == n - 1  # the complete graph
        assert t == required_threshold(n, "two-thirds", 1)
        assert cfg["dp"]["min_contributors"] == t  # σ_c = zΔ/√t: a sum of ≥ t inputs carries the full noise
        dp = DistributedDPConfig(**cfg["dp"])
        # a released sum holds ≥ t noise shares: its noise std is at least the accounted one
        assert math.sqrt(t) * dp.sigma_client() >= 0.999999 * dp.noise_multiplier * dp.sensitivity()
    assert fed.engine.round_number == 1


def test_route_5_epsilon_against_the_coordinator_is_per_participation() -> None:
    """20 clients, 5 per round: the amplified figure (q ≤ 0.25 the coordinator can see through) is what today's
    main reported; the coordinator now reports the per-participation figure of the most used client."""
    fed = _fed(_cfg(clients_per_round=5, group_size=5, rounds=8, aggregator="mean"), 20)
    _run(fed, 8)
    e = fed.engine
    most = e.participation.max_participations()
    z = e.cfg.dp_config(required_threshold(5, "two-thirds", 1)).effective_noise_multiplier()
    per_participation = gaussian_rdp_epsilon(most / z**2, e.cfg.delta)
    assert e.epsilon() == pytest.approx(per_participation, rel=1e-9)
    # what today's main reported: the subsampled (amplified) accountant over every round
    amplified = epsilon_for([RoundEvent(ev.noise_multiplier, ev.sampling_rate) for ev in e.amplified.events],
                            e.cfg.delta)
    assert len(e.amplified.events) == 8
    third = e.epsilon_third_party()
    assert third == pytest.approx(min(amplified, e.epsilon()), rel=1e-6) and third <= e.epsilon()
    st = e.status()["privacy"]
    assert st["epsilon"] == st["epsilon_vs_coordinator"] == pytest.approx(e.epsilon())
    assert st["epsilon_third_party"] == pytest.approx(third)
    # every client's own figure in the operator view; none above the max
    for c in e.status()["clients"]:
        assert c["epsilon"] is None or c["epsilon"] <= e.epsilon() + 1e-9


def test_the_coordinator_does_not_select_a_client_past_its_budget() -> None:
    z_cfg = _cfg(clients_per_round=5, group_size=5, rounds=50, epsilon=25.0, aggregator="mean")
    fed = _fed(z_cfg, 7)
    _run(fed)
    e = fed.engine
    assert e.stopped_reason.startswith("privacy budget exhausted")
    assert e.epsilon() <= 25.0
    assert all(e.participation.epsilon_of(c, e.cfg.delta) <= 25.0 for c in e.registry)


def test_route_6_no_values_bypass_dp_and_no_zero_epsilon() -> None:
    assert "metrics" not in MESSAGE_TYPES  # loss / sample counts are no longer sent in the clear
    fed = _fed(_cfg(noise_multiplier=0.0, epsilon=math.inf, rounds=1), 10)
    _run(fed, 1)
    st = fed.engine.status()
    assert st["privacy"]["private"] is False and st["privacy"]["epsilon"] is None
    assert st["metrics"]["epsilon"] is None and "train_loss" not in st["metrics"]
    # the client's own ledger says the same: no noise, no finite ε
    led = next(iter(fed.sessions.values())).ledger
    assert led.epsilon() == math.inf


def test_delta_must_be_below_one_over_the_population() -> None:
    with pytest.raises(ValueError, match="1/N"):
        _cfg(delta=0.2, clients_per_round=10).validate()
    fed = _fed(_cfg(delta=0.05, clients_per_round=10, rounds=2), 25,
               PrivacyPolicy(min_noise_multiplier=0.0, epsilon_budget=math.inf, delta=0.01))  # δ·N ≥ 1
    _run(fed)
    assert "not below 1/N" in fed.engine.stopped_reason


def test_route_8_a_member_that_omits_its_noise_share_earns_negative_evidence() -> None:
    """The debiasing used to subtract the noise every survivor was *told* to add, so a member that added none
    scored as positive evidence. The engine now measures the noise present in each released sum: a sum below
    the prescribed noise proves an omitted share; the group is excluded and its members get negative evidence."""
    import dataclasses

    from flcore.modelspec import mlp
    from flcore.session import ClientSession

    class NoiseOmitting(ClientSession):
        def training_done(self, delta, loss=None, num_samples=None):  # type: ignore[no-untyped-def]
            if self._task is not None:
                self._task["_dp"] = dataclasses.replace(self._task["_dp"], noise_multiplier=0.0)
            return super().training_done(delta)

    config = FederationConfig(mlp([64, 300, 10]), rounds=1, clients_per_round=30, group_size=5, aggregator="mean",
                              noise_multiplier=1.0, epsilon=1e6, delta=1e-4, train_timeout=10, phase_timeout=5)
    fed = Fed(config, policy=OPEN)
    for i in range(30):
        fed.connect(f"c{i}")
    fed.sessions["c0"].__class__ = NoiseOmitting  # the attacker: same session, no noise share
    _run(fed, 1)
    m = fed.engine.history[-1]
    assert m["groups_ok"] == 6 and m["groups_noise_deficient"] == 1 and m["groups_over_bound"] == 1
    trust = fed.engine.trust
    attacker = fed.cid("c0")
    mates = next(g for g in fed.engine.status()["clients"] if g["id"] == attacker)
    assert mates["observations"] == 1
    others = [fed.cid(f"c{i}") for i in range(1, 30)]
    group_of_attacker = [c for c in others if trust.trust(c) == trust.trust(attacker)]
    assert len(group_of_attacker) == 4  # its four group-mates share the (group-level) negative evidence
    assert all(trust.trust(c) > trust.trust(attacker) for c in others if c not in group_of_attacker)


def test_a_client_declining_its_task_is_a_dropout_told_declined_and_the_stall_is_logged() -> None:
    from coordinator.federation.events import Log
    from flcore.session import RoundDone

    fed = Fed(_cfg(rounds=3, clients_per_round=10), policy=OPEN)
    for i in range(9):
        fed.connect(f"c{i}")
    fed.policy = PrivacyPolicy(min_noise_multiplier=2.0, epsilon_budget=math.inf, delta=1e-4)  # z = 1 is too little
    fed.connect("picky")
    _run(fed, 1)
    assert fed.engine.history[-1]["survivors"] == 9  # its group released the sum of the 4 others (t = 4)
    done = {c: [a.status for a in fed.got[c] if isinstance(a, RoundDone)] for c in fed.sessions}
    assert done["picky"] == ["declined"] and all(done[f"c{i}"] == ["ok"] for i in range(9))
    assert fed.engine.participation.count(fed.cid("picky")) == 0 and fed.sessions["picky"].ledger.entries == []
    for _ in range(5):  # round 2 needs 10 eligible clients: it never starts, and the engine says why
        fed.pump()
        fed.fire_timer()
    assert fed.engine.round_number == 1 and fed.engine.round is None
    assert any(isinstance(a, Log) and "declined tasks" in a.message for a in fed.actions)
