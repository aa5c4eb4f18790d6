"""The SQLite store: round trip, resume after a crash between the model write and the DB commit, and real
SIGKILLs of a process committing rounds."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from coordinator.federation.trust import TrustParams, TrustState
from coordinator.service.store import MIGRATIONS, SCHEMA_VERSION, RoundRecord, Store, StoreError


def test_round_trip(tmp_path) -> None:
    s = Store(tmp_path)
    assert s.latest_checkpoint() is None
    assert s.register_client("c1", b"k" * 32, "native")
    assert not s.register_client("c1", b"k" * 32, "native")
    with pytest.raises(StoreError, match="another key"):
        s.register_client("c1", b"x" * 32, "native")
    s.commit_round(1, b"model-1", {"scores": {"c1": 0.5}}, {"accuracy": 0.5})
    s.commit_round(2, b"model-2", {"scores": {"c1": 0.6}}, {"accuracy": 0.7})
    with pytest.raises(StoreError, match="not after"):
        s.commit_round(2, b"again", {}, {})
    s.log_event("rejected", {"client": "c1", "reason": "bad signature"}, 2)
    s.close()
    t = Store(tmp_path)
    cp = t.latest_checkpoint()
    assert cp is not None and cp.round == 2 and cp.model_path.read_bytes() == b"model-2"
    assert cp.state == {"scores": {"c1": 0.6}} and cp.metrics == {"accuracy": 0.7}
    assert t.client_key("c1") == b"k" * 32 and [r for r, _ in t.metrics()] == [1, 2]
    assert t.events("rejected")[0][2]["reason"] == "bad signature"
    assert t.metric_series("accuracy") == [(1, 0.5), (2, 0.7)]
    c = t.get_client("c1")
    assert c is not None and c.kind == "native" and not c.banned and t.get_client("nobody") is None
    with pytest.raises(StoreError, match="JSON"):
        t.commit_round(3, b"m", {"x": float("nan")}, {})
    with pytest.raises(StoreError, match=r"TrustState.to_dict"):
        t.commit_round(3, b"m", {"trust": {"c1": 0.5}}, {})
    assert t.latest_round() == 2 and not t.model_path(3).exists()


def test_commit_records_trust_ledger_seed_and_resumes_them(tmp_path) -> None:
    s = Store.open(tmp_path)
    for cid in ("a", "b"):
        s.register_client(cid, cid.encode() * 32, "browser")
    trust = TrustState(TrustParams(ban_threshold=0.4, min_evidence=3))
    events: list[dict] = []
    for r in (1, 2, 3):
        s.begin_round(RoundRecord(r, seed=f"{r:064x}", started_at=100.0 * r))
        trust.observe_units([["a"], ["b"]], [1.0, 9.0])
        events.append({"noise_multiplier": 1.0, "sampling_rate": 0.5, "count": 1})
        s.commit_round(RoundRecord(r, completed_at=100.0 * r + 5), f"model-{r}".encode(),
                       {"round": r, "trust": trust.to_dict(), "accountant": {"events": list(events)}},
                       {"accuracy": 0.1 * r, "note": "text is kept in the JSON only"})
    s.set_config("task", {"model": "mlp"})
    s.close()
    with Store.open(tmp_path) as t:
        cp = t.latest_completed_round()
        assert cp.round == 3 and cp.seed == f"{3:064x}" and cp.model_path.name == "round-000003.mle"
        assert TrustState.from_dict(cp.trust).trust("b") == trust.trust("b")
        assert cp.accountant == {"events": events}
        assert [r for r, _ in t.dp_ledger()] == [1, 2, 3]
        assert t.trust_table() == {"a": trust.trust("a"), "b": trust.trust("b")}
        assert t.metric_series("accuracy") == [(1, 0.1), (2, 0.2), (3, pytest.approx(0.3))]
        assert t.get_config("task") == {"model": "mlp"} and t.get_config("missing", 7) == 7
        assert trust.ensure("b").banned and t.get_client("b").banned and not t.get_client("a").banned
        # the accountant's history cannot be rewritten
        with pytest.raises(StoreError, match="cannot be rewritten"):
            t.commit_round(4, b"m4", {"accountant": {"events": events[:1]}}, {})
        assert t.latest_round() == 3


def test_interrupted_round_is_marked_and_redone(tmp_path) -> None:
    s = Store(tmp_path)
    s.commit_round(1, b"m1", {}, {})
    s.begin_round(RoundRecord(2, seed="ab"))
    s.close()
    t = Store(tmp_path)
    assert t.round_status(2) == "interrupted" and t.latest_round() == 1
    t.commit_round(2, b"m2", {}, {})
    assert t.round_status(2) == "completed" and t.latest_completed_round().seed == "ab"
    with pytest.raises(StoreError, match="not after"):
        t.begin_round(RoundRecord(2))
    with pytest.raises(StoreError, match=">= 1"):
        RoundRecord(0)


def test_migrates_a_version_1_database_and_refuses_a_newer_one(tmp_path) -> None:
    import sqlite3

    (tmp_path / "models").mkdir()
    db = sqlite3.connect(tmp_path / Store.DB_NAME)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO rounds VALUES (1, 5.0, 'round-000001.mle', ?, '{\"round\": 1}', '{}')",
               (hashlib.sha256(b"old").hexdigest(),))
    db.commit()
    db.close()
    (tmp_path / "models" / "round-000001.mle").write_bytes(b"old")
    s = Store(tmp_path)
    assert s.schema_version() == SCHEMA_VERSION
    cp = s.latest_completed_round()
    assert cp.round == 1 and cp.state == {"round": 1} and s.round_status(1) == "completed"
    s.commit_round(2, b"new", {}, {"loss": 1.0})
    s.db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    s.close()
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path)


def test_garbage_database_is_a_typed_error(tmp_path) -> None:
    (tmp_path / Store.DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite"):
        Store(tmp_path)


def test_crash_between_model_write_and_commit_resumes_previous_round(tmp_path) -> None:
    s = Store(tmp_path)
    s.commit_round(1, b"model-1", {"r": 1}, {})
    # simulate: round 2's model file reached disk, the process died before the DB commit
    s.model_path(2).write_bytes(b"model-2")
    (tmp_path / "models" / "round-000003.mle.tmp").write_bytes(b"partial")
    s.close()
    t = Store(tmp_path)
    cp = t.latest_checkpoint()
    assert cp.round == 1 and cp.state == {"r": 1}
    assert not t.model_path(2).exists() and not (tmp_path / "models" / "round-000003.mle.tmp").exists()
    t.commit_round(2, b"model-2b", {"r": 2}, {})  # and the round can be redone
    assert t.latest_checkpoint().model_path.read_bytes() == b"model-2b"


def test_tampered_model_file_is_detected(tmp_path) -> None:
    s = Store(tmp_path)
    s.commit_round(1, b"model-1", {}, {})
    s.model_path(1).write_bytes(b"evil")
    with pytest.raises(StoreError, match="SHA-256"):
        s.latest_checkpoint()


WRITER = textwrap.dedent("""
    import os, sys
    from coordinator.service.store import Store
    s = Store(sys.argv[1])
    r = s.latest_round() or 0
    while True:
        r += 1
        events = [{"round": k} for k in range(1, r + 1)]
        s.commit_round(r, os.urandom(200_000) + r.to_bytes(8, "little"),
                       {"round": r, "accountant": {"events": events}}, {"n": r})
        print(r, flush=True)
