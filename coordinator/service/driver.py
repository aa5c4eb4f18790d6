"""The asyncio driver of the coordinator engine: feeds it events from the transports and the clock, executes
its actions (send, close, timers, persistence, logging).

Transports (:mod:`coordinator.service.transport_ws`, :mod:`coordinator.service.transport_grpc`) only move frames: they call
:meth:`EngineDriver.open` for a new connection, :meth:`EngineDriver.receive` for each whole frame and
:meth:`EngineDriver.closed` when it ends, and hand the driver a :class:`Link` to send frames back. Everything runs
on one event loop thread, so the engine sees events strictly one at a time.

Durability (issue 13 F5): a ``PersistLedger`` (the privacy spend of group sums about to be released) and a
``PersistRound`` (a completed round) are on disk – fsync'ed – before any action after them is executed. If one
fails (a full disk: ``OSError`` or SQLite's "database or disk is full"), the driver executes nothing more –
neither that batch's remaining actions (the round's ``round_end ok``) nor any later event –, logs one line and
sets :attr:`EngineDriver.failed`; ``serve`` then stops with a non-zero status and the data dir holds the previous
round. Enrolments (``ClientEnrolled``) are batched (F15): written in one transaction :data:`ENROLMENT_FLUSH_DELAY`
after the first of a batch, and always before the next ``RoundStarted``/``PersistLedger``/``PersistRound``, so no
round is recorded with a participant the store does not know. A crash inside that window forgets enrolments the
clients were told succeeded (``welcome``): harmless – such a client has no round, no trust and no spend yet, and
its next ``hello`` with the same key simply enrols it again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import mle
from coordinator.federation.engine import Engine
from coordinator.federation.events import (
    Action,
    ClientEnrolled,
    Close,
    Connected,
    DataReceived,
    Disconnected,
    GroupAggregated,
    Log,
    PersistLedger,
    PersistRound,
    RoundStarted,
    Send,
    SetTimer,
    TimerFired,
)
from coordinator.service.metrics import TrafficCounters
from coordinator.service.store import RoundRecord, Store

log = logging.getLogger("fl-coordinator")
ENROLMENT_FLUSH_DELAY = 0.05  # seconds: enrolments arriving within this window share one fsync'ed transaction
PRUNE_INTERVAL = 3600.0  # seconds between two prunings of expired identities (issue 13 F14)
_DURABLE = (PersistRound, PersistLedger, RoundStarted)


class Link(Protocol):
    """A transport's handle on one connection."""

    def send(self, data: bytes) -> None:
        """Queue one frame (never blocks)."""

    def close(self, reason: str) -> None:
        """Close after the queued frames are sent."""


@dataclass
class QueueLink:
    """A :class:`Link` backed by an asyncio queue that the transport's writer task drains (``None`` = close)."""

    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    close_reason: str = ""

    def send(self, data: bytes) -> None:
        self.queue.put_nowait(data)

    def close(self, reason: str) -> None:
        self.close_reason = reason
        self.queue.put_nowait(None)


