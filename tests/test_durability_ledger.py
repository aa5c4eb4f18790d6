"""Issue 13 F5: the privacy spend of a group sum is durable before the coordinator can reconstruct the sum, and a
round is `ok` to clients only once it is durable. Real SQLite, the real driver and engine, real client sessions
(tests/durability_support.py); the full disk is a real EFBIG from the kernel (RLIMIT_FSIZE) in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from durability_support import InProcessFederation, config

from coordinator.federation.engine import Engine
from coordinator.service.store import Store

SUPPORT = Path(__file__).resolve().parent / "durability_support.py"


def _read(data_dir: Path) -> tuple[dict[str, int], list[int]]:
    """What another process would find on disk right now."""
    db = sqlite3.connect(f"file:{data_dir / Store.DB_NAME}?mode=ro", uri=True)
    try:
        counts = {c: int(n) for c, n in db.execute("SELECT client_id, count FROM participation")}
        rounds = [int(r) for (r,) in db.execute("SELECT round FROM dp_ledger ORDER BY id")]
        return counts, rounds
    finally:
        db.close()


def test_the_spend_is_on_disk_before_the_first_unmask_request(tmp_path: Path) -> None:
    fed = InProcessFederation(tmp_path, config(rounds=2))
    seen: dict[int, tuple[dict[str, int], list[int]]] = {}

    def on_frame(frame) -> None:
        if frame.phase == "unmask_request" and frame.round not in seen:
            seen[frame.round] = _read(tmp_path)

    fed.on_frame = on_frame
    asyncio.run(fed.run(2))
    fed.close()
    assert sorted(seen) == [1, 2]
    for r, (counts, ledger_rounds) in seen.items():
        # every member's masked input is in the sum its unmask requests release: each is charged round r already
        assert sorted(counts.values()) == [r] * 6, (r, counts)
        assert ledger_rounds == list(range(1, r + 1))
    with Store.open(tmp_path) as s:  # the round's commit did not charge it a second time
        assert [r for r, _ in s.dp_ledger()] == [1, 2]
        assert s.latest_completed_round().state["participation"]["clients"] == {
            c: v for c, v in fed.engine.participation.to_dict()["clients"].items()}


def test_a_crash_after_the_release_keeps_the_spend(tmp_path: Path) -> None:
    """The process stops (nothing more is executed) right after the first unmask request of round 2: the
    restarted engine resumes from round 1 with round 2's spend in its ledger (the issue measured 16.55 → 10.73)."""
    fed = InProcessFederation(tmp_path, config(rounds=3))

    def on_frame(frame) -> None:
        if frame.phase == "unmask_request" and frame.round == 2:
            raise SystemExit  # the "crash": leaves the loop with whatever is on disk

    fed.on_frame = on_frame
    with contextlib.suppress(SystemExit):
        asyncio.run(fed.run(3))
    eps_released = fed.engine.epsilon()
    fed.store.close()
    with Store.open(tmp_path) as s:
        cp = s.latest_completed_round()
        assert cp.round == 1
        resumed = Engine(config(rounds=3), fed.seed, state=cp.state)
    assert resumed.round_number == 1
    assert resumed.epsilon() == eps_released > 0
    assert sorted(resumed.participation.counts.values()) == [2] * 6


def test_a_full_disk_sends_nothing_after_the_failed_write(tmp_path: Path) -> None:
    """Round 2's model file cannot be written (EFBIG): no `round_end ok` for round 2 – no frame at all after the
    failure –, one reason recorded, and the data dir holds round 1 with round 2's released spend."""
    out = subprocess.run([sys.executable, str(SUPPORT), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["fatal"].startswith("persisting round 2 could not be written (OSError: [Errno 27]"), res["fatal"]
    frames = res["frames"]
    assert not [f for f in frames if f["after_fatal"]]
    ends = {(f["round"], f["status"]) for f in frames if f["type"] == "round_end"}
    assert ends == {(1, "ok")}
    assert "Traceback" not in out.stderr and sum("durability lost" in line for line in out.stderr.splitlines()) == 1
    with Store.open(tmp_path) as s:
        assert s.latest_round() == 1 and s.round_status(2) == "interrupted"
        assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["round-000001.mle"]
        assert [r for r, _ in s.dp_ledger()] == [1, 2]  # round 2's sums were released: its spend stays
        clients = s.latest_completed_round().state["participation"]["clients"]
        assert sorted(v["count"] for v in clients.values()) == [2] * 6


def test_serve_stops_with_one_line_when_the_disk_is_full(tmp_path: Path) -> None:
    """The real service with real clients under a 320 KiB file-size limit (RLIMIT_FSIZE: the kernel's EFBIG, as on
    a full disk) once a few rounds have filled SQLite's log: exit status 1, one `durability lost` line and no
    traceback, and the data dir opens afterwards with every committed round intact."""
    import hashlib
    import resource
    import signal

    from e2e_support import UTILITY_POLICY, Workers, _env, free_port

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (320 * 1024, resource.RLIM_INFINITY))

    grpc_port = free_port()
    log = tmp_path / "coordinator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "coordinator.service.cli", "serve", "--data-dir",
                                 str(tmp_path / "data"), "--ws-port", str(free_port()), "--grpc-port", str(grpc_port),
                                 "--evaluation", "none", "--rounds", "1000", "--clients-per-round", "6",
                                 "--group-size", "6", "--train-timeout", "15", "--phase-timeout", "2",
                                 "--aggregator", "mean", "--local-epochs", "1", "--noise-multiplier", "0.05",
                                 "--epsilon", "1e9", "--l2-clip", "1.0", "--log-level", "warning"],
                                stdout=out, stderr=subprocess.STDOUT, env=_env(), preexec_fn=limit)
    workers = Workers()
    try:
        for chunk in ([0, 1, 2], [3, 4, 5]):
            workers.spawn(tmp_path, f"127.0.0.1:{grpc_port}", chunk, 6, "--policy", UTILITY_POLICY)
        assert proc.wait(240) == 1, log.read_text()
    finally:
        workers.kill()
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "Traceback" not in text and sum("durability lost" in line for line in text.splitlines()) == 1, text
    with Store.open(tmp_path / "data") as s:
        last = s.latest_completed_round()
        assert last is not None and last.round >= 1
        assert [r for r, _ in s.metrics()] == list(range(1, last.round + 1))
        for r in range(1, last.round + 1):
            assert s.model_path(r).is_file()
        assert hashlib.sha256(last.model_path.read_bytes()).hexdigest() == last.model_sha256
