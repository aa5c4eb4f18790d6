"""Rounds that cannot be aggregated fail cleanly and are retried (no exception escapes the engine)."""

from __future__ import annotations

from test_engine_inprocess import run_federation

from coordinator.federation.config import FederationConfig
from flcore.modelspec import mlp


def test_dropouts_leaving_too_few_groups_for_the_rule_fail_the_round_and_retry() -> None:
    # 10 clients in groups of 2 → 5 groups; centered clipping with f=1 needs ≥ 3 groups. Two groups lose a
    # member after training in round 2 → with threshold 2 of 2 those groups fail, leaving 3 … then one more.
    cfg = FederationConfig(model=mlp([64, 8, 10]), rounds=3, clients_per_round=10, group_size=2,
                           aggregator="clip(median)|bucket(2)|cc(tau=1)|momentum(beta=0.9)", byzantine=1,
                           local_epochs=1, noise_multiplier=0.05, epsilon=1e6)
    fired: set[int] = set()

    def drop(round_: int, i: int) -> bool:  # clients 0, 2, 4 vanish once, in round 2's first attempt
        if round_ == 2 and i in (0, 2, 4) and i not in fired:
            fired.add(i)
            return True
        return False

    engine, persisted, _failures, _ = run_federation(10, cfg, drop_after_train=drop)
    assert fired == {0, 2, 4}
    assert persisted == [1, 2, 3] and engine.finished
    assert len(engine.amplified.events) == 4  # the failed attempt's released sums were accounted
