"""The issue-12 result suite (simulations/results_suite.py) and the centralised reference
(simulations/centralised.py): a smoke run end to end, the summary's goal check on a hand-made grid.json, and the
centralised baseline on a tiny dataset (it beats chance and uses only the honest clients' data)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simulations import results_suite as suite
from simulations.centralised import honest_simulation, pooled_honest_data, train_centralised
from simulations.config import ConfigError, SimulationConfig
from simulations.runner import Simulation


def test_quick_tables_run_writes_the_tables_and_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    # median at 50 clients per round: groups of 1 accepted by the planner (20 % and 30 %), groups of 3 refused
    assert suite.main(["tables", "--quick", "--defence", "median", "--out", str(out), "--workers", "1",
                       "--scenarios", "digits_a1", "--clients-per-round", "50"]) == 0
    table = (out / "digits_a1" / "table.md").read_text()
    assert "## 50 clients per round, 20 % Byzantine (20 of 100), f told = 10" in table
    assert "## 50 clients per round, 30 % Byzantine (30 of 100), f told = 15" in table
    assert "| sign flip (×10) |" in table and "¶ (risk" in table  # groups of 3: refused, run anyway, risk shown
    assert (out / "digits_a1" / "m50_byz30.png").exists()
    assert (out / "digits_a1" / "m50_byz20" / "grid.json").exists()
    summary = (out / "summary.md").read_text()
    for frac in ("20 %", "30 %"):
        assert f"| digits_a1 | 50 | {frac} | 1 | accepts (risk" in summary
        assert f"| digits_a1 | 50 | {frac} | 3 | refuses¶ (risk" in summary and "run anyway" in summary
    assert "## Goal check" in summary and "4 accepted configurations" not in summary  # 2 accepted: s = 1
    assert "2 accepted configurations" in summary
    assert "| digits_a1 | m = 50, s = 1, median |" in summary  # 30 %: the best accepted vs centralised
    assert "+dirty" in summary or "Code " in summary


def _entry(acc: float, status: str, risk: float) -> dict[str, Any]:
    return {"accuracy": acc, "runs": [{"seed": 0}],
            "grouping_risk": {"status": status, "failure_probability": risk}}


def test_goal_check_on_a_hand_made_grid() -> None:
    attacks = [{"label": "no attack", "spec": "none"}, {"label": "IPM", "spec": "ipm(eps=10)"},
               {"label": "ALIE", "spec": "alie"}, {"label": "absent", "spec": "absent"}]
    table = {  # groups of 1 accepted: IPM costs 5 points (a violation), ALIE 1; absent (a reference) 20
        "1": {"no attack": {"D": _entry(0.90, "ok", 0.0)}, "IPM": {"D": _entry(0.85, "ok", 0.004)},
              "ALIE": {"D": _entry(0.89, "ok", 0.004)}, "absent": {"D": _entry(0.70, "ok", 0.004)}},
        # groups of 3 refused (run anyway): a collapse, but not a goal violation
        "3": {"no attack": {"D": _entry(0.90, "ok", 0.0)}, "IPM": {"D": _entry(0.10, "above_bound", 0.6)},
              "ALIE": {"D": _entry(0.88, "above_bound", 0.6)}, "absent": {"D": _entry(0.88, "above_bound", 0.6)}},
    }
    grid = {"attacks": attacks, "defences": [{"label": "D", "spec": "median"}], "group_sizes": [1, 3],
            "table": table}
    rows = suite.rows_of_grid(grid, "digits_a1", 50, 0.3)
    assert [(r.s, r.status) for r in rows] == [(1, "ok"), (3, "above_bound")]
    assert math.isclose(rows[0].worst_drop, 5.0) and rows[0].worst_attack == "IPM"
    assert math.isclose(rows[1].worst_drop, 80.0)
    assert [a for a, _ in rows[0].violations()] == ["IPM"]  # absent is a reference, ALIE within 3 points
    goal = suite.goal_section(rows)
    assert "1 accepted configurations" in goal and "fails in 1" in goal
    assert "| digits_a1 | 50 | 30 % | 1 | D | IPM | 90.0 | 85.0 | 5.0 |" in goal
    assert "| 3 |" not in goal  # the refused configuration is not judged by the goal
    verdicts = suite.verdict_table(rows, with_defence=False)
    assert "accepts (risk 0.0040)" in verdicts and "refuses¶ (risk 0.6000), run anyway" in verdicts
    central = suite.centralised_section(rows, {"digits_a1": {"accuracy": 0.95}})
    assert "| digits_a1 | m = 50, s = 1, D | 85.0 (IPM) | 87.0 | 95.0 | 0.89 |" in central
    assert "no** attacked configuration" in suite.goal_section(rows[1:])  # nothing accepted: vacuous, said so


def tiny() -> SimulationConfig:
    return SimulationConfig.from_dict({"seed": 4, "data": {"dataset": "digits", "partition": "iid",
                                                           "num_clients": 10},
                                       "federation": {"batch_size": 32, "lr": 0.3}, "model": {"hidden": [16]}})


def test_centralised_baseline_beats_chance_on_honest_data_only() -> None:
    cfg = tiny()
    r = train_centralised(cfg, num_byzantine=3, epochs=5)
    assert r.accuracy > 0.5 and len(r.history) == 5  # chance: 0.1
    # the Byzantine clients are the ones a federated run of the same seed draws
    federated = Simulation(cfg.replace(**{"attack.name": "alie", "attack.num_byzantine": 3,
                                          "federation.accept_grouping_risk": True}))
    assert r.byzantine == federated.byzantine and len(r.byzantine) == 3
    assert sorted(r.honest_clients + r.byzantine) == list(range(10))
    sim = honest_simulation(cfg, 3)
    x, y, honest = pooled_honest_data(sim)
    assert r.examples == len(y) == sum(len(sim.data.ys[i]) for i in honest)
    rows = {row.tobytes() for row in x}
    for i in r.byzantine:  # none of the Byzantine clients' examples is in the training set
        assert not any(row.astype(np.float32).tobytes() in rows for row in sim.data.xs[i])


def test_grid_runs_refused_cells_with_the_refused_seeds_only(tmp_path: Path) -> None:
    from simulations.grid import GridSpec, prepare_grid

    data = {"name": "rs", "rounds": 1, "mode": "direct", "plots": False,
            "data": {"num_clients": 8, "partition": "iid"}, "model": {"hidden": [8]},
            "federation": {"clients_per_round": 6, "group_size": 1, "aggregator": "mean", "byzantine": 1},
            "attack": {"name": "none", "num_byzantine": 1},
            # FedAvg under attack is refused (risk 0.75), run anyway with seed 0 only; no attack runs every seed
            "grid": {"attacks": ["none", "ipm(eps=0.5)"], "defences": ["mean"], "seeds": [0, 1],
                     "run_refused": True, "refused_seeds": [0]}}
    grid = prepare_grid(GridSpec.from_dict(data), tmp_path, verbose=False)
    cells = [(a.spec, seed) for _, a, _, seed in grid.cells]
    assert cells == [("none", 0), ("none", 1), ("ipm(eps=0.5)", 0)] and len(grid.todo()) == 3
    assert grid.plans[2]["status"] == "above_bound"
    with pytest.raises(ConfigError, match="refused_seeds"):
        GridSpec.from_dict({**data, "grid": {**data["grid"], "refused_seeds": [5]}})


def test_set_overrides_reach_every_grid_and_refuse_the_suites_own_keys() -> None:
    from simulations.results_suite import _parse_set, grid_spec, stage_settings

    assert _parse_set("federation.server_lr=2") == ("federation.server_lr", 2)
    assert _parse_set('federation.aggregator="median"') == ("federation.aggregator", "median")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _parse_set("federation.server_lr")
    with pytest.raises(ValueError, match="sets this key itself"):
        _parse_set("federation.clients_per_round=3")
    st = stage_settings("tables", quick=True)
    st.extra.update({"federation.server_lr": 2.0})
    spec = grid_spec(st, st.scenarios[0], st.clients_per_round[0], st.fractions[0], [1], st.defences)
    assert spec.base.federation.server_lr == 2.0


def test_per_client_test_data_gives_the_honest_clients_accuracy() -> None:
    """Synthetic (every client its own distribution): runs also report the accuracy on the honest clients' own
    held-out data, computed here by hand from the test examples' owners; digits (one shared test set) does not."""
    import torch

    from client_native.torch_model import build_module, set_parameters

    cfg = SimulationConfig.from_dict({"seed": 3, "rounds": 1, "data": {"dataset": "synthetic", "num_clients": 12},
                                      "model": {"hidden": [8]}, "attack": {"name": "none", "num_byzantine": 4},
                                      "federation": {"clients_per_round": 12, "byzantine": 4}})
    sim = Simulation(cfg)
    owner = sim.data.test_owner
    assert owner is not None and sorted(set(owner.tolist())) == list(range(12))
    params = sim.spec.init_parameters(5)
    ev = sim.evaluate(params)
    module = build_module(sim.spec)
    set_parameters(module, params)
    with torch.no_grad():
        pred = module(torch.from_numpy(sim.data.x_test)).argmax(1).numpy()
    keep = ~np.isin(owner, sim.byzantine)
    assert ev["honest_accuracy"] == pytest.approx(float(np.mean(pred[keep] == sim.data.y_test[keep])))
    assert ev["accuracy"] == pytest.approx(float(np.mean(pred == sim.data.y_test)))
    digits = Simulation(tiny())
    assert "honest_accuracy" not in digits.evaluate(digits.spec.init_parameters(0))
    # the clean reference of a grid (no Byzantine clients) leaves the same clients' test data out
    clean = Simulation(cfg.replace(**{"attack.num_byzantine": 0, "attack.reference_byzantine": 4}))
    assert clean.byzantine == [] and clean.evaluate(params)["honest_accuracy"] == ev["honest_accuracy"]
    assert "honest_accuracy" not in Simulation(cfg.replace(**{"attack.num_byzantine": 0})).evaluate(params)


def test_goal_uses_the_honest_accuracy_where_runs_have_it() -> None:
    attacks = [{"label": "no attack", "spec": "none"}, {"label": "flip", "spec": "sign_flip"}]

    def e(acc: float, honest: float) -> dict[str, Any]:
        return {**_entry(acc, "ok", 0.0), "honest_accuracy": honest}

    grid = {"attacks": attacks, "defences": [{"label": "D", "spec": "median"}], "group_sizes": [1],
            "table": {"1": {"no attack": {"D": e(0.60, 0.64)}, "flip": {"D": e(0.50, 0.62)}}}}
    (row,) = suite.rows_of_grid(grid, "synthetic", 50, 0.2)
    assert row.metric == "honest_accuracy" and math.isclose(row.worst_drop, 2.0)
    assert "| syntheticʰ | 50 |" in suite.verdict_table([row], with_defence=False)
    del grid["table"]["1"]["flip"]["D"]["honest_accuracy"]  # one cell without it: the plain accuracy everywhere
    (row,) = suite.rows_of_grid(grid, "synthetic", 50, 0.2)
    assert row.metric == "accuracy" and math.isclose(row.worst_drop, 10.0)
