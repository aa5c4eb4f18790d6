"""Adaptive clipping inside the federation (Andrew, Thakkar, McMahan & Ramaswamy, NeurIPS'21): the clipped-indicator
bit travels inside the secure-aggregation vector, the server learns only group counts, C follows the target quantile
of the honest clients' norms, lying Byzantine indicators move it only within the bound the docs state, and the
accounting (coordinator, client ledger, client policy) charges the indicator coordinate."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from coordinator_adversary import MaliciousCoordinator, outcome

from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from flcore.modelspec import mlp
from flcore.session import ClientSession
from flcore.wire import decode
from flcrypto import default_crypto
from privacy.backends import numpy_backend, pure_backend
from privacy.client_pipeline import DistributedDPConfig, decode_sum, prepare_update, unclipped_count
from privacy.dp.server import adaptive_effective_multiplier
from privacy.randomness import RandomStream
from simulations import Simulation, SimulationConfig
from simulations.direct import DirectDriver

SPEC = mlp([4, 3, 2])  # 23 parameters


def _dp(**kw: Any) -> DistributedDPConfig:
    base = {"l2_clip": 1.0, "noise_multiplier": 0.0, "bits": 16, "modulus_bits": 32, "min_contributors": 1,
            "dimension": 6, "clip_indicator": 0.5}
    return DistributedDPConfig(**{**base, **kw})


def test_the_indicator_is_one_more_coordinate_and_group_sums_count_the_unclipped_members() -> None:
    cfg, be = _dp(), numpy_backend()
    rng = np.random.default_rng(0)
    norms = [0.3, 0.9, 1.5, 4.0, 0.99]  # three under C = 1, two over
    acc = be.zeros_field(cfg.length, cfg.modulus_bits)
    for i, n in enumerate(norms):
        v = rng.normal(size=6)
        vec, norm = prepare_update(v / np.linalg.norm(v) * n, cfg, RandomStream(bytes([i]) * 32), be)
        assert len(vec) == cfg.length == 7 and math.isclose(norm, n)
        acc = be.iadd_mod(acc, vec, cfg.modulus_bits)
    total = np.asarray(decode_sum(acc, cfg, be))
    assert total.shape == (7,)
    # stochastic rounding moves the indicator sum by < 5 grid steps: the count is exact to ~1e-4
    assert abs(unclipped_count(total[-1], cfg, len(norms)) - 3.0) < 1e-3
    # without the indicator the vector is the model's dimension, and the count is not available
    plain = _dp(clip_indicator=0.0)
    assert plain.length == 6
    with pytest.raises(ValueError, match="no clipped indicator"):
        unclipped_count(0.0, plain, 3)


def test_pure_and_numpy_backends_agree_bit_for_bit_with_the_indicator() -> None:
    cfg = _dp(noise_multiplier=1.0, min_contributors=3)
    delta = [0.4, -2.0, 0.1, 0.0, 3.0, -0.5]
    a, _ = prepare_update(delta, cfg, RandomStream(b"s" * 32), numpy_backend())
    b, _ = prepare_update(delta, cfg, RandomStream(b"s" * 32), pure_backend())
    assert [int(x) for x in a] == [int(x) for x in b] and len(b) == 7


def test_a_lying_indicator_is_confined_to_the_grid_and_clamped_per_group() -> None:
    cfg, be = _dp(), numpy_backend()
    vec, _ = prepare_update([0.0] * 6, cfg, RandomStream(b"x" * 32), be, indicator_value=-1e9)
    # the quantizer holds every coordinate within ±C: the lie is at most −C = −2κ (b = ½ − C/κ = −1.5)
    lie = float(np.asarray(decode_sum(vec, cfg, be))[-1])
    assert lie == pytest.approx(-cfg.l2_clip)
    assert unclipped_count(lie, cfg, 1) == 0.0  # clamped to [0, n]
    # one liar among four honest "unclipped" members: the group counts 2.5, not 4 (the lie is worth b = −1.5)
    assert unclipped_count(lie + 4 * 0.25, cfg, 5) == pytest.approx(2.5)
    assert unclipped_count(10.0, cfg, 5) == 5.0
    with pytest.raises(ValueError, match="clip_indicator"):
        _dp(clip_indicator=2.5)  # κ > 2C would not fit the grid


def test_one_gaussian_mechanism_covers_update_and_indicator_as_andrew_et_al_account_it() -> None:
    """The noise shares are calibrated to the whole contribution √(C² + κ²/4), so ε is that of z (unchanged), the
    update's noise z_Δ = z·√(1 + (κ/C)²/4) and the count's σ_b (members, over ½-sensitivity) combine to exactly z
    in Andrew et al.'s effective multiplier, as the independent implementation in privacy.dp.server computes it."""
    for z, c, r in [(1.0, 1.0, 0.5), (5.0, 0.3, 1.0), (0.7, 10.0, 2.0)]:
        cfg = _dp(noise_multiplier=z, l2_clip=c, clip_indicator=r * c, min_contributors=4, dimension=1000)
        plain = _dp(noise_multiplier=z, l2_clip=c, clip_indicator=0.0, min_contributors=4, dimension=1000)
        assert cfg.update_noise_multiplier() == pytest.approx(z * math.sqrt(1 + r * r / 4))
        # σ_b of a released sum of t shares, up to the quantization term √(d+1) in the sensitivity
        sigma_b = cfg.count_noise()
        grid = cfg.sensitivity() / (cfg.contribution_bound() * cfg.fixed_point().scale())
        assert sigma_b == pytest.approx(z * math.sqrt(1 / r**2 + 0.25) * grid)
        assert adaptive_effective_multiplier(cfg.update_noise_multiplier() * grid, sigma_b) == pytest.approx(z * grid)
        # the accountant's z is the same with and without the indicator (to the quantization term)
        assert cfg.effective_noise_multiplier() == pytest.approx(plain.effective_noise_multiplier(), rel=1e-3)
        assert cfg.sigma_client() > plain.sigma_client()


