"""kill -9 of a real `fl-coordinator serve` with real native clients, restarted on the same data dir: the small
version of benchmarks/bench_crash.py (3 kills: between rounds, during training, during the unmask phase – after the
group sums' release, before the round commits). After each kill: rounds, model checksums, the DP ledger (never
lower, nothing twice), trust, ε and resumption hold."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_crash

pytestmark = pytest.mark.slow


def test_three_kills_lose_and_double_count_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_crash, "TARGETS", ("between rounds", "advertise", "unmask"))
    res = bench_crash.run(3, tmp_path, seed=1, budget_s=240, log=lambda line: None)
    assert res["kills"] == 3 and res["lost"] == 0, bench_crash.table(res)
    assert res["passed"] == res["checks"] == res["resumed"] == 3, bench_crash.table(res)
    assert res["labels"].get("unmask") == 1, bench_crash.table(res)
    assert res["disk"].get("released, not committed") == 1, bench_crash.table(res)  # the F5 window was hit
