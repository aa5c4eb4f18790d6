"""The operator view's routes (coordinator.service.dashboard) without a network: ``/dashboard`` is public and has no
data in it (and no inline script or style, nothing from another origin – it must work under ``Content-Security-Policy:
default-src 'self'``); ``/metrics``, ``/status/operator/rounds`` and ``/status/operator/events`` need the operator
token like ``/status/operator`` (401 without, 404 when the operator view is off); ``/status`` stays aggregate-only.
And coordinator.service.recent_events: bounded, messages cut, bans tagged. The browser and a real federation:
tests/test_dashboard_e2e.py."""

from __future__ import annotations

import json
import logging
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from prometheus_text import parse

from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.service import dashboard, recent_events
from coordinator.service.driver import EngineDriver
from coordinator.service.http_routes import HttpRoutes
from coordinator.service.recent_events import RecentEvents
from flcore.modelspec import mlp
from flcore.wire import client_id_for

TOKEN = "dashboard-test-token-0123456789"
CLIENT_KEYS = [bytes([i]) * 32 for i in range(1, 4)]
CLIENT_IDS = [client_id_for(k) for k in CLIENT_KEYS]
OPERATOR_PATHS = ("/metrics", "/status/operator/rounds", "/status/operator/events", "/status/operator")


def _routes(token: str | None = TOKEN) -> tuple[HttpRoutes, dashboard.OperatorView]:
    cfg = FederationConfig(model=mlp([4, 3]), rounds=2, clients_per_round=2, group_size=1, aggregator="mean")
    engine = Engine(cfg, b"\x07" * 32, seed=0, registry=dict(zip(CLIENT_IDS, CLIENT_KEYS, strict=True)))
    engine.history.append({"round": 1, "accuracy": 0.5, "loss": 1.25, "epsilon": None, "clip": 1.0,
                           "duration": 0.5, "time": 1e9, "groups": 2, "groups_ok": 2, "survivors": 2})
    engine.round_number = 1
    view = dashboard.OperatorView(EngineDriver(engine), None, RecentEvents())
    routes = HttpRoutes(engine.status, operator_token=token)
    dashboard.mount(routes, view)
    return routes, view


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, Any]] = []
        self.links: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts.append(a)
            self._in_script = True
        if tag == "style" or "style" in a or any(k.startswith("on") for k in a):
            self.inline.append(f"<{tag} {a}>")
        for k in ("src", "href"):
            if a.get(k):
                self.links.append(str(a[k]))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"inline script: {data[:40]!r}")


def test_the_dashboard_page_is_public_and_holds_no_data() -> None:
    routes, view = _routes()
    engine = view.driver.engine
    r = routes.handle("GET", "/dashboard")
    assert r.status == 200 and r.content_type.startswith("text/html")
    assert routes.handle("GET", "/dashboard/").body == r.body
    text = r.body.decode()
    for secret in [*CLIENT_IDS, *(cid[:8] for cid in CLIENT_IDS), engine.public_key.hex()[:16], "0.5", "1.25"]:
        assert secret not in text
    page = _Page()
    page.feed(text)
    assert page.inline == []  # no inline script, style element, style attribute or event handler
    assert page.scripts == [{"type": "module", "src": "/dashboard/dashboard.js"}]
    assert all(link.startswith("/dashboard/") for link in page.links), page.links  # same origin, no CDN
    js = routes.handle("GET", "/dashboard/dashboard.js")
    css = routes.handle("GET", "/dashboard/dashboard.css")
    assert js.status == 200 and js.content_type == "text/javascript"
    assert css.status == 200 and css.content_type == "text/css"
    code = js.body.decode()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function|"
                         r"setAttribute\(\"style|\.style\.", code)
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", code + css.body.decode())  # only the SVG namespace
    assert "localStorage" not in code and "sessionStorage" in code  # the token lives only as long as the tab
    for path in ("/dashboard/dashboard.py", "/dashboard/../http_routes.py", "/dashboard/%2e%2e/dashboard.py",
                 "/dashboardx", "/dashboard/dashboard.html/"):
        assert routes.handle("GET", path).status == 404, path


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_operator_paths_need_the_token(path: str) -> None:
    routes, _ = _routes()
    for headers in (None, "Bearer wrong-token-0123456789abc", f"Basic {TOKEN}", f"Bearer {TOKEN}x"):
        r = routes.handle("GET", path, authorization=headers)
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer "), headers
        assert not any(cid.encode() in r.body for cid in CLIENT_IDS)
    assert routes.handle("GET", f"{path}?access_token={TOKEN}").status == 401  # never from the query string
    r = routes.handle("GET", path, authorization=f"Bearer {TOKEN}")
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    off, _ = _routes(token=None)
    assert off.handle("GET", path, authorization=f"Bearer {TOKEN}").status == 404  # the operator view is off
    assert routes.handle("POST", path, authorization=f"Bearer {TOKEN}").status == 405


