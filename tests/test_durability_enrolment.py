"""Issue 13 F15: enrolments are not one fsync'ed insert each on the event loop – they are written in one
transaction shortly after (or before the next round is recorded) – and a crash in that window only means the
client enrols again with the same key; a disconnect of a connection that never authenticated does not scan every
connection. Real SQLite, the real driver, engine and client sessions (tests/durability_support.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

from durability_support import InProcessFederation, config

from coordinator.federation.engine import Engine
from coordinator.federation.events import Connected, Disconnected
from coordinator.service.driver import ENROLMENT_FLUSH_DELAY
from coordinator.service.store import Store


def _enrolled(data_dir: Path) -> int:
    db = sqlite3.connect(f"file:{data_dir / Store.DB_NAME}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM clients").fetchone()[0])
    finally:
        db.close()


def test_enrolments_are_written_together_after_the_handshakes(tmp_path: Path) -> None:
    fed = InProcessFederation(tmp_path, config(clients=30), n_clients=20)  # 30 per round: no round starts

    async def scenario() -> tuple[int, int]:
        fed.connect()  # 20 hellos and auths handled, 20 welcomes sent, all within one turn of the loop
        welcomed = sum(1 for f in fed.frames if f.type == "welcome")
        assert welcomed == 20
        during = _enrolled(tmp_path)  # nothing written on the loop yet
        await asyncio.sleep(ENROLMENT_FLUSH_DELAY + 0.2)
        return during, _enrolled(tmp_path)

    during, after = asyncio.run(scenario())
    fed.close()
    assert (during, after) == (0, 20)


def test_enrolments_are_on_disk_before_the_round_starts(tmp_path: Path) -> None:
    fed = InProcessFederation(tmp_path, config(rounds=1))
    at_task: list[int] = []
    fed.on_frame = lambda f: at_task.append(_enrolled(tmp_path)) if f.type == "task" and not at_task else None
    asyncio.run(fed.run(1))
    fed.close()
    assert at_task == [6]


def test_a_crash_before_the_flush_only_means_enrolling_again(tmp_path: Path) -> None:
    """The clients were welcomed, the process died before the batch was written: after the restart they are
    unknown, say hello with the same key and are enrolled again; the federation runs."""
    fed = InProcessFederation(tmp_path, config(rounds=1))
    fed.sessions = dict(list(fed.sessions.items())[:3])  # 3 < 6 per round: no round starts

    async def crash() -> None:
        fed.connect()
        assert sum(1 for f in fed.frames if f.type == "welcome") == 3
        fed.driver.cancel_timers()
        fed.store.close()  # the crash: the pending batch is lost

    asyncio.run(crash())
    ids = sorted(s.client_id for s in fed.sessions.values())
    assert _enrolled(tmp_path) == 0
    again = InProcessFederation(tmp_path, config(rounds=1))
    asyncio.run(again.run(1))
    again.close()
    with Store.open(tmp_path) as s:
        assert set(ids) <= {c.id for c in s.clients()} and s.latest_round() == 1


def test_a_disconnect_before_authentication_does_not_scan_the_connections() -> None:
    cfg = config()
    e = Engine(cfg, bytes(32))
    for i in range(3000):
        e.handle(Connected(f"c{i}", "websocket", 0.0))
    calls = 0

    def profile(frame, event, arg) -> None:
        nonlocal calls
        if event == "call" and frame.f_code is Engine.ready_clients.__code__:
            calls += 1

    sys.setprofile(profile)
    try:
        for i in range(3000):
            assert e.handle(Disconnected(f"c{i}", 1.0)) == []
    finally:
        sys.setprofile(None)
    assert calls == 0 and not e.conns
