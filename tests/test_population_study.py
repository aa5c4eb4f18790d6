"""The population-scale study (simulations/population_study.py) and what it needs: the config builder, a tiny run
whose every client stays within the ε budget (the engine's per-participation accountant), the output files, the
batched client pipeline of the direct mode (bit-identical to prepare_update), resampled digits and Synthetic-IID."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simulations import population_study as ps
from simulations.config import SimulationConfig


def test_config_builder_uses_the_product_defaults_and_a_valid_delta() -> None:
    from coordinator.federation.config import DEFAULT_AGGREGATOR

    runs = ps.study_runs()
    private = [r for r in runs if r.private]
    assert private and all(r.reference() in runs for r in private)  # every private run has its z = 0 reference
    assert {r.task for r in runs} == set(ps.TASKS)
    for r in runs:
        cfg = ps.build_config(r)
        fed = cfg["federation"]
        # the defence, adaptive clipping, selection and thresholds are not set: FederationConfig's defaults apply
        assert not {"aggregator", "adaptive_clip_quantile", "selection", "threshold_rule", "byzantine"} & set(fed)
        assert (cfg["data"]["num_clients"], fed["clients_per_round"]) == (ps.POPULATION, ps.PER_ROUND)
        assert fed["delta"] * ps.POPULATION < 1  # δ < 1/N
        assert fed["epsilon"] == (ps.BUDGET if r.private else "inf")
    sim = SimulationConfig.from_dict(ps.build_config(private[0]))
    fc = sim.federation_config(sim.model_spec(64, 10))
    assert fc.aggregator == DEFAULT_AGGREGATOR and fc.adaptive_clip and fc.selection == "trust"
    assert fc.noise_multiplier > 0 and fc.epsilon == ps.BUDGET
    assert sim.data.partition == "resample" or sim.data.synthetic_iid


def test_tiny_study_every_client_within_budget_and_the_outputs(tmp_path) -> None:
    runs = [ps.PopulationRun("digits", 10, 0.0, 200, 40, 2), ps.PopulationRun("digits", 10, 3.0, 200, 40, 2)]
    res = ps.run_study(tmp_path, workers=1, engine_rounds=1, quick=True, runs=runs)
    for name in ("results.json", "table.md", "table.csv", "accuracy_vs_epsilon.png"):
        assert (tmp_path / name).stat().st_size > 0
    private = next(r for r in res["runs"] if r["run"]["noise"] > 0)
    p = private["privacy"]
    # the histogram counts every one of the N clients; the largest ε over all of them is within the budget
    assert sum(p["participations_histogram"]) == 200 and p["clients_participated"] >= 40
    assert 0 < p["epsilon_max"] <= ps.BUDGET and p["delta"] < 1 / 200
    row = next(r for r in res["rows"] if r["z"] > 0)
    assert row["accuracy_nonprivate"] == next(r for r in res["rows"] if r["z"] == 0)["accuracy"]
    # the engine-mode check: identical to the direct mode at full participation
    full = next(e for e in res["engine_check"] if e["full_participation"])
    assert full["identical"] and full["engine"]["curve"] == full["direct"]["curve"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["code_version"] and len(saved["rows"]) == 2
    assert "| 10 (4) | 3 |" in (tmp_path / "table.md").read_text()


def test_the_budget_holds_for_every_client_when_it_binds() -> None:
    """A budget that allows one participation per client: the engine stops selecting clients that reached it, every
    client's ε stays within it, and the federation stops once too few clients are left."""
    from privacy.dp.accounting import ParticipationAccountant
    from simulations import run_simulation
    from simulations.runner import client_privacy

    cfg = ps.build_config(ps.PopulationRun("digits", 10, 3.0, 200, 40, 8))
    cfg["federation"]["epsilon"] = 2.0  # one participation at z = 3 costs ε ≈ 1.39 at δ = 1e-5, two ≈ 2.1
    r = run_simulation(cfg)
    p = r.extra["privacy"]
    assert p["epsilon_max"] <= 2.0 and p["participations_max"] == 1
    assert "budget exhausted" in r.stopped_reason and len(r.history) == 5  # 200 clients, 40 per round
    # client_privacy is every client's own figure
    acc = ParticipationAccountant()
    acc.record(["a", "b"], 3.0)
    acc.record(["a"], 2.0)
    s = client_privacy(acc, ["a", "b", "c"], 1e-5)
    assert s["epsilon_max"] == acc.epsilon_of("a", 1e-5) > s["epsilon_median"] == acc.epsilon_of("b", 1e-5)
    assert s["participations_histogram"] == [1, 1, 1] and s["clients_participated"] == 2