def test_a_task_with_the_indicator_is_checked_like_any_other() -> None:
    """The client's policy applies to the whole contribution: z below its minimum is refused with or without the
    indicator, κ beyond the grid is a range error, and an honest adaptive task is accepted."""
    def task_for(**dp: Any) -> tuple[str, list[str]]:
        coord = MaliciousCoordinator()
        victim = ClientSession(default_crypto().random_bytes(32), coord.key)
        sel = coord.selection(victim, coord.connect(victim), 4, group_size=5)
        env, _ = decode(coord.select(victim, sel)[0].data, lambda e: victim.public_key)
        task = coord.honest_task(victim, sel, bytes.fromhex(env.body["secret"]))
        task["dp"].update({k: (v * task["dp"]["l2_clip"] if k == "clip_indicator" else v) for k, v in dp.items()})
        return outcome(coord.task(victim, 1, task), victim)

    assert task_for(clip_indicator=0.5)[0] == "train"
    assert task_for(clip_indicator=0.5, noise_multiplier=0.1) == ("policy_noise", ["decline"])
    assert task_for(clip_indicator=3.0) == ("policy_range", ["decline"])


def _updates_with_norms(median: float, seed: int = 0) -> Any:
    """Honest updates in random directions whose norms are log-normal with the given median."""
    rng = np.random.default_rng(seed)
    d = SPEC.num_parameters()

    def updates(r: int, params: np.ndarray, clients: list[int]) -> np.ndarray:
        v = rng.normal(size=(len(clients), d))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return (v * median * np.exp(0.5 * rng.normal(size=(len(clients), 1)))).astype(np.float32)
    return updates


def _federation(**kw: Any) -> FederationConfig:
    base = {"model": SPEC, "rounds": 60, "clients_per_round": 20, "group_size": 1, "aggregator": "mean",
            "l2_clip": 10.0, "adaptive_clip_quantile": 0.5, "adaptive_clip_lr": 0.2, "ban_threshold": 0.0}
    return FederationConfig(**{**base, **kw})


@pytest.mark.parametrize("group_size", [1, 5])
def test_the_clip_follows_the_target_quantile_of_honest_norms_through_the_engine(group_size: int) -> None:
    """From C = 10 (≈ 20× the honest median norm 0.5) the engine's clip reaches the median within a factor
    1.3 in 60 rounds; the released per-round fraction of unclipped updates hovers around γ = ½."""
    cfg = _federation(group_size=group_size)
    drv = DirectDriver(cfg, 40, _updates_with_norms(0.5), seed=1)
    hist = drv.run()
    assert len(hist) == 60 and hist[0]["clip"] == 10.0
    # stochastic rounding of ±κ/2 (rotated: and of the coordinates sharing its Hadamard block, spread back on it)
    assert hist[0]["unclipped_fraction"] == pytest.approx(1.0, abs=1e-2)
    last = [h["clip"] for h in hist[-20:]]
    assert 0.5 / 1.3 < float(np.median(last)) < 0.5 * 1.3, last
    assert 0.3 < float(np.mean([h["unclipped_fraction"] for h in hist[-20:]])) < 0.7
    assert drv.engine.state()["clip"] == drv.engine.clip != 10.0


@pytest.mark.parametrize("group_size, byzantine, f, rule, m", [(1, 12, 0, "mean", 20), (1, 12, 8, "median", 20),
                                                             (5, 4, 3, "median", 40)])
def test_lying_byzantine_indicators_move_the_clip_only_to_the_bound(group_size: int, byzantine: int, f: int,
                                                                    rule: str, m: int) -> None:
    """Byzantine clients always claim "clipped" (the most negative value their grid holds). Per group the count is
    clamped to [0, n] and b̃ is the trimmed mean of the group fractions (f groups cut from each end), so C settles
    at most at the honest γ/(1 − β) quantile (0.714 for γ = ½, β = 0.3: here 0.5·exp(0.5·Φ⁻¹(0.714)) ≈ 0.66),
    never back at the loose initial C = 10; with groups of 5 and f = 3 the 4 liars' groups are trimmed."""
    cfg = _federation(rounds=200, group_size=group_size, byzantine=f, aggregator=rule, clients_per_round=m)
    pop = 40 if group_size == 1 else 60
    drv = DirectDriver(cfg, pop, _updates_with_norms(0.5, seed=2), seed=2, byzantine=set(range(byzantine)))
    hist = drv.run()
    settled = float(np.median([h["clip"] for h in hist[-50:]]))
    q = 0.5 * math.exp(0.5 * 0.565)  # the honest 0.714-quantile of the log-normal norms
    assert 0.5 / 1.35 < settled < q * 1.35, settled
    assert max(h["clip"] for h in hist) <= 10.0  # l2_clip is the ceiling


