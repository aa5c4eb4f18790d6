"""Issue 13 F14: the state is stored incrementally – what a round writes does not grow with the number of rounds
(the metrics history is not repeated in every state blob, the DP ledger is appended, not rewritten) nor with the
number of idle identities (their trust rows are written once, not every round) – and identities that never took
part are forgotten after ``identity_expiry_days``. Measured as bytes appended to SQLite's write-ahead log per
committed round (checkpoints off), on a real store."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.federation.trust import TrustParams, TrustState
from coordinator.service.store import Store
from flcore.modelspec import mlp
from privacy.dp import ParticipationAccountant, PrivacyAccountant, RoundEvent


def _federation(idle: int, rounds: int, tmp: Path, measure: tuple[int, ...]) -> tuple[dict[int, int], dict]:
    """Commit ``rounds`` rounds of an engine-shaped state (10 active clients, ``idle`` identities that enrolled
    and never took part); returns the WAL bytes appended by each round in ``measure`` and the last state."""
    store = Store.open(tmp)
    store.db.execute("PRAGMA wal_autocheckpoint=0")  # every write stays in the WAL: its growth = bytes written
    wal = tmp / (Store.DB_NAME + "-wal")
    active = [f"active-{i:02d}" for i in range(10)]
    store.register_clients([(c, c.encode().ljust(32, b"k"), "native", 0.0) for c in active])
    store.register_clients([(f"idle-{i:05d}", f"{i}".encode().ljust(32, b"i"), "websocket", 0.0) for i in range(idle)])
    trust = TrustState(TrustParams())
    for i in range(idle):
        trust.ensure(f"idle-{i:05d}")
    participation, amplified, history = ParticipationAccountant(), PrivacyAccountant(), []
    rng = np.random.default_rng(0)
    written = {}
    state: dict = {}
    for r in range(1, rounds + 1):
        trust.observe_units([active[:5], active[5:]], rng.uniform(0.5, 1.5, 2))
        participation.record(active, 2.0)
        amplified.events.append(RoundEvent(2.0, 0.5))
        metrics = {"round": r, "accuracy": float(rng.uniform()), "loss": float(rng.uniform()), "epsilon": 0.1 * r,
                   "groups": 2, "groups_ok": 2, "survivors": 10, "duration": 1.5, "time": 1e9 + r}
        history.append(metrics)
        state = {"round": r, "clip": 1.0, "trust": trust.to_dict(), "accountant": amplified.to_dict(),
                 "participation": participation.to_dict(), "optimizer": {"step": r},
                 "aggregation": {}, "history": list(history)}
        before = wal.stat().st_size if wal.exists() else 0
        store.commit_round(r, b"model-%d" % r, state, metrics)
        if r in measure:
            written[r] = wal.stat().st_size - before
    store.close()
    return written, state


def test_bytes_per_round_do_not_grow_with_rounds_or_idle_identities(tmp_path: Path) -> None:
    busy, state = _federation(2000, 200, tmp_path / "busy", (10, 200))
    quiet, _ = _federation(0, 10, tmp_path / "quiet", (10,))
    page = 4096 + 24  # one WAL frame
    # round 200 writes what round 10 wrote (give or take a B-tree page split), not 20× the history
    assert busy[200] <= busy[10] + 2 * page, busy
    # 2,000 idle identities cost nothing per round (before: their 2,000 trust rows were rewritten every round)
    assert busy[10] <= quiet[10] + 2 * page, (busy, quiet)
    assert busy[200] < 16 * page, busy
    # and the state resumes whole: trust of everyone, both accountants, the history
    with Store.open(tmp_path / "busy") as s:
        cp = s.latest_completed_round()
    assert json.loads(json.dumps(cp.state, sort_keys=True)) == json.loads(json.dumps(state, sort_keys=True))


def test_the_resumed_engine_state_is_the_saved_one(tmp_path: Path) -> None:
    """An engine built from the incrementally stored state has exactly the state it saved (trust, accountants,
    history)."""
    import asyncio

    from durability_support import InProcessFederation, config

    fed = InProcessFederation(tmp_path, config(rounds=3))
    asyncio.run(fed.run(3))
    saved = fed.engine.state()
    fed.close()
    with Store.open(tmp_path) as s:
        cp = s.latest_completed_round()
    resumed = Engine(config(rounds=3), fed.seed, state=cp.state)
    assert json.dumps(resumed.state(), sort_keys=True) == json.dumps(saved, sort_keys=True)


def test_identities_that_never_took_part_expire(tmp_path: Path) -> None:
    old, now = time.time() - 40 * 86400, time.time()
    with Store.open(tmp_path) as s:
        s.register_clients([(f"sybil-{i:04d}", f"{i}".encode().ljust(32, b"s"), "grpc", old) for i in range(2000)])
        s.register_clients([("fresh", b"f" * 32, "grpc", now), ("veteran", b"v" * 32, "grpc", old),
                            ("spender", b"p" * 32, "grpc", old), ("online", b"o" * 32, "grpc", old)])
        trust = TrustState(TrustParams())
        trust.observe("veteran", 1.0, 0.0)
        for c in ("sybil-0000", "sybil-0001"):
            trust.ensure(c)  # a trust row with no observation does not count as taking part
        s.commit_round(1, b"m1", {"trust": trust.to_dict()}, {})
        s.record_release(2, {"clients": {"spender": {"count": 1, "inv_z2": 0.25}}}, None)
        pruned = s.prune_identities(now - 30 * 86400, keep={"online"})
        assert len(pruned) == 2000 and all(c.startswith("sybil-") for c in pruned)
        assert sorted(c.id for c in s.clients()) == ["fresh", "online", "spender", "veteran"]
        assert set(s.trust_table()) == {"veteran"}
        assert s.prune_identities(now - 30 * 86400) == ["online"]  # once it is gone, it expires too
    # the engine forgets them as well, unless they are connected or took part
    cfg = FederationConfig(model=mlp([4, 2]), rounds=1, clients_per_round=2, group_size=1, aggregator="mean")
    e = Engine(cfg, bytes(32), registry={"a": b"a" * 32, "b": b"b" * 32})
    e.trust.ensure("a")
    e.trust.observe("b", 1.0, 0.0)
    assert e.forget_identities(["a", "b"]) == ["a"]
    assert set(e.registry) == {"b"} and set(e.trust.clients) == {"b"}


def test_a_schema_2_data_dir_is_migrated_with_its_ledger(tmp_path: Path) -> None:
    """A data dir written before incremental state (schema 2: the whole state in every blob) resumes with the same
    state, its participation accountant moved into its table, and then continues incrementally."""
    import sqlite3

    from coordinator.service.store import MIGRATIONS

    (tmp_path / "models").mkdir()
    db = sqlite3.connect(tmp_path / Store.DB_NAME)
    for m in MIGRATIONS[:2]:
        db.executescript(m)
    db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    state = {"round": 1, "participation": {"clients": {"a": {"count": 1, "inv_z2": 0.25}}},
             "accountant": {"events": [{"noise_multiplier": 2.0, "sampling_rate": 0.5, "count": 1}]},
             "history": [{"round": 1}], "trust": TrustState(TrustParams()).to_dict()}
    db.execute("INSERT INTO rounds (round, status, completed_at, model_file, model_sha256, state, metrics) VALUES "
               "(1, 'completed', 1.0, 'round-000001.mle', ?, ?, '{\"round\": 1}')",
               (hashlib.sha256(b"m1").hexdigest(), json.dumps(state)))
    db.execute("INSERT INTO dp_ledger (round, event) VALUES (1, ?)", (json.dumps(state["accountant"]["events"][0],
                                                                                 sort_keys=True),))
    db.commit()
    db.close()
    (tmp_path / "models" / "round-000001.mle").write_bytes(b"m1")
    with Store.open(tmp_path) as s:
        assert s.latest_completed_round().state == state
        state2 = {**state, "round": 2, "participation": {"clients": {"a": {"count": 2, "inv_z2": 0.5}}},
                  "history": [{"round": 1}, {"round": 2}]}
        s.commit_round(2, b"m2", state2, {"round": 2})
    with Store.open(tmp_path) as s:
        assert s.latest_completed_round().state == state2
