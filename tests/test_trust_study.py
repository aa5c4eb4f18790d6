"""Smoke test of simulations/trust_study.py (issue 12 item 4): a tiny study runs and writes its outputs."""

from __future__ import annotations

import json

from simulations import trust_study


def test_separation_rounds() -> None:
    sel = [{"round": 1, "clients": [0, 1, 2], "trust": [0.5, 0.5, 0.5]},
           {"round": 2, "clients": [0, 1, 2], "trust": [0.1, 0.6, 0.6]},
           {"round": 3, "clients": [0, 1, 2], "trust": [0.7, 0.6, 0.6]},
           {"round": 4, "clients": [0, 1, 2], "trust": [0.1, 0.6, 0.6]}]
    assert trust_study.separation_rounds(sel, {0}) == (2, 4)
    assert trust_study.separation_rounds(sel[:1], {0}) == (None, None)


def test_trust_study_smoke(tmp_path) -> None:
    attacks = (("no attack", "none"), ("sign flip (×10)", "sign_flip(scale=10)"))
    res = trust_study.run(tmp_path, rounds=2, seeds=1, workers=1, attacks=attacks, group_sizes=(1, 3),
                          num_clients=30, clients_per_round=15, num_byzantine=4, byzantine=1)
    assert len(res["runs"]) == 8
    assert all(r["rounds_done"] == 2 and r["error"] is None for r in res["runs"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["summary"]) == {f"{a}|{s}|{g}" for a, _ in attacks for s in ("trust", "uniform")
                                     for g in (1, 3)}
    row = saved["summary"]["sign flip (×10)|uniform|3"]
    assert 0 <= row["late_share"] <= 1 and 0 <= row["trust_honest"] <= 1 and len(row["bans_honest"]) == 1
    table = (tmp_path / "table.md").read_text()
    assert "| sign flip (×10) | 3 | trust |" in table and "| no attack | 1 | uniform |" in table
    assert (tmp_path / "selection_share.png").stat().st_size > 0
