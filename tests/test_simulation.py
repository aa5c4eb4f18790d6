"""Simulation harness: attacks match their definitions, batched training equals the native client's, the
direct mode is bit-identical to driving the real engine, determinism, CLI end to end, config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from flcore.modelspec import mlp
from simulations.attacks import AttackContext, add_trigger, alie_z, make_attack
from simulations.config import ConfigError, SimulationConfig
from simulations.runner import Simulation, run_simulation
from simulations.training import _train_loop, train_clients

ROOT = Path(__file__).resolve().parent.parent


def ctx(honest: np.ndarray, own: np.ndarray, seed: int = 0) -> AttackContext:
    return AttackContext(1, honest, own, len(honest) + len(own), len(own), list(range(len(honest))),
                         np.random.default_rng(seed))


@pytest.fixture
def updates() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    honest = rng.normal(1.0, 0.5, (8, 6)).astype(np.float32)
    own = rng.normal(1.0, 0.5, (2, 6)).astype(np.float32)
    return honest, own


# ── attacks ─────────────────────────────────────────────────────────────────────────────────────────────
def test_sign_flip_ipm_gaussian_free_ride(updates) -> None:
    honest, own = updates
    np.testing.assert_allclose(make_attack("sign_flip").craft(ctx(honest, own)), -own)
    np.testing.assert_allclose(make_attack("sign_flip(scale=4)").craft(ctx(honest, own)), -4 * own, rtol=1e-6)
    ipm = make_attack("ipm(eps=0.5)").craft(ctx(honest, own))
    np.testing.assert_allclose(ipm, np.tile(-0.5 * honest.astype(np.float64).mean(0), (2, 1)), rtol=1e-6)
    assert ipm @ honest.mean(0) @ np.ones(2) < 0  # negative inner product with the true mean
    g = make_attack("gaussian(sigma=3)").craft(ctx(np.zeros((0, 5000)), np.zeros((2, 5000))))
    assert g.shape == (2, 5000) and abs(g.std() - 3) < 0.1
    assert not make_attack("free_ride").craft(ctx(honest, own)).any()


def test_alie_z_and_vector(updates) -> None:
    honest, own = updates
    # Baruch et al.: n = 25, f = 5 → s = ⌊25/2 + 1⌋ − 5 = 8, z = Φ⁻¹(17/25)
    assert alie_z(25, 5) == pytest.approx(norm.ppf(17 / 25))
    out = make_attack("alie").craft(ctx(honest, own))
    h = honest.astype(np.float64)
    expect = h.mean(0) - alie_z(10, 2) * h.std(0)
    np.testing.assert_allclose(out, np.tile(expect, (2, 1)), rtol=1e-6)
    np.testing.assert_allclose(make_attack("alie(z=1.5)").craft(ctx(honest, own))[0], h.mean(0) - 1.5 * h.std(0),
                               rtol=1e-6)


@pytest.mark.parametrize("name", ["minmax", "minsum", "minmax(perturbation=sign)", "minmax(perturbation=unit)"])
def test_min_max_min_sum_are_the_largest_gamma_within_the_bound(updates, name: str) -> None:
    honest, own = updates
    h = honest.astype(np.float64)
    out = make_attack(name).craft(ctx(honest, own))[0].astype(np.float64)
    d_h = ((h[:, None] - h[None]) ** 2).sum(-1)
    d_m = ((h - out) ** 2).sum(-1)
    kind = "sign" if "sign" in name else "unit" if "unit" in name else "std"
    mu = h.mean(0)
    p = {"std": -h.std(0), "sign": -np.sign(mu), "unit": -mu / np.linalg.norm(mu)}[kind]
    gamma = float(np.dot(out - mu, p) / np.dot(p, p))
    np.testing.assert_allclose(out, mu + gamma * p, rtol=1e-5, atol=1e-6)  # on the perturbation ray
    assert gamma > 0
    if name.startswith("minsum"):
        bound, val, val_more = d_h.sum(1).max(), d_m.sum(), ((h - (mu + 1.01 * gamma * p)) ** 2).sum()
    else:
        bound, val, val_more = d_h.max(), d_m.max(), ((h - (mu + 1.01 * gamma * p)) ** 2).sum(-1).max()
    assert val <= bound * (1 + 1e-9)
    assert val_more > bound  # 1 % more γ breaks the constraint: γ is (nearly) the largest


def test_mimic_copies_the_most_deviating_honest_client_and_keeps_it() -> None:
    rng = np.random.default_rng(1)
    honest = rng.normal(0, 0.01, (6, 4)).astype(np.float32)
    honest[3] += np.array([5, 0, 0, 0], np.float32)  # the top principal direction is client 3's
    a = make_attack("mimic")
    out = a.craft(ctx(honest, np.zeros((3, 4), np.float32)))
    np.testing.assert_array_equal(out, np.tile(honest[3], (3, 1)))
    honest2 = honest.copy()
    honest2[3] = 0.0
    honest2[0] += 9.0
    np.testing.assert_array_equal(a.craft(ctx(honest2, np.zeros((3, 4), np.float32))), np.tile(honest2[3], (3, 1)))


def test_data_poisoning_attacks() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((10, 64)).astype(np.float32)
    y = np.arange(10)
    _, y2 = make_attack("label_flip").poison(x, y, 10, (8, 8), rng)
    np.testing.assert_array_equal(y2, 9 - y)
    xb, yb = make_attack("backdoor(target=7, fraction=0.5)").poison(x, y, 10, (8, 8), rng)
    assert len(xb) == 15 and (yb[10:] == 7).all()
    img = xb[10:].reshape(-1, 8, 8)
    assert (img[:, 6:, 6:] == 1).all()
    np.testing.assert_array_equal(xb[:10], x)  # clean examples kept
    t = add_trigger(np.zeros((1, 64)), (8, 8)).reshape(8, 8)
    assert t.sum() == 4 and t[7, 7] == 1
    own = rng.random((2, 5)).astype(np.float32)
    np.testing.assert_allclose(make_attack("model_replacement").craft(ctx(np.zeros((8, 5)), own)), 5 * own,
                               rtol=1e-6)  # γ = n / f = 10 / 2
    syb = make_attack("sybil").craft(ctx(np.zeros((8, 5)), own))
    np.testing.assert_allclose(syb, np.tile(own.mean(0), (2, 1)), rtol=1e-6)


def test_attack_spec_errors() -> None:
    with pytest.raises(ValueError, match="unknown attack 'nope'"):
        make_attack("nope")
    with pytest.raises(ValueError, match="takes no argument"):
        make_attack("ipm(epsilon=3)")
    with pytest.raises(ValueError, match="key=value"):
        make_attack("ipm(3)")


# ── training ────────────────────────────────────────────────────────────────────────────────────────────
def test_batched_training_equals_native_client_training() -> None:
    spec = mlp([64, 16, 10])
    rng = np.random.default_rng(0)
    p = np.concatenate([np.asarray(v, np.float32) for v in spec.init_parameters(3).values()])
    xs = [rng.random((n, 64)).astype(np.float32) for n in (1, 7, 33, 64)]
    ys = [rng.integers(0, 10, len(x)) for x in xs]
    a, la = train_clients(spec, p, xs, ys, epochs=2, batch_size=16, lr=0.2, seeds=[5, 6, 7, 8])
    b, lb = _train_loop(spec, p, xs, ys, epochs=2, batch_size=16, lr=0.2, seeds=[5, 6, 7, 8])
    np.testing.assert_allclose(a, b, atol=2e-6)
    np.testing.assert_allclose(la, lb, rtol=1e-5)


# ── the federation ──────────────────────────────────────────────────────────────────────────────────────
def small(**over) -> dict:
    cfg = {"name": "small", "rounds": 3, "seed": 4, "plots": False,
           "data": {"num_clients": 10, "partition": "dirichlet", "alpha": 0.5},
           "model": {"hidden": [16]},
           "federation": {"clients_per_round": 10, "group_size": 2, "byzantine": 1, "l2_clip": 1.0,
                          "aggregator": "clip(median)|bucket(2)|cc(tau=1)|momentum(beta=0.9)",
                          "noise_multiplier": 0.5, "epsilon": 1e9,
                          # above the grouping planner's bound on purpose (2 of 10 Byzantine in 5 groups of 2, f
                          # told 1: risk ≈ 0.8): these tests compare modes and outputs, not the planner's verdict
                          "accept_grouping_risk": True},
           "attack": {"name": "gaussian(sigma=0.3)", "num_byzantine": 2}}
    for k, v in over.items():
        sec, _, key = k.rpartition(".")
        (cfg.setdefault(sec, {}) if sec else cfg)[key] = v
    return cfg


@pytest.mark.parametrize("attack", ["gaussian(sigma=0.3)", "absent"])
def test_direct_mode_is_bit_identical_to_driving_the_engine(attack: str) -> None:
    """The direct mode equals the real engine + sessions + SecAgg+ path exactly: selection, groups, clipping/
    quantization/DP noise (attackers ignoring the clip), group sums, dropouts, CC+bucketing+momentum, trust, ε.
    The dropout case also runs the compact uplink: the random rotation and the per-group modulus (packed)."""
    over: dict = {"attack.name": attack}
    if attack == "absent":  # dropouts fail groups of 2: leave enough groups for the rule
        over.update({"federation.aggregator": "median", "federation.rotation": True, "federation.modulus_bits": 0,
                     "federation.quantization_bits": 10})
    e = Simulation(SimulationConfig.from_dict(small(mode="engine", **over)))
    d = Simulation(SimulationConfig.from_dict(small(mode="direct", **over)))
    re, rd = e.run(), d.run()
    assert len(re.history) == 3
    for a, b in zip(re.history, rd.history, strict=True):
        for k in ("accuracy", "loss", "epsilon", "groups", "groups_ok", "survivors", "corrupted_groups"):
            assert a[k] == b[k], (k, a, b)
    assert re.history[-1]["epsilon"] > 0 and re.stopped_reason == rd.stopped_reason == "all 3 rounds done"
    if attack == "absent":  # the dropped clients' partners see their SecAgg+ group fail (threshold 2)
        assert re.extra["failures"] and all("threshold" in msg for _, _, msg in re.extra["failures"])
    else:
        assert not re.extra["failures"]


def test_group_size_one_and_the_aggregate_equals_the_mean_of_quantized_updates() -> None:
    """groups of 1 (no secure aggregation) end to end through the engine; with FedAvg the first step is the
    mean of the clients' (clipped, quantized) updates."""
    cfg = small(mode="engine", rounds=1, **{"federation.group_size": 1, "federation.aggregator": "mean",
                                            "federation.server_lr": 1.0,  # a step of exactly the aggregate
                                            "federation.noise_multiplier": 0.0, "federation.l2_clip": 100.0,
                                            "attack.name": "none", "attack.num_byzantine": 0})
    sim = Simulation(SimulationConfig.from_dict(cfg))
    seen = {}
    orig = sim.updates

    def spy(rnd, params, idxs):
        out = orig(rnd, params, idxs)
        seen["params"], seen["deltas"] = params.copy(), out.copy()
        return out

    sim.updates = spy
    from simulations.engine_driver import EngineDriver

    drv = EngineDriver(sim.fed, 10, sim.updates, seed=4, evaluator=sim.evaluate)
    drv.run()
    assert drv.engine.history[-1]["groups"] == 10
    step = drv.engine.params - seen["params"]
    scale = sim.fed.dp_config().fixed_point().scale()
    np.testing.assert_allclose(step, seen["deltas"].mean(0), atol=1.0 / scale)


