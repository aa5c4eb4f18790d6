"""``GET /metrics``: the coordinator's figures in the Prometheus text exposition format 0.0.4, written by hand.

Served to the operator only – the same bearer token as ``/status/operator`` (:mod:`coordinator.service.dashboard`
registers the route; 401 without the token, 404 when no operator token is configured). Every family has
``# HELP`` and ``# TYPE``; names are ``flcoord_*`` with the unit in the name (``_seconds``, ``_bytes``,
``_total`` for counters). The values are read when the page is scraped, from

* the engine (``Engine.status()`` and its connections): rounds, the last round's metrics, privacy, clients;
* :class:`TrafficCounters`, kept by :class:`coordinator.service.driver.EngineDriver`: connections opened, frames
  and bytes in and out per transport, rejected frames by the ``error`` code the coordinator answered with,
  exceptions inside the engine, rounds persisted;
* :class:`coordinator.service.recent_events.RecentEvents`: warnings/errors logged, bans;
* ``/proc/self``: resident memory, open file descriptors and their limit, start time.

A gauge whose value does not exist yet (no round completed, no DP noise) has no sample; label sets that are known
in advance (transports × connection states) are always present, at 0, so that a dashboard query never sees gaps.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mle
from coordinator.federation.events import Action, Send

if TYPE_CHECKING:
    from coordinator.federation.engine import Engine
    from coordinator.service.recent_events import RecentEvents

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TRANSPORTS = ("websocket", "grpc")
CONN_STATES = ("hello", "auth", "authenticated", "ready", "busy")
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # protocol error codes; anything else is "other"


def transport_of(conn: str) -> str:
    """``websocket-17`` → ``websocket`` (the driver names connections ``<kind>-<n>``)."""
    return conn.rsplit("-", 1)[0]


@dataclass
class TrafficCounters:
    """What the driver counts as frames pass (all on the event loop thread)."""

    connections_opened: Counter[str] = field(default_factory=Counter)  # transport → connections
    frames_received: Counter[str] = field(default_factory=Counter)  # transport → frames
    bytes_received: Counter[str] = field(default_factory=Counter)
    frames_sent: Counter[str] = field(default_factory=Counter)
    bytes_sent: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)  # error code sent back → frames
    engine_exceptions: int = 0  # events the engine raised on (dropped and logged by the driver)
    rounds_started: int = 0  # rounds whose secure aggregation started (every reveal in), in this process
    rounds_persisted: int = 0  # rounds committed to the store by this process
    last_persisted_round: int | None = None  # the last round in the store (the resumed one at start)

    def opened(self, conn: str) -> None:
        self.connections_opened[transport_of(conn)] += 1

    def received(self, conn: str, size: int) -> None:
        t = transport_of(conn)
        self.frames_received[t] += 1
        self.bytes_received[t] += size

    def sent(self, conn: str, size: int) -> None:
        t = transport_of(conn)
        self.frames_sent[t] += 1
        self.bytes_sent[t] += size

    def reject(self, conn: str, actions: Iterable[Action]) -> None:
        """One rejected frame on ``conn``: counted under the code of the ``error`` message sent back for it."""
        self.rejected[_error_code(conn, actions)] += 1


def _error_code(conn: str, actions: Iterable[Action]) -> str:
    for a in actions:
        if isinstance(a, Send) and a.conn == conn:
            try:  # our own signed frame: the envelope is in the metadata, no need to verify the signature
                fl = mle.loads(a.data).metadata["fl"]
            except Exception:
                continue
            if fl.get("type") == "error":
                code = str(fl.get("body", {}).get("code", ""))
                return code if _REASON.match(code) else "other"
    return "unknown"


# ── the exposition format ─────────────────────────────────────────────────────────────────────────────────
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


Sample = tuple[Mapping[str, str], "float | int | bool | None"]


class Exposition:
    """A text page of metric families: ``add(name, type, help, value or [(labels, value), …])``; ``None``
    values are left out."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: set[str] = set()

    def add(self, name: str, kind: str, help_text: str, samples: float | int | bool | list[Sample] | None) -> None:
        assert name.startswith("flcoord_") and name not in self.names, name
        assert kind in ("counter", "gauge"), kind
        assert kind != "counter" or name.endswith("_total"), name
        self.names.add(name)
        self.lines += [f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}",
                       f"# TYPE {name} {kind}"]
        rows: list[Sample] = samples if isinstance(samples, list) else [({}, samples)]
        for labels, value in rows:
            if value is None:
                continue
            lab = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{lab}}} {_number(value)}" if lab else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# ── /proc/self ───────────────────────────────────────────────────────────────────────────────────────────