def test_operator_views_with_the_token() -> None:
    routes, view = _routes()
    auth = f"Bearer {TOKEN}"
    m = routes.handle("GET", "/metrics", authorization=auth)
    assert m.content_type == "text/plain; version=0.0.4; charset=utf-8"
    fams = parse(m.body.decode())
    assert fams["flcoord_rounds_completed_total"].value() == 1
    assert fams["flcoord_last_round_accuracy_ratio"].value() == 0.5
    rounds = json.loads(routes.handle("GET", "/status/operator/rounds", authorization=auth).body)
    assert rounds["round"] == 1 and rounds["points"] == [view.driver.engine.history[0]]
    logging.getLogger("fl-coordinator-test").addHandler(view.events)
    try:
        logging.getLogger("fl-coordinator-test").warning("client 0123abcd banned (trust 0.010)")
    finally:
        logging.getLogger("fl-coordinator-test").removeHandler(view.events)
    ev = json.loads(routes.handle("GET", "/status/operator/events", authorization=auth).body)
    assert [e["kind"] for e in ev["events"]] == ["ban"] and ev["ban_count"] == 1 and ev["counts"]["warning"] == 1
    assert [b["message"] for b in ev["bans"]] == ["client 0123abcd banned (trust 0.010)"]
    # /status stays public and aggregate-only with the operator routes mounted
    public = routes.handle("GET", "/status")
    assert public.status == 200 and not any(cid.encode() in public.body for cid in CLIENT_IDS)
    assert b'"clients"' not in public.body and b'"trust"' not in public.body


def test_round_points_are_recomputed_once_per_round() -> None:
    _, view = _routes()
    first = view.round_points()
    assert view.round_points() is first  # cached while no round completes
    view.driver.engine.history.append({"round": 2, "accuracy": float("nan"), "loss": True})
    view.driver.engine.round_number = 2
    points = view.round_points()
    assert len(points) == 2 and points[1]["accuracy"] is None and points[1]["loss"] is None  # JSON-safe values
    assert points[1]["epsilon"] is None


def test_recent_events_are_bounded_cut_and_tagged() -> None:
    log = logging.getLogger("fl-coordinator.recent-events-test")
    log.propagate = False
    handler = recent_events.install(log.name, capacity=5, max_chars=40)
    try:
        log.info("not kept: below warning")
        for i in range(8):
            log.warning("rejected message on websocket-%d (None): bad_format: %s", i, "A" * 10_000)
        log.warning("client 0123abcd banned (trust 0.010)")
        try:
            raise ValueError("disk full\nsecond line")
        except ValueError:
            log.exception("could not persist round %d", 7)
    finally:
        recent_events.uninstall(handler, log.name)
    snap = handler.snapshot()
    assert snap["capacity"] == 5 and len(snap["events"]) == 5  # the last 5 of 10
    assert snap["counts"] == {"warning": 9, "error": 1, "critical": 0} and snap["ban_count"] == 1
    assert all(len(e["message"]) <= 40 for e in snap["events"])
    kinds = [e["kind"] for e in snap["events"]]
    assert kinds == ["warning", "warning", "warning", "ban", "error"]
    assert snap["events"][-1]["message"] == "could not persist round 7 [ValueError: …"
    assert "\n" not in json.dumps([e["message"] for e in snap["events"]]).replace("\\n", "")
    assert [e["seq"] for e in handler.events(after=8)] == [9, 10]
    with pytest.raises(ValueError):
        RecentEvents(capacity=0)


def test_repeats_are_folded_and_bans_outlive_a_flood_of_warnings() -> None:
    log = logging.getLogger("fl-coordinator.recent-events-flood")
    log.propagate = False
    handler = recent_events.install(log.name, capacity=3)
    try:
        log.warning("client 0123abcd banned (trust 0.010)")
        for i in range(1000):
            log.warning("rejected message on websocket-%d: replay", i % 2 + 10)  # two alternating messages
            log.warning("1 banned client(s): round with the 8 clients left")
            log.warning("1 banned client(s): round with the 8 clients left")
    finally:
        recent_events.uninstall(handler, log.name)
    snap = handler.snapshot()
    assert snap["counts"]["warning"] == 3001 and snap["ban_count"] == 1
    assert [e["kind"] for e in snap["events"]] == ["warning"] * 3  # the ban was pushed out of the ring …
    assert [b["message"] for b in snap["bans"]] == ["client 0123abcd banned (trust 0.010)"]  # … not out of bans
    last = snap["events"][-1]
    assert last["message"] == "1 banned client(s): round with the 8 clients left" and last["count"] == 2
    assert last["first_time"] <= last["time"]