def test_seed_fixes_everything_and_other_seeds_differ() -> None:
    a = run_simulation(small(mode="engine", rounds=2))
    b = run_simulation(small(mode="engine", rounds=2))
    c = run_simulation(small(mode="engine", rounds=2, seed=5))
    assert [h["accuracy"] for h in a.history] == [h["accuracy"] for h in b.history]
    assert a.byzantine == b.byzantine
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


def test_fedavg_collapses_under_sign_flip_while_cc_holds() -> None:
    base = {"rounds": 12, "seed": 0, "mode": "direct", "plots": False,
            "data": {"num_clients": 20, "partition": "iid"},
            "federation": {"clients_per_round": 20, "group_size": 1, "byzantine": 4, "bans": False, "lr": 0.3,
                           "local_epochs": 2,
                           # the loose fixed clip C = 10 (adaptive clipping off) the attackers sit at
                           "adaptive_clip_quantile": 0.0,
                           # FedAvg tolerates no attacker (risk 1): above the planner's bound on purpose, the
                           # collapse it prevents is what this test shows
                           "accept_grouping_risk": True},
            "attack": {"name": "sign_flip(scale=10)", "num_byzantine": 4, "respect_clip": True}}
    fedavg = run_simulation({**base, "federation": {**base["federation"], "aggregator": "mean"}})
    cc = run_simulation({**base, "federation": {
        **base["federation"], "aggregator": "clip(median)|bucket(2)|cc(tau=0.3, iters=3)|momentum(beta=0.9)"}})
    assert fedavg.final_accuracy < 0.3 and cc.final_accuracy > 0.6, (fedavg.final_accuracy, cc.final_accuracy)
    # attackers that ignore the clip are excluded by the engine's honest-norm bound on group means (in a 32-bit
    # field, where the harness's attackers can widen their encoding: simulations.engine_driver.unclipped_dp)
    unclipped = run_simulation({**base, "rounds": 3, "federation": {**base["federation"], "aggregator": "mean",
                                                                    "modulus_bits": 32},
                                "attack": {**base["attack"], "respect_clip": False}})
    over = [h["groups_over_bound"] for h in unclipped.history]
    assert max(over) <= 4 and sum(over) >= 1, over  # only attackers (−10 × their update once > C) are excluded