@pytest.mark.parametrize("rotated, tight", [(False, False), (True, True), (True, False), (False, True)])
def test_batched_pipeline_equals_prepare_update_client_by_client(rotated: bool, tight: bool) -> None:
    """Also with the random rotation, and with a rounding bound so tight that about half the honest vectors are
    rounded again (conditional rounding's retries draw the same stream requests in the same order)."""
    import math
    from dataclasses import asdict, replace

    from flcrypto import default_crypto
    from privacy.backends import numpy_backend
    from privacy.client_pipeline import DistributedDPConfig, prepare_update
    from privacy.randomness import RandomStream
    from simulations import batch_pipeline
    from simulations.batch_pipeline import SimulationCrypto, group_sum, prepare_updates
    from simulations.engine_driver import lying_indicator, unclipped_dp

    be = numpy_backend()
    rng = np.random.default_rng(7)
    k, d = 40, 157
    deltas = (rng.standard_normal((k, d)) * rng.uniform(0.01, 0.5, (k, 1))).astype(np.float32)
    honest = DistributedDPConfig(0.6, 2.5, 16, 32, 4, d, 0.3)
    attacker = DistributedDPConfig(**unclipped_dp(asdict(honest)))  # a clip-ignoring Byzantine client's encoding
    dps = [attacker if i % 9 == 0 else DistributedDPConfig(0.6, 2.5 if i % 5 else 0.0, 16, 32, 1 + i % 6, d, 0.3)
           for i in range(k)]
    if rotated:
        dps = [replace(dp, rotation_seed="5a" * 32) for dp in dps]
    n = dps[0].field_length
    lies = [lying_indicator(dp) if i % 9 == 0 else None for i, dp in enumerate(dps)]
    seeds = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)) for _ in range(k)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_pipeline, "CHUNK_ENTRIES", 500)  # several chunks of rows
        if tight:  # √(a² + L/4): the mean squared norm of a rounded vector, so ~half are rounded again
            mp.setattr(DistributedDPConfig, "rounding_bound", lambda self: math.sqrt(
                (self.contribution_bound() * self.fixed_point().scale()) ** 2 + self.field_length / 4))
        q = prepare_updates(deltas, dps, [RandomStream(s, SimulationCrypto()) for s in seeds], lies)
        ref = [prepare_update(deltas[i], dps[i], RandomStream(s), be, indicator_value=lies[i])[0]
               for i, s in enumerate(seeds)]
    assert q.shape == (k, n)
    assert np.array_equal((q & 0xFFFFFFFF).astype(np.uint32), np.stack(ref))
    acc = be.zeros_field(n, 32)
    for v in ref:
        acc = be.iadd_mod(acc, v, 32)
    assert np.array_equal(group_sum(q, 32), acc) and group_sum(q, 32).dtype == acc.dtype
    crypto, default = SimulationCrypto(), default_crypto()
    assert crypto.blake2b(b"m", key=b"k" * 32) == default.blake2b(b"m", key=b"k" * 32)
    assert crypto.prg(b"s" * 32, 100) == default.prg(b"s" * 32, 100)
    with pytest.raises(ValueError, match="NaN or Inf"):
        bad = deltas[:2].copy()
        bad[1, 3] = np.nan
        prepare_updates(bad, dps[:2], [RandomStream(s) for s in seeds[:2]])


def test_resampled_digits_and_synthetic_iid() -> None:
    from federated_data import resample, synthetic
    from simulations.data import build_data

    labels = np.repeat(np.arange(10), 30)
    parts = resample(labels, 500, 20, 1.0, np.random.default_rng(0))
    assert len(parts) == 500 and all(len(p) == 20 for p in parts)
    assert sum(len(p) for p in parts) > len(labels)  # drawn with replacement: more than the data set
    skew = np.mean([np.bincount(labels[p], minlength=10).max() for p in parts])
    iid = np.mean([np.bincount(labels[p], minlength=10).max() for p in resample(labels, 500, 20, None,
                                                                                  np.random.default_rng(0))])
    assert skew > iid  # Dirichlet(1) class proportions: more label skew than uniform draws
    cfg = SimulationConfig.from_dict({"data": {"dataset": "digits", "partition": "resample", "resample_size": 7,
                                               "num_clients": 3000}, "federation": {"clients_per_round": 10}})
    data = build_data(cfg.data, 0)
    assert data.num_clients == 3000 and all(len(y) == 7 for y in data.ys)
    # Synthetic-IID: one labelling function – a linear model fitted on some clients labels the others; the non-IID
    # Synthetic gives every client its own (near chance on other clients)
    from sklearn.linear_model import LogisticRegression

    def transfer(iid: bool) -> float:
        xs, ys = synthetic(0.0, 0.0, 40, samples_per_client=(50, 50), seed=1, iid=iid)
        clf = LogisticRegression(C=1e4, max_iter=3000).fit(np.concatenate(xs[:20]), np.concatenate(ys[:20]))
        return clf.score(np.concatenate(xs[20:]), np.concatenate(ys[20:]))

    assert transfer(True) > 0.8 > 0.4 > transfer(False)
    assert not math.isclose(np.mean([x.mean() for x in synthetic(0, 1.0, 40, samples_per_client=(50, 50), seed=1,
                                                                   iid=True)[0]]), 0.0, abs_tol=1e-3)
