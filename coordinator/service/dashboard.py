"""The operator view served by ``fl-coordinator serve``: a dashboard page and the data behind it, and ``/metrics``.

| path | access | content |
|---|---|---|
| ``/dashboard`` (and ``/dashboard/``) | public | ``dashboard/dashboard.html``: a static page with **no data in it**; it asks for the operator token (kept in the tab's ``sessionStorage``) and fetches the three JSON views below with ``Authorization: Bearer`` |
| ``/dashboard/dashboard.js``, ``/dashboard/dashboard.css`` | public | its script and style sheet (no inline script or style, no CDN: the page works under ``Content-Security-Policy: default-src 'self'``); charts are inline SVG built by the script |
| ``/status/operator`` | operator token | the engine's full status (:mod:`coordinator.service.http_routes`): clients with trust and state |
| ``/status/operator/rounds`` | operator token | per completed round (the last :data:`MAX_POINTS`): ``round, accuracy, loss, epsilon, clip, duration, time, groups, groups_ok, survivors`` |
| ``/status/operator/events`` | operator token | :meth:`coordinator.service.recent_events.RecentEvents.snapshot`: recent warnings, errors and bans |
| ``/metrics`` | operator token | Prometheus text format 0.0.4 (:mod:`coordinator.service.metrics`) |

Every operator path is 401 without the token and 404 when no operator token is configured (the operator view is
off), exactly like ``/status/operator``; ``/status`` stays public and aggregate-only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.service import metrics
from coordinator.service.driver import EngineDriver
from coordinator.service.http_routes import HttpResponse, HttpRoutes, _file, json_response
from coordinator.service.recent_events import RecentEvents
from coordinator.service.store import Store

STATIC = Path(__file__).resolve().with_name("dashboard")
PAGE, PREFIX = "/dashboard", "/dashboard"
FILES = {"": "dashboard.html", "/": "dashboard.html", "/dashboard.js": "dashboard.js",
         "/dashboard.css": "dashboard.css"}
ROUNDS_PATH, EVENTS_PATH, METRICS_PATH = "/status/operator/rounds", "/status/operator/events", "/metrics"
MAX_POINTS = 1000  # rounds sent to the dashboard's charts (the most recent ones)
SERIES = ("round", "accuracy", "loss", "epsilon", "clip", "duration", "time", "groups", "groups_ok", "survivors")


def page(rest: str, query: str) -> HttpResponse | None:
    """``/dashboard`` and its two static files (a fixed list: nothing else under the prefix is served)."""
    name = FILES.get(rest)
    return None if name is None else _file(STATIC / name)


def _point(m: dict[str, Any]) -> dict[str, Any]:
    def value(v: Any) -> Any:
        return v if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None

    return {k: value(m.get(k)) for k in SERIES}


@dataclass
class OperatorView:
    """The data behind the dashboard and ``/metrics`` (each method is a response of an operator route)."""

    driver: EngineDriver
    store: Store | None = None
    events: RecentEvents = field(default_factory=RecentEvents)
    started_at: float = field(default_factory=time.time)
    # the transports' admission refusals by kind (coordinator.service.admission.Admission.counters), when known
    admission_refusals: dict[str, int] | None = None
    _rounds: tuple[int, list[dict[str, Any]]] = (-1, [])  # (engine round, points) – recomputed once per round

    def round_points(self) -> list[dict[str, Any]]:
        """One point per completed round, from the store (it survives restarts, whatever history the engine
        keeps in memory) – the engine's history without a store; re-read only after a round completes."""
        engine = self.driver.engine
        if self._rounds[0] != engine.round_number:
            history = [m for _, m in self.store.metrics()] if self.store is not None else list(engine.history)
            self._rounds = (engine.round_number, [_point(m) for m in history[-MAX_POINTS:]])
        return self._rounds[1]

    def rounds(self) -> HttpResponse:
        points = self.round_points()
        return json_response({"round": self.driver.engine.round_number, "points": points,
                              "max_points": MAX_POINTS})

    def recent(self) -> HttpResponse:
        return json_response(self.events.snapshot())

    def metrics(self) -> HttpResponse:
        text = metrics.render(self.driver.engine, self.driver.counters, self.events, self.started_at,
                              admission_refusals=self.admission_refusals)
        return HttpResponse(200, metrics.CONTENT_TYPE, text.encode(), {"Cache-Control": "no-store"})


def mount(routes: HttpRoutes, view: OperatorView) -> None:
    """Add the dashboard page (public) and the operator routes (token) to ``routes``."""
    routes.handlers[PREFIX] = page
    routes.operator_routes.update({ROUNDS_PATH: view.rounds, EVENTS_PATH: view.recent, METRICS_PATH: view.metrics})


__all__ = ["MAX_POINTS", "OperatorView", "mount", "page"]
