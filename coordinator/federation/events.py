"""Events fed into the coordinator engine and actions it hands back (the sans-I/O boundary).

The engine never touches a socket, a clock or a random source of its own: a driver (asyncio server, the
simulation harness, a test) feeds it :class:`Event` objects with the current time and executes the
:class:`Action` objects it returns, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# ── events (driver → engine) ────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Connected:
    """A transport accepted a new connection ``conn`` (``kind`` is "websocket", "grpc" or "inprocess")."""

    conn: str
    kind: str
    now: float


@dataclass(frozen=True)
class DataReceived:
    """A whole frame arrived on ``conn`` (the transport enforces the frame-size limit before this)."""

    conn: str
    data: bytes
    now: float


@dataclass(frozen=True)
class Disconnected:
    """``conn`` is gone (closed by the peer, network loss, or after a :class:`Close` action)."""

    conn: str
    now: float


@dataclass(frozen=True)
class TimerFired:
    """The timer the engine asked for with :class:`SetTimer` is due."""

    name: str
    now: float


Event = Connected | DataReceived | Disconnected | TimerFired


# ── actions (engine → driver) ───────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Send:
    """Send ``data`` as one frame on ``conn``."""

    conn: str
    data: bytes


@dataclass(frozen=True)
class Close:
    """Close ``conn`` after sending anything queued for it; feed back :class:`Disconnected` afterwards."""

    conn: str
    reason: str


@dataclass(frozen=True)
class SetTimer:
    """Feed :class:`TimerFired(name)` at time ``at`` (replaces an earlier timer of the same name)."""

    name: str
    at: float


@dataclass(frozen=True)
class PersistRound:
    """Make a completed round durable *before* acting on anything after it (the store does it atomically)."""

    round: int
    model_bytes: bytes
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PersistLedger:
    """Make the privacy spend of group sums durable *before* acting on anything after it: the actions that
    follow let the coordinator reconstruct those sums (the SecAgg+ unmask requests). ``state`` holds the
    accountants after the spend (``"participation"``: per client, against the coordinator; ``"accountant"``:
    the third-party events). If it cannot be made durable, nothing after it may be sent (issue 13 F5)."""

    round: int
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundStarted:
    """A round began (the store notes it; a restart marks an unfinished one 'interrupted')."""

    round: int
    seed: str  # the public round seed, hex


@dataclass(frozen=True)
class ClientEnrolled:
    """A client authenticated for the first time with this key (the store registers it)."""

    client_id: str
    public_key: bytes
    kind: str


@dataclass(frozen=True)
class GroupAggregated:
    """One group's unmasked sum (field elements mod 2^m) – exactly what secure aggregation lets the server learn.

    Drivers may ignore it or write it to an audit directory (tests compare it bit-exactly with the plaintext
    sum of the survivors' inputs)."""

    round: int
    group: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    faulty: tuple[str, ...]
    field_sum: Any
    modulus_bits: int = 32  # m of the group's field (chosen per group: docs/privacy.md)


@dataclass(frozen=True)
class Log:
    level: str
    message: str


Action = (Send | Close | SetTimer | PersistRound | PersistLedger | RoundStarted | ClientEnrolled | GroupAggregated
          | Log)
