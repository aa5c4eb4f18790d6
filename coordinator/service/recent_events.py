"""The operator's recent events: a bounded ring buffer of the coordinator's warnings, errors and bans.

:class:`RecentEvents` is a :class:`logging.Handler` attached to the ``fl-coordinator`` logger (and so to its
children ``fl-coordinator.ws`` / ``.grpc``) by ``fl-coordinator serve``. It keeps the last ``capacity`` records at
``WARNING`` or above – each message cut to ``max_chars`` (a rejected frame's error text can be attacker-chosen and
long) – and counts every record it sees by level, so that ``/metrics`` can export ``flcoord_log_messages_total``.
A record that repeats the previous one (same level and message) is folded into it (``count``, ``time`` of the
latest, ``first_time``), so that a flood of one warning does not push everything else out.
Bans are the engine's ``client XXXXXXXX banned (trust …)`` warnings; they are tagged ``kind: "ban"`` and also kept
in a second ring (the last ``ban_capacity``) that warnings cannot flush.

Served to the operator only (``GET /status/operator/events``, bearer token – :mod:`coordinator.service.dashboard`).
Memory is bounded: ``capacity`` × (``max_chars`` + a few fields), whatever the log rate.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter, deque
from typing import Any

BAN = re.compile(r"^client [0-9a-f]+ banned\b")
LEVELS = ("warning", "error", "critical")


class RecentEvents(logging.Handler):
    """Keeps the last ``capacity`` warnings/errors (cut to ``max_chars``) and counts records by level."""

    def __init__(self, capacity: int = 200, max_chars: int = 300, level: int = logging.WARNING,
                 ban_capacity: int = 100) -> None:
        super().__init__(level)
        if capacity < 1 or ban_capacity < 1 or max_chars < 16:
            raise ValueError("capacity and ban_capacity must be >= 1 and max_chars >= 16")
        self.max_chars = max_chars
        self._events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._bans: deque[dict[str, Any]] = deque(maxlen=ban_capacity)
        self._seq = 0
        self.counts: Counter[str] = Counter()  # level name (lower case) → records seen
        self.bans = 0
        self._mutex = threading.Lock()  # gRPC may log from its own threads

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:  # the exception, not the whole traceback
            exc = record.exc_info[1]
            message = f"{message} [{type(exc).__name__}: {exc}]"
        message = message.replace("\n", " ")
        if len(message) > self.max_chars:
            message = message[: self.max_chars - 1] + "…"
        level = record.levelname.lower()
        kind = "ban" if BAN.match(message) else level
        with self._mutex:
            self.counts[level] += 1
            last = self._events[-1] if self._events else None
            if last is not None and last["message"] == message and last["level"] == level:
                last["count"] += 1
                last["time"] = record.created
            else:
                self._seq += 1
                self._events.append({"seq": self._seq, "time": record.created, "first_time": record.created,
                                     "count": 1, "level": level, "kind": kind, "logger": record.name,
                                     "message": message})
            if kind == "ban":
                self.bans += 1
                self._bans.append({"time": record.created, "message": message})

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        """The kept events with ``seq`` > ``after``, oldest first (copies)."""
        with self._mutex:
            return [dict(e) for e in self._events if e["seq"] > after]

    def snapshot(self) -> dict[str, Any]:
        """The JSON of ``/status/operator/events``: the kept events, the kept bans, the totals by level and the
        number of bans since start."""
        with self._mutex:
            counts = {lv: self.counts.get(lv, 0) for lv in LEVELS}
            bans = [dict(b) for b in self._bans]
            ban_count, capacity = self.bans, self._events.maxlen
        return {"events": self.events(), "bans": bans, "counts": counts, "ban_count": ban_count,
                "capacity": capacity}


def install(logger_name: str = "fl-coordinator", capacity: int = 200, max_chars: int = 300) -> RecentEvents:
    """A :class:`RecentEvents` attached to ``logger_name`` (remove it with :func:`uninstall`)."""
    handler = RecentEvents(capacity, max_chars)
    logging.getLogger(logger_name).addHandler(handler)
    return handler


def uninstall(handler: RecentEvents, logger_name: str = "fl-coordinator") -> None:
    logging.getLogger(logger_name).removeHandler(handler)


__all__ = ["RecentEvents", "install", "uninstall"]