""")


def test_sigkill_at_random_moments_leaves_a_consistent_store(tmp_path) -> None:
    import random

    rnd = random.Random(7)
    seen = 0
    for _ in range(4):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        # wait until it has committed at least one more round, then kill it at a random moment
        line = p.stdout.readline()
        assert line.strip(), "writer produced no round"
        time.sleep(rnd.uniform(0.0, 0.3))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        s = Store(tmp_path)
        cp = s.latest_checkpoint()
        assert cp is not None and cp.round > seen and cp.state["round"] == cp.round
        assert [e["round"] for _, e in s.dp_ledger()] == list(range(1, cp.round + 1))
        assert hashlib.sha256(cp.model_path.read_bytes()).hexdigest() == cp.model_sha256
        assert cp.model_path.read_bytes()[-8:] == cp.round.to_bytes(8, "little")
        # every model file on disk belongs to a committed round
        assert sorted(p.name for p in (tmp_path / "models").iterdir()) == \
            [f"round-{r:06d}.mle" for r in range(1, cp.round + 1)]
        seen = cp.round
        s.close()


def test_one_data_dir_one_coordinator(tmp_path) -> None:
    """Issue 13 F7: a second coordinator on the same data dir is refused (in this process and in another one)
    while the first holds it, and the dir is usable again once the first closes."""
    s = Store(tmp_path)
    with pytest.raises(StoreError, match=rf"in use by another coordinator \(pid {os.getpid()}\)"):
        Store(tmp_path)
    other = subprocess.run([sys.executable, "-c", "import sys; from coordinator.service.store import Store; Store(sys.argv[1])",
                            str(tmp_path)], capture_output=True, text=True)
    assert other.returncode != 0 and "in use by another coordinator" in other.stderr
    s.commit_round(1, b"model-1", {"round": 1}, {})
    s.close()
    t = Store(tmp_path)
    assert t.latest_round() == 1
    t.close()


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_store_beside_saved_models_is_refused_and_nothing_is_deleted(tmp_path, how: str) -> None:
    """Issue 13 F6: a missing or empty coordinator.sqlite used to restart at round 0 and delete every saved model.
    Now the store refuses with one line naming what it found; the model files stay; `serve` exits with status 2."""
    s = Store(tmp_path)
    for r in (1, 2):
        s.commit_round(r, f"model-{r}".encode(), {"round": r}, {})
    s.close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / (Store.DB_NAME + suffix)).unlink(missing_ok=True)
    if how == "deleted":
        (tmp_path / Store.DB_NAME).unlink()
    else:
        (tmp_path / Store.DB_NAME).write_bytes(b"")
    models = sorted(p.name for p in (tmp_path / "models").iterdir())
    with pytest.raises(StoreError, match=r"missing or empty, but .* holds 2 saved model\(s\) \(up to round-000002"):
        Store(tmp_path)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == models == ["round-000001.mle",
                                                                                 "round-000002.mle"]
    cli = subprocess.run([sys.executable, "-m", "coordinator.service.cli", "serve", "--data-dir", str(tmp_path),
                          "--evaluation", "none", "--ws-port", "0", "--grpc-port", "0"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2, cli.stderr
    assert "fl-coordinator serve: error:" in cli.stderr and "missing or empty" in cli.stderr
    assert "Traceback" not in cli.stderr and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == models