class EngineDriver:
    def __init__(self, engine: Engine, store: Store | None = None, *, audit_dir: str | Path | None = None,
                 clock: Callable[[], float] = time.time,
                 on_round: Callable[[dict[str, Any]], None] | None = None,
                 identity_expiry_days: float = 0.0) -> None:
        self.engine = engine
        self.store = store
        self.audit_dir = Path(audit_dir) if audit_dir else None
        if self.audit_dir:
            self.audit_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.on_round = on_round
        self.links: dict[str, Link] = {}
        self._ids = itertools.count(1)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.finished = asyncio.Event()
        self.failed = asyncio.Event()  # set with ``fatal`` when durability is lost (the service must stop)
        self.fatal: str | None = None
        # frames, bytes, rejections, persisted rounds: exported by /metrics (coordinator.service.metrics)
        self.counters = TrafficCounters(last_persisted_round=engine.round_number if store is not None else None)
        self._enrolments: list[tuple[str, bytes, str, float]] = []
        self._flush: asyncio.TimerHandle | None = None
        self.identity_expiry = identity_expiry_days * 86400.0
        self._last_prune = clock()

    # ── transport side ───────────────────────────────────────────────────────────────────────────────
    def open(self, kind: str, link: Link, peer: str = "") -> str:
        conn = f"{kind}-{next(self._ids)}"
        self.links[conn] = link
        self.counters.opened(conn)
        log.debug("connection %s from %s", conn, peer)
        self.feed(Connected(conn, kind, self.clock()))
        return conn

    def receive(self, conn: str, data: bytes) -> None:
        if conn in self.links:
            self.counters.received(conn, len(data))
            self.feed(DataReceived(conn, data, self.clock()))

    def is_authenticated(self, conn: str) -> bool:
        """Whether the engine has authenticated ``conn`` (its handshake is done): the transports' admission
        control gives it the full message size only then (issue 13 F1)."""
        c = self.engine.conns.get(conn)
        return c is not None and c.state in ("authenticated", "ready", "busy")

    def closed(self, conn: str) -> None:
        if self.links.pop(conn, None) is not None:
            self.feed(Disconnected(conn, self.clock()))

    # ── engine side ──────────────────────────────────────────────────────────────────────────────────
    def feed(self, event: Any) -> None:
        if self.fatal is not None:  # durability was lost: the engine's answers must not reach anyone
            return
        # a frame is rejected when its connection's error counter goes up (counted by the error code sent back)
        c = getattr(self.engine, "conns", {}).get(event.conn) if isinstance(event, DataReceived) else None
        errors = c.errors if c is not None else 0
        try:
            actions = self.engine.handle(event)
        except Exception:  # an engine bug must not take the service down; the event is dropped and logged
            self.counters.engine_exceptions += 1
            log.exception("engine failed on %s", type(event).__name__)
            return
        if c is not None and c.errors > errors:
            self.counters.reject(event.conn, actions)
        self.execute(actions)

    def execute(self, actions: list[Action]) -> None:
        for a in actions:
            if self.fatal is not None:
                return
            try:
                self._execute(a)
            except Exception as exc:  # one failed action must not drop the rest of the batch – unless durability
                if isinstance(a, _DURABLE):
                    what = "the privacy ledger of" if isinstance(a, PersistLedger) else "persisting"
                    self._lose_durability(f"{what} round {a.round} could not be written ({type(exc).__name__}: "
                                          f"{exc}); nothing after it was sent")
                    return
                log.exception("action %s failed", type(a).__name__)
        if self.engine.finished and not self.finished.is_set():
            self.finished.set()

    def _lose_durability(self, reason: str) -> None:
        """Stop acting: log one line, cancel the timers, wake ``serve`` (which exits non-zero)."""
        self.fatal = reason
        log.critical("durability lost: %s", reason)
        self.cancel_timers()
        self.failed.set()

    def _execute(self, a: Action) -> None:
        if isinstance(a, Send):
            link = self.links.get(a.conn)
            if link is not None:
                link.send(a.data)
                self.counters.sent(a.conn, len(a.data))
        elif isinstance(a, Close):
            link = self.links.get(a.conn)
            if link is not None:
                link.close(a.reason)
        elif isinstance(a, SetTimer):
            self._set_timer(a.name, a.at)
        elif isinstance(a, PersistRound):
            self._persist(a)
        elif isinstance(a, PersistLedger):
            if self.store is not None:
                self._flush_enrolments(raise_errors=True)
                self.store.record_release(a.round, a.state.get("participation"), a.state.get("accountant"))
        elif isinstance(a, RoundStarted):
            self.counters.rounds_started += 1
            if self.store is not None:
                self._flush_enrolments(raise_errors=True)
                self.store.begin_round(RoundRecord(a.round, a.seed))
        elif isinstance(a, ClientEnrolled):
            if self.store is not None:
                self._enrolments.append((a.client_id, a.public_key, a.kind, time.time()))
                self._schedule_flush()
        elif isinstance(a, GroupAggregated):
            self._audit(a)
        elif isinstance(a, Log):
            log.log(logging.getLevelName(a.level.upper()), a.message)

    def _schedule_flush(self) -> None:
        if self._flush is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven without an event loop (tests): write at once
            self._flush_enrolments()
            return
        self._flush = loop.call_later(ENROLMENT_FLUSH_DELAY, self._flush_enrolments)

    def _flush_enrolments(self, raise_errors: bool = False) -> None:
        """Write the pending enrolments in one transaction (a failure is a lost disk: the service stops)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._enrolments or self.store is None or self.fatal is not None:
            return
        batch, self._enrolments = self._enrolments, []
        try:
            self.store.register_clients(batch)
        except Exception as exc:
            if raise_errors:
                raise
            self._lose_durability(f"{len(batch)} enrolment(s) could not be written ({type(exc).__name__}: {exc})")

    def flush(self) -> None:
        """Write what is pending (before the store closes)."""
        self._flush_enrolments()

    def _persist(self, a: PersistRound) -> None:
        metrics = dict(self.engine.history[-1]) if self.engine.history else {}
        if self.store is not None:
            self._flush_enrolments(raise_errors=True)
            self.store.commit_round(a.round, a.model_bytes, a.state, metrics)
            self.counters.rounds_persisted += 1
            self.counters.last_persisted_round = a.round
            self._maybe_prune()
        if self.on_round is not None:
            self.on_round(metrics)

    def _maybe_prune(self) -> None:
        """Forget expired identities that never took part, at most once per :data:`PRUNE_INTERVAL`."""
        now = time.time()
        if self.store is None or not self.identity_expiry or now - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune = now
        self.prune(now)

    def prune(self, now: float | None = None) -> list[str]:
        if self.store is None or not self.identity_expiry:
            return []
        now = time.time() if now is None else now
        ids = self.store.prune_identities(now - self.identity_expiry, keep=set(self.engine.by_client))
        forgotten = self.engine.forget_identities(ids)
        if ids:
            log.info("forgot %d identit%s that never took part, enrolled over %g day(s) ago", len(ids),
                     "y" if len(ids) == 1 else "ies", self.identity_expiry / 86400)
        return forgotten

    def _audit(self, a: GroupAggregated) -> None:
        if self.audit_dir is None:
            return
        import numpy as np

        meta = {"kind": "group_sum", "round": a.round, "group": a.group, "survivors": list(a.survivors),
                "dropped": list(a.dropped), "faulty": list(a.faulty), "modulus_bits": a.modulus_bits}
        mle.save(self.audit_dir / f"round-{a.round:06d}-group-{a.group:03d}.mle",
                 {"sum": np.asarray(a.field_sum)}, meta)

    def _set_timer(self, name: str, at: float) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, at - self.clock())
        self._timers[name] = loop.call_later(delay, self._fire, name)

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        self.feed(TimerFired(name, self.clock()))

    def cancel_timers(self) -> None:
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