def test_backdoor_reports_attack_success_rate(tmp_path: Path) -> None:
    r = run_simulation(small(mode="direct", rounds=2, **{"attack.name": "backdoor(target=0)",
                                                         "federation.aggregator": "mean",
                                                         "federation.noise_multiplier": 0.0}), tmp_path)
    assert 0.0 <= r.history[-1]["attack_success_rate"] <= 1.0
    assert "attack_success_rate" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


# ── CLI and configs ─────────────────────────────────────────────────────────────────────────────────────
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coordinator.service.cli", "simulate", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


TINY = """
name = "tiny"
seed = 2
rounds = 2
[data]
num_clients = 8
partition = "iid"
[model]
hidden = [8]
[federation]
clients_per_round = 6
group_size = 2
aggregator = "median"
byzantine = 1
[attack]
name = "ipm(eps=0.5)"
num_byzantine = 1
"""


def test_cli_runs_a_tiny_config_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    p = _cli("tiny.toml", "--out", "out", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "final accuracy" in p.stdout
    out = tmp_path / "out"
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and "accuracy" in rows[0]
    data = json.loads((out / "metrics.json").read_text())
    assert len(data["rounds"]) == 2 and data["byzantine"]
    assert (out / "accuracy.png").stat().st_size > 1000
    # the saved config reproduces the run
    p2 = _cli(str(out / "config.toml"), "--out", "again", "--quiet", cwd=tmp_path)
    assert p2.returncode == 0, p2.stderr
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert [r["accuracy"] for r in again["rounds"]] == [r["accuracy"] for r in data["rounds"]]


def test_cli_grid_writes_table_and_heatmaps(tmp_path: Path) -> None:
    (tmp_path / "g.toml").write_text(TINY.replace('rounds = 2', 'rounds = 1') + """
[grid]
attacks = ["none", {label = "sign flip", spec = "sign_flip(scale=5)"}]
defences = [{label = "FedAvg", spec = "mean"}, "krum"]
group_sizes = [1, 2]
""")
    p = _cli("grid", "g.toml", "--out", "grid", "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    table = (tmp_path / "grid" / "table.md").read_text()
    assert "| sign flip |" in table and "FedAvg" in table and "groups of 2" in table
    assert (tmp_path / "grid" / "heatmap_s1.png").exists() and (tmp_path / "grid" / "heatmap_s2.png").exists()
    summary = json.loads((tmp_path / "grid" / "grid.json").read_text())
    # Krum over 3 groups of 2 cannot tolerate f=1 (needs n >= 2f+3): the grid lowers f and marks the cell
    assert summary["table"]["2"]["sign flip"]["krum"]["f_told"] == 0
    assert "†" in table


@pytest.mark.parametrize(("patch", "message"), [
    ({"federation": {"clients_per_round": 50}}, "clients_per_round must be in 1..num_clients=8"),
    ({"federation": {"aggregator": "krum", "byzantine": 3}}, "krum needs n >= 2f+3"),
    ({"attack": {"name": "teleport"}}, "unknown attack 'teleport'"),
    ({"federation": {"lr": "fast"}}, "lr must be float"),
    ({"data": {"dataset": "mnist"}}, "dataset must be one of"),
    ({"federation": {"agregator": "mean"}}, "unknown key(s) ['agregator'] at [federation]"),
    ({"attack": {"name": "ipm", "num_byzantine": 0}}, "needs num_byzantine >= 1"),
])
def test_bad_configs_give_clear_errors(patch: dict, message: str) -> None:
    import tomllib

    data = tomllib.loads(TINY)
    for sec, vals in patch.items():
        data[sec] = {**data.get(sec, {}), **vals}
    with pytest.raises(ConfigError) as exc:
        SimulationConfig.from_dict(data)
    assert message in str(exc.value)


def test_cli_reports_config_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(TINY.replace('name = "ipm(eps=0.5)"', 'name = "ipm(eps=0.5"'))
    p = _cli("bad.toml", cwd=tmp_path)
    assert p.returncode == 2 and "config error" in p.stderr and "cannot parse attack" in p.stderr
    p = _cli("missing.toml", cwd=tmp_path)
    assert p.returncode == 2 and "not found" in p.stderr


def test_synthetic_dataset_and_shipped_configs_validate() -> None:
    r = run_simulation({"name": "syn", "rounds": 1, "seed": 0, "mode": "direct", "plots": False,
                        "data": {"dataset": "synthetic", "num_clients": 6, "synthetic_samples": [20, 40]},
                        "federation": {"clients_per_round": 6, "aggregator": "trmean", "byzantine": 1},
                        "attack": {"name": "minsum", "num_byzantine": 1}})
    assert len(r.history) == 1 and 0 <= r.final_accuracy <= 1
    from simulations.config import load_config
    from simulations.grid import load_grid

    load_config(ROOT / "simulations" / "configs" / "example.toml")
    assert len(load_grid(ROOT / "simulations" / "configs" / "digits_grid.toml").runs()) == 150
