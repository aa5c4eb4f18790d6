"""Issue 12 item 2 in the harness: `simulate` and `simulate grid` use the grouping planner as `serve` does.

A single run above ``[federation] max_grouping_risk`` is refused with the planner's message unless
``accept_grouping_risk = true`` (then a logged warning and the risk in metrics.json); a grid records a refused cell
(``refused¶ (risk …)``) instead of aborting, or runs it with ``[grid] run_refused = true`` (marked ¶ with the
risk). The planner is called with population = num_clients and byzantine_fraction = num_byzantine / num_clients.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aggregation import planner
from simulations.config import ConfigError, SimulationConfig
from simulations.grid import GridSpec, risk_text, run_grid
from simulations.runner import Simulation, run_simulation


def cfg(**over) -> dict:
    """8 clients (iid digits), 6 per round, groups of 1, IPM; ``section.key`` overrides."""
    out = {"name": "plan", "rounds": 1, "seed": 3, "mode": "direct", "plots": False,
           "data": {"num_clients": 8, "partition": "iid"}, "model": {"hidden": [8]},
           "federation": {"clients_per_round": 6, "group_size": 1, "aggregator": "median", "byzantine": 1},
           "attack": {"name": "ipm(eps=0.5)", "num_byzantine": 1}}
    for k, v in over.items():
        sec, _, key = k.rpartition(".")
        (out.setdefault(sec, {}) if sec else out)[key] = v
    return out


def planner_report(data: dict) -> planner.PlannerReport:
    """What `serve` would compute, with the population and the attackers known exactly."""
    c = SimulationConfig.from_dict(data)
    n = c.data.num_clients
    return planner.check(c.federation_config(c.model_spec(64, 10)), c.attack.num_byzantine / n,
                         c.federation.max_grouping_risk, population=n)


# FedAvg with 1 attacker among 8, 6 per round: the attacker is selected in 3/4 of rounds and the mean tolerates none
REFUSED = {"federation.aggregator": "mean"}


def test_a_run_above_the_bound_is_refused_with_the_planners_message() -> None:
    data = cfg(**REFUSED)
    report = planner_report(data)
    assert not report.ok and report.failure_probability == pytest.approx(0.75)
    assert report.model.population == 8 and report.model.byzantine == 1  # exact: hypergeometric
    with pytest.raises(ConfigError) as exc:
        run_simulation(data)
    assert report.message() in str(exc.value) and "accept_grouping_risk = true" in str(exc.value)
    assert "grouping risk 0.7500 per round exceeds the bound 0.01" in str(exc.value)
    # the bound is the config's: a looser one accepts the same federation
    assert Simulation(SimulationConfig.from_dict(cfg(**REFUSED, **{"federation.max_grouping_risk": 0.8})))
    with pytest.raises(ConfigError, match=r"max_grouping_risk must be in \[0, 1\)"):
        SimulationConfig.from_dict(cfg(**{"federation.max_grouping_risk": 1.5}))


def test_the_cli_refuses_a_run_above_the_bound(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(SimulationConfig.from_dict(cfg(**REFUSED)).to_toml())
    p = subprocess.run([sys.executable, "-m", "coordinator.service.cli", "simulate", "r.toml", "--out", "out", "--quiet"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "config error" in p.stderr and "grouping risk 0.7500" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()


def test_accepting_the_risk_runs_with_a_warning_and_records_it(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    data = cfg(**REFUSED, **{"federation.accept_grouping_risk": True})
    report = planner_report(data)
    with caplog.at_level(logging.WARNING, logger="simulations"):
        r = run_simulation(data, tmp_path)
    assert len(r.history) == 1
    warned = [x for x in caplog.records if "grouping risk accepted" in x.getMessage()]
    assert warned and warned[0].levelno == logging.WARNING and report.message() in warned[0].getMessage()
    risk = json.loads((tmp_path / "metrics.json").read_text())["grouping_risk"]
    assert risk["failure_probability"] == report.failure_probability and risk["bound"] == 0.01
    assert risk["accepted"] and not risk["ok"] and risk["population"] == 8 and risk["byzantine"] == 1
    assert risk["message"] == report.message()


def test_a_run_within_the_bound_records_its_risk_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="simulations"):
        r = run_simulation(cfg())  # the median over 6 tolerates 2 corrupted inputs: risk 0
    assert r.grouping_risk["ok"] and r.grouping_risk["failure_probability"] == 0.0 and not r.grouping_risk["accepted"]
    assert not [x for x in caplog.records if "grouping" in x.getMessage()]


# ── grids ──────────────────────────────────────────────────────────────────────────────────────────────
def grid_data(**grid) -> dict:
    """Median against IPM with 2 attackers among 8: groups of 1 hold (risk 0); 3 groups of 2 do not (the median
    over 3 tolerates 1 corrupted group; both attackers selected in different groups: risk 3/7)."""
    data = cfg(**{"attack.num_byzantine": 2})
    data["grid"] = {"attacks": ["ipm(eps=0.5)"], "defences": ["median"], "group_sizes": [1, 2], **grid}
    return data


def test_a_grid_records_a_refused_cell_with_its_risk_and_does_not_abort(tmp_path: Path) -> None:
    data = grid_data()
    summary = run_grid(data, tmp_path, verbose=False)
    ran, refused = summary["table"]["1"]["ipm(eps=0.5)"]["median"], summary["table"]["2"]["ipm(eps=0.5)"]["median"]
    assert ran["grouping_risk"]["status"] == "ok" and ran["runs"][0]["rounds"] == 1
    spec = GridSpec.from_dict(data)
    assert spec.runs()[1][0] == 2
    expected = planner_report(spec.config_for(*spec.runs()[1]).to_dict())
    assert expected.failure_probability == pytest.approx(3 / 7)
    assert refused["grouping_risk"]["status"] == "refused" and refused["runs"][0]["refused"]
    assert refused["grouping_risk"]["failure_probability"] == expected.failure_probability  # the planner's figure
    assert refused["runs"][0]["rounds"] == 0 and not refused["runs"][0]["stopped_early"]
    assert refused["grouping_risk"]["message"] == expected.message()
    assert not (tmp_path / "s2").exists()  # not run
    table = (tmp_path / "table.md").read_text()
    assert f"refused¶ (risk {risk_text(expected.failure_probability)})" in table and "(risk 0.4286)" in table
    assert "¶ the grouping planner" in table and "1 of 2 cells refused (not run)" in table
    assert "§" not in table.split("## ")[2].split("\n\n")[1]  # a refused cell is not a failed run


def test_a_grid_can_run_the_refused_cells_anyway_and_marks_them(tmp_path: Path) -> None:
    summary = run_grid(grid_data(run_refused=True), tmp_path, verbose=False)
    cell = summary["table"]["2"]["ipm(eps=0.5)"]["median"]
    assert cell["grouping_risk"]["status"] == "above_bound" and cell["runs"][0]["rounds"] == 1
    metrics = json.loads((tmp_path / "s2" / "ipm_eps_0.5" / "median" / "seed3" / "metrics.json").read_text())
    assert metrics["config"]["federation"]["accept_grouping_risk"] and metrics["grouping_risk"]["accepted"]
    table = (tmp_path / "table.md").read_text()
    acc = f"{100 * cell['accuracy']:.1f}"
    assert re.search(rf"\| {re.escape(acc)}[†‡§]*¶ \(risk 0\.4286\) \|", table) and "refused¶" not in table
    assert "0 of 2 cells refused (not run), 1 run above the bound" in table
    assert "run_refused = true" in (tmp_path / "config.toml").read_text()
    with pytest.raises(ConfigError, match="run_refused must be true or false"):
        GridSpec.from_dict(grid_data(run_refused="yes"))


def test_the_shipped_configs_state_their_choice() -> None:
    from simulations.config import load_config
    from simulations.grid import load_grid

    root = Path(__file__).resolve().parent.parent / "simulations" / "configs"
    example = load_config(root / "example.toml")
    assert example.federation.accept_grouping_risk and not example.grouping_report().ok
    assert load_grid(root / "digits_grid.toml").run_refused