def test_the_clip_persists_across_a_restart_and_the_model_file_carries_it() -> None:
    cfg = _federation(rounds=5)
    drv = DirectDriver(cfg, 30, _updates_with_norms(0.5), seed=3)
    drv.run()
    state = drv.engine.state()
    assert state["clip"] < 10.0
    restarted = Engine(cfg, b"k" * 32, state=state)
    assert restarted.clip == state["clip"]
    from mle import loads

    assert loads(restarted.model_bytes).metadata["task"]["l2_clip"] == state["clip"]
    assert restarted.privacy_status()["l2_clip"] == state["clip"]
    # a round's task carries that clip and κ = weight·clip
    dp = cfg.dp_config(4, restarted.clip)
    assert dp.l2_clip == restarted.clip and dp.clip_indicator == pytest.approx(0.5 * restarted.clip)


def test_the_indicator_leaves_the_engines_epsilon_as_it_was() -> None:
    adaptive = _federation(noise_multiplier=1.0, epsilon=1e9, delta=1e-6, quantization_bits=14, group_size=5)
    fixed = _federation(noise_multiplier=1.0, epsilon=1e9, delta=1e-6, quantization_bits=14, group_size=5,
                        adaptive_clip_quantile=0.0)
    eps = []
    for cfg in (adaptive, fixed):
        drv = DirectDriver(cfg.__class__(**{**cfg.__dict__, "rounds": 3}), 20, _updates_with_norms(0.5), seed=4)
        drv.run()
        eps.append(drv.engine.epsilon())
    # the noise covers the indicator: the same ε with and without it (to the quantization term)
    assert eps[0] == pytest.approx(eps[1], rel=1e-3) and eps[0] > 0


def test_direct_and_engine_modes_stay_bit_identical_with_adaptive_clipping_and_lying_attackers() -> None:
    cfg = {"name": "adaptive", "rounds": 3, "seed": 4, "plots": False,
           "data": {"num_clients": 10, "partition": "dirichlet", "alpha": 0.5},
           "model": {"hidden": [16]},
           "federation": {"clients_per_round": 10, "group_size": 2, "byzantine": 1, "l2_clip": 5.0,
                          "aggregator": "median", "noise_multiplier": 0.5, "epsilon": 1e9,
                          "adaptive_clip_quantile": 0.2,  # well below the honest fraction: C drops at once
                          # above the grouping planner's bound on purpose: this compares the two modes
                          "accept_grouping_risk": True},
           "attack": {"name": "sign_flip(scale=3)", "num_byzantine": 2, "respect_clip": True}}
    runs = [Simulation(SimulationConfig.from_dict({**cfg, "mode": mode})).run() for mode in ("engine", "direct")]
    for a, b in zip(runs[0].history, runs[1].history, strict=True):
        for k in ("accuracy", "loss", "epsilon", "clip", "unclipped_fraction", "groups_ok", "corrupted_groups"):
            assert a[k] == b[k], (k, a, b)
    assert runs[0].history[0]["clip"] == 5.0 != runs[0].history[-1]["clip"]  # the clip moved, identically


def test_an_arbitrary_field_element_in_the_indicator_slot_is_clamped_through_the_real_engine(monkeypatch) -> None:
    """Under secure aggregation a Byzantine member is not bound by the quantizer: it can put any field element in
    the indicator slot. Hand-written adversary: the harness's Byzantine session, driven through the real engine and
    SecAgg+, replaces its last element by −2³⁰ (a group count of about −2³⁰/κ·scale: "everyone clipped", as loudly
    as the field allows). The per-group clamp and the trimmed mean keep C near the honest median anyway."""
    import simulations.engine_driver as ed
    from simulations.engine_driver import EngineDriver

    class FieldLiar(ed.ByzantineSession):
        def _prepare(self, delta: Any, dp: Any) -> Any:
            vec = super()._prepare(delta, dp)
            vec[-1] = (-(1 << 30)) % (1 << dp.modulus_bits)
            return vec

    monkeypatch.setattr(ed, "ByzantineSession", FieldLiar)
    cfg = _federation(rounds=80, group_size=5, byzantine=1, aggregator="median", clients_per_round=20)
    drv = EngineDriver(cfg, 30, _updates_with_norms(0.5, seed=5), seed=5, byzantine={0, 1})
    assert sum(isinstance(s, FieldLiar) for s in drv.sessions.values()) == 2
    hist = drv.run()
    assert len(hist) == 80
    settled = float(np.median([h["clip"] for h in hist[-20:]]))
    assert 0.5 / 1.35 < settled < 0.5 * math.exp(0.5 * 0.565) * 1.35, settled
