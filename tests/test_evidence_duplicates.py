"""Coordinated units: two units closer than independent noise allows (Sybils or free-riders sending one update,
or sharing one noise draw) are flagged, whatever their signal; honest units never are. Driven through the real
client pipeline (clip → stochastic rounding → discrete-Gaussian share → field) and, end to end, the engine."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.federation.evidence import duplicate_units
from privacy.backends import numpy_backend
from privacy.client_pipeline import DistributedDPConfig, decode_sum, prepare_update
from privacy.randomness import RandomStream

D = 4000


def _encoded(updates: list[np.ndarray], z: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each update through prepare_update with its own stream (s = 1: each unit is one client)."""
    be = numpy_backend()
    cfg = DistributedDPConfig(l2_clip=1.0, noise_multiplier=z, bits=16, modulus_bits=32, min_contributors=1,
                              dimension=D)
    rows = []
    for i, u in enumerate(updates):
        vec, _ = prepare_update(u.astype(np.float32), cfg, RandomStream(bytes([seed % 256, i]) * 16), be)
        rows.append(np.asarray(decode_sum(vec, cfg, be), np.float64))
    scale = cfg.fixed_point().scale()
    dp_var = (cfg.sigma_client() ** 2 if z > 0 else 0.0) / scale**2
    return np.stack(rows), np.full(len(rows), dp_var), np.full(len(rows), 0.25 / scale**2)


def _honest(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    base = rng.normal(size=D)
    return [0.9 * (base + 0.3 * rng.normal(size=D)) / np.linalg.norm(base) for _ in range(n)]


@pytest.mark.parametrize("z", [0.0, 1.0])
def test_honest_clients_are_never_flagged(z: float) -> None:
    for seed in range(10):
        rng = np.random.default_rng(seed)
        means, v, r = _encoded(_honest(8, rng), z, seed)
        assert not duplicate_units(means, v, r).any(), seed


def test_sybils_sending_one_update_without_noise_are_flagged() -> None:
    rng = np.random.default_rng(1)
    ups = _honest(6, rng)
    sybil = rng.normal(size=D) * 0.01  # near-zero "free-rider" update, copied by three identities
    means, v, r = _encoded([*ups, sybil, sybil, sybil], 0.0, 1)  # independent rounding, same input
    flags = duplicate_units(means, v, r)
    assert flags.tolist() == [False] * 6 + [True] * 3


def test_units_sharing_one_noise_draw_are_flagged_honest_noise_is_not() -> None:
    rng = np.random.default_rng(2)
    means, v, r = _encoded(_honest(6, rng), 1.0, 2)
    copy = means.copy()
    copy[5] = copy[4] + 0.01 * rng.normal(size=D)  # a Sybil replaying another's noised vector, slightly moved
    assert duplicate_units(means, v, r).sum() == 0
    assert duplicate_units(copy, v, r).tolist() == [False] * 4 + [True, True]


def test_two_sybils_with_the_same_update_get_negative_evidence_in_a_real_federation() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_engine_rules import Fed, cfg

    fed = Fed(cfg(rounds=1, clients_per_round=6, aggregator="median"))
    names = [f"c{i}" for i in range(6)]
    for c in names:
        fed.train_hold.add(c)
        fed.connect(c)
    fed.pump()
    sybil = np.full(15, 0.05, np.float32)
    for c in list(fed.pending_train):
        if c in ("c0", "c1"):
            for a in fed.sessions[c].training_done(sybil):
                fed._client_action(c, a)
        else:
            fed.train(c)
    fed.run_round(1)
    m = fed.engine.history[-1]
    assert m["groups_duplicate"] == 2
    trust = fed.engine.trust
    sybils = [trust.trust(fed.cid(c)) for c in ("c0", "c1")]
    honest = [trust.trust(fed.cid(c)) for c in names[2:]]
    assert max(sybils) < min(honest)


def test_a_noise_omitting_unit_does_not_get_honest_units_flagged_as_duplicates() -> None:
    """A unit with less noise than prescribed sits closer to every other unit than the prescribed noise implies;
    judged against the noise measured in each unit (what the engine passes), no honest unit is flagged."""
    from coordinator.federation.evidence import effective_noise_variance, measured_noise_variance

    for seed in range(5):
        rng = np.random.default_rng(10 + seed)
        means, v, r = _encoded(_honest(6, rng), 1.0, 10 + seed)
        quiet, _, _ = _encoded(_honest(1, rng), 0.0, 99)  # a unit that added no noise at all
        means = np.vstack([means, quiet])
        v, r = np.append(v, v[0]), np.append(r, r[0])
        eff = effective_noise_variance(v, means, measured=measured_noise_variance(means))
        assert not duplicate_units(means, eff, r)[:6].any(), seed
        assert duplicate_units(means, v, r)[:6].any()  # with the prescribed noise they would have been