def process_figures() -> dict[str, float | None]:
    """Resident memory (bytes), open file descriptors, their soft limit and the start time (Unix seconds) of
    this process from /proc/self (``None`` where /proc is not available)."""
    out: dict[str, float | None] = {"rss": None, "fds": None, "max_fds": None, "start": None}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss"] = int(line.split()[1]) * 1024  # kB
                    break
    except OSError:
        pass
    with contextlib.suppress(OSError):
        out["fds"] = len(os.listdir("/proc/self/fd"))
    try:
        with open("/proc/self/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    out["max_fds"] = None if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime, in clock ticks after boot
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        out["start"] = btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return out


def _finite(v: Any) -> float | int | None:
    """A number as it is (ints stay ints), else None; so are inf and NaN (no sample rather than a fake value)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return v if math.isfinite(v) else None


def selectable_clients(engine: Engine) -> int:
    """Ready clients the next selection may pick: not banned, not declined on their connection and (with DP
    noise) within their ε budget after one more round."""
    ready = [c for c in engine.trust.selectable(engine.ready_clients())
             if not engine.conns[engine.by_client[c]].declined]
    return len(engine.within_budget(ready)[0])


def render(engine: Engine, counters: TrafficCounters, events: RecentEvents | None = None,
           started_at: float | None = None, now: float | None = None,
           admission_refusals: Mapping[str, int] | None = None) -> str:
    """The ``/metrics`` page. ``started_at``: when the service started (Unix seconds; for the uptime);
    ``admission_refusals``: the transports' refusals by kind (:attr:`coordinator.service.admission.Admission.counters`)."""
    now = time.time() if now is None else now
    s = engine.status()
    m = s.get("metrics") or {}
    p = s.get("privacy") or {}
    clients = s.get("clients") or []
    rip = s.get("round_in_progress")
    x = Exposition()
    x.add("flcoord_info", "gauge", "The coordinator: its public key and aggregation rule (value 1).",
          [({"coordinator_key": s["coordinator_key"], "aggregator": str(s["aggregator"])}, 1)])
    # rounds
    x.add("flcoord_rounds_completed_total", "counter", "Rounds completed by this federation (the last completed "
          "round; resumed from the store after a restart).", s["round"])
    x.add("flcoord_rounds_started_total", "counter", "Rounds whose secure aggregation started in this process "
          "(selection done, every reveal in); minus the rounds persisted and the one in progress: rounds that "
          "failed after that point.", counters.rounds_started)
    x.add("flcoord_rounds_configured", "gauge", "Rounds the federation is configured to run.", s["rounds"])
    x.add("flcoord_current_round", "gauge", "The round in progress (0 when none).", rip["round"] if rip else 0)
    x.add("flcoord_round_in_progress_groups", "gauge", "Secure-aggregation groups of the round in progress, by "
          "outcome so far.", [({"outcome": "total"}, rip["groups"] if rip else 0),
                              ({"outcome": "failed"}, rip["failed_groups"] if rip else 0)])
    x.add("flcoord_finished", "gauge", "1 when the federation is over (rounds done, budget spent).",
          int(bool(s["finished"])))
    x.add("flcoord_last_round_duration_seconds", "gauge", "Duration of the last completed round (selection to "
          "aggregation).", _finite(m.get("duration")))
    x.add("flcoord_last_round_timestamp_seconds", "gauge", "When the last round completed (Unix time).",
          _finite(m.get("time")))
    x.add("flcoord_last_round_accuracy_ratio", "gauge", "The coordinator's evaluation of the model after the last "
          "round: accuracy (0-1).", _finite(m.get("accuracy")))
    x.add("flcoord_last_round_loss", "gauge", "The coordinator's evaluation of the model after the last round: "
          "loss.", _finite(m.get("loss")))
    x.add("flcoord_last_round_groups", "gauge", "Groups of the last completed round, by outcome.",
          [({"outcome": "total"}, _finite(m.get("groups"))), ({"outcome": "ok"}, _finite(m.get("groups_ok"))),
           ({"outcome": "over_bound"}, _finite(m.get("groups_over_bound"))),
           ({"outcome": "noise_deficient"}, _finite(m.get("groups_noise_deficient")))])
    x.add("flcoord_last_round_survivors", "gauge", "Clients whose input is in the last round's aggregate.",
          _finite(m.get("survivors")))
    # privacy
    x.add("flcoord_epsilon_spent", "gauge", "Privacy spent (epsilon at delta) as the coordinator reports it: "
          "against the coordinator (largest per-client figure) and against third parties.",
          [({"against": "coordinator"}, _finite(p.get("epsilon"))),
           ({"against": "third_party"}, _finite(p.get("epsilon_third_party")))])
    eps = [e for e in (_finite(c.get("epsilon")) for c in clients) if e is not None]
    x.add("flcoord_client_epsilon_max", "gauge", "The largest epsilon of any single client (per-client "
          "accounting, max over the clients).", max(eps) if eps else None)
    x.add("flcoord_epsilon_budget", "gauge", "The per-client epsilon budget (no sample: no budget).",
          _finite(p.get("epsilon_budget")))
    x.add("flcoord_dp_delta", "gauge", "The delta of the privacy figures.", _finite(p.get("delta")))
    x.add("flcoord_noise_multiplier", "gauge", "The distributed DP noise multiplier.",
          _finite(p.get("noise_multiplier")))
    x.add("flcoord_l2_clip", "gauge", "The current L2 clipping norm (follows the quantile with adaptive "
          "clipping).", _finite(p.get("l2_clip")))
    x.add("flcoord_last_round_clip", "gauge", "The clipping norm the last round used.", _finite(m.get("clip")))
    # connections and clients
    by = Counter((c.kind, c.state) for c in engine.conns.values())
    kinds = sorted(set(TRANSPORTS) | {k for k, _ in by})
    states = list(CONN_STATES) + sorted({st for _, st in by} - set(CONN_STATES))
    x.add("flcoord_connections", "gauge", "Open protocol connections by transport and handshake/round state.",
          [({"transport": k, "state": st}, by.get((k, st), 0)) for k in kinds for st in states])
    x.add("flcoord_connections_opened_total", "counter", "Protocol connections opened, by transport.",
          [({"transport": k}, counters.connections_opened.get(k, 0)) for k in kinds])
    x.add("flcoord_clients_registered", "gauge", "Clients the coordinator knows (enrolled identities).",
          len(clients))
    x.add("flcoord_clients_connected", "gauge", "Authenticated clients on their current connection.",
          s["connected"])
    x.add("flcoord_clients_ready", "gauge", "Connected clients that said ready.", s["ready"])
    x.add("flcoord_clients_banned", "gauge", "Clients banned for low trust.", sum(c.get("banned") is True
                                                                                  for c in clients))
    x.add("flcoord_clients_selectable", "gauge", "Ready clients the next selection may pick (not banned, not "
          "declined on their connection, within the epsilon budget).", selectable_clients(engine))
    # traffic
    x.add("flcoord_frames_received_total", "counter", "Protocol frames received, by transport.",
          [({"transport": k}, counters.frames_received.get(k, 0)) for k in kinds])
    x.add("flcoord_frames_sent_total", "counter", "Protocol frames sent, by transport.",
          [({"transport": k}, counters.frames_sent.get(k, 0)) for k in kinds])
    x.add("flcoord_received_bytes_total", "counter", "Bytes of protocol frames received, by transport.",
          [({"transport": k}, counters.bytes_received.get(k, 0)) for k in kinds])
    x.add("flcoord_sent_bytes_total", "counter", "Bytes of protocol frames sent, by transport.",
          [({"transport": k}, counters.bytes_sent.get(k, 0)) for k in kinds])
    x.add("flcoord_frames_rejected_total", "counter", "Frames the engine rejected, by the error code sent back "
          "(protocol errors: bad_format, unsigned, bad_signature, replay, ...).",
          [({"reason": r}, n) for r, n in sorted(counters.rejected.items())])
    x.add("flcoord_admission_refusals_total", "counter", "Connections, frames and handshakes refused by admission "
          "control: by the transports (frame limits, rates, connection caps, origins) and by the engine (enrolment "
          "policy and rate, hello/ready deadlines), by kind.",
          [({"layer": "engine", "kind": k}, n) for k, n in sorted(engine.refusals.items())]
          + [({"layer": "transport", "kind": k}, n) for k, n in sorted((admission_refusals or {}).items())])
    x.add("flcoord_engine_exceptions_total", "counter", "Events the engine raised an exception on (dropped and "
          "logged).", counters.engine_exceptions)
    # persistence
    x.add("flcoord_rounds_persisted_total", "counter", "Rounds committed to the store by this process.",
          counters.rounds_persisted)
    x.add("flcoord_last_persisted_round", "gauge", "The last round committed to the store.",
          counters.last_persisted_round)
    # log
    if events is not None:
        snap = events.snapshot()
        x.add("flcoord_log_messages_total", "counter", "Warnings and errors logged by the coordinator, by level.",
              [({"level": lv}, n) for lv, n in snap["counts"].items()])
        x.add("flcoord_bans_logged_total", "counter", "Ban warnings logged (clients banned while this process "
              "ran).", snap["ban_count"])
    # process
    pf = process_figures()
    x.add("flcoord_process_resident_memory_bytes", "gauge", "Resident memory of the coordinator process.",
          pf["rss"])
    x.add("flcoord_process_open_fds", "gauge", "Open file descriptors of the coordinator process.", pf["fds"])
    x.add("flcoord_process_max_fds", "gauge", "The soft limit on open file descriptors.", pf["max_fds"])
    x.add("flcoord_process_start_time_seconds", "gauge", "When the process started (Unix time).", pf["start"])
    x.add("flcoord_uptime_seconds", "gauge", "Seconds since the service started.",
          None if started_at is None else max(0.0, now - started_at))
    return x.text()


__all__ = ["CONTENT_TYPE", "Exposition", "TrafficCounters", "process_figures", "render", "selectable_clients"]
