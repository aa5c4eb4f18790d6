"""The operator view end to end: a real ``fl-coordinator serve`` runs three rounds with real native clients (two
over gRPC, one over WebSocket; tests/e2e_support.py), then gets one frame that is not an .mle file on ``/ws``.

* ``/metrics`` parses as Prometheus text (tests/prometheus_text.py) and its values are right: they match the
  operator status, the store's rounds, the clients' own summaries, the bytes we sent and ``/proc/<pid>``;
* the JSON views behind the dashboard need the token and hold what the store holds; ``/status`` stays aggregate-only;
* the dashboard in Debian's Chromium (Playwright, nothing leaves 127.0.0.1), served under
  ``Content-Security-Policy: default-src 'self'``: a wrong token gives a clear 401 message; the right one shows
  charts with one point per round, the clients table, and the rejected frame among the recent warnings; a 404
  (operator view off) gives its own message."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_support import GROUPS_OF_3_POLICY, OPERATOR_TOKEN, Coordinator, Workers
from prometheus_text import Family, parse

pytestmark = pytest.mark.slow

ROUNDS = 3
GARBAGE = b"\x00not an mle file\x00" * 5
FLAGS = ["--rounds", str(ROUNDS), "--clients-per-round", "3", "--group-size", "3", "--aggregator", "mean",
         "--noise-multiplier", "0.5", "--epsilon", "1e6", "--delta", "1e-5", "--phase-timeout", "20"]
BEARER = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@dataclass
class Federation:
    coord: Coordinator
    base: str
    launched: float
    clients: list[dict[str, Any]]  # the workers' per-client summaries
    before: str  # /metrics once the clients were done, before the bad frame
    after: str  # /metrics after it

    def get(self, path: str, token: bool = True) -> tuple[int, dict[str, str], bytes]:
        return _get(self.base + path, BEARER if token else None)

    def json(self, path: str) -> Any:
        status, _, body = self.get(path)
        assert status == 200, body
        return json.loads(body)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    from websockets.sync.client import connect

    tmp = tmp_path_factory.mktemp("dashboard")
    launched = time.time()
    coord = Coordinator(tmp, FLAGS).start()
    workers = Workers()
    try:
        workers.spawn(tmp, f"127.0.0.1:{coord.grpc_port}", [0, 1], 3, "--policy", GROUPS_OF_3_POLICY)
        workers.spawn(tmp, f"127.0.0.1:{coord.ws_port}", [2], 3, "--transport", "websocket",
                      "--policy", GROUPS_OF_3_POLICY)
        clients = workers.wait(180)
        base = f"http://127.0.0.1:{coord.ws_port}"
        before = _get(base + "/metrics", BEARER)[2].decode()
        with connect(f"ws://127.0.0.1:{coord.ws_port}/ws") as ws:  # one frame that is not an .mle file
            ws.send(GARBAGE)
            ws.recv(timeout=10)  # the coordinator's signed `error bad_format`
        after = _get(base + "/metrics", BEARER)[2].decode()
        yield Federation(coord, base, launched, clients, before, after)
    finally:
        workers.kill()
        coord.kill()


def _one(f: Family) -> float:
    (v,) = f.samples.values()
    return v


def test_metrics_values_after_a_real_federation(federation: Federation) -> None:
    status = federation.coord.status()
    assert status["round"] == ROUNDS and status["finished"], status
    assert [c["rounds"] for c in federation.clients] == [list(range(1, ROUNDS + 1))] * 3
    code, headers, body = federation.get("/metrics")
    assert code == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = parse(federation.after)
    assert all(name.startswith("flcoord_") for name in fams)
    m, p = status["metrics"], status["privacy"]
    # rounds and the last round's figures: those of the operator status
    assert _one(fams["flcoord_rounds_completed_total"]) == ROUNDS
    assert _one(fams["flcoord_rounds_configured"]) == ROUNDS
    assert _one(fams["flcoord_current_round"]) == 0 and _one(fams["flcoord_finished"]) == 1
    assert _one(fams["flcoord_last_round_accuracy_ratio"]) == m["accuracy"]
    assert _one(fams["flcoord_last_round_loss"]) == m["loss"]
    assert _one(fams["flcoord_last_round_duration_seconds"]) == m["duration"]
    assert _one(fams["flcoord_last_round_clip"]) == m["clip"]
    assert fams["flcoord_last_round_groups"].values("outcome") == {"total": 1, "ok": 1, "over_bound": 0,
                                                                   "noise_deficient": 0}
    assert _one(fams["flcoord_last_round_survivors"]) == 3
    # privacy: the coordinator's figure is the largest per-client ε
    eps = [c["epsilon"] for c in status["clients"]]
    assert fams["flcoord_epsilon_spent"].value(against="coordinator") == p["epsilon"] == max(eps) > 0
    assert fams["flcoord_epsilon_spent"].value(against="third_party") == p["epsilon_third_party"]
    assert _one(fams["flcoord_client_epsilon_max"]) == max(eps)
    assert _one(fams["flcoord_epsilon_budget"]) == 1e6 and _one(fams["flcoord_noise_multiplier"]) == 0.5
    assert _one(fams["flcoord_l2_clip"]) == p["l2_clip"]
    # clients: all three registered, none banned; they left after the last round
    assert _one(fams["flcoord_clients_registered"]) == len(status["clients"]) == 3
    assert _one(fams["flcoord_clients_banned"]) == 0 and _one(fams["flcoord_clients_connected"]) == 0
    assert set(fams["flcoord_connections"].samples.values()) == {0}
    reconnects = sum(c["reconnects"] for c in federation.clients)
    assert reconnects == 0, federation.clients
    before, after = parse(federation.before), fams
    assert before["flcoord_connections_opened_total"].values("transport") == {"grpc": 2, "websocket": 1}
    assert after["flcoord_connections_opened_total"].values("transport") == {"grpc": 2, "websocket": 2}
    # traffic: each client sent hello, auth, then per round ready, reveal and its SecAgg+ messages
    recv = before["flcoord_frames_received_total"].values("transport")
    assert recv["grpc"] >= 2 * (2 + 4 * ROUNDS) and recv["websocket"] >= 2 + 4 * ROUNDS
    assert before["flcoord_frames_rejected_total"].samples == {}  # the real clients sent nothing wrong
    rbytes = before["flcoord_received_bytes_total"].values("transport")
    sbytes = before["flcoord_sent_bytes_total"].values("transport")
    assert rbytes["grpc"] > 100 * recv["grpc"] and sbytes["grpc"] > 0 and sbytes["websocket"] > 0
    # … and the bad frame: exactly one more frame of exactly its size, rejected as bad_format, answered once
    assert after["flcoord_frames_received_total"].value(transport="websocket") == recv["websocket"] + 1
    assert after["flcoord_received_bytes_total"].value(transport="websocket") == rbytes["websocket"] + len(GARBAGE)
    assert after["flcoord_frames_received_total"].value(transport="grpc") == recv["grpc"]
    assert after["flcoord_frames_rejected_total"].values("reason") == {"bad_format": 1}
    sent = before["flcoord_frames_sent_total"].value(transport="websocket")
    assert after["flcoord_frames_sent_total"].value(transport="websocket") == sent + 1
    assert (after["flcoord_log_messages_total"].value(level="warning")
            == before["flcoord_log_messages_total"].value(level="warning") + 1)
    assert _one(after["flcoord_engine_exceptions_total"]) == 0
    # persistence: every round committed, as the store says
    assert _one(fams["flcoord_rounds_persisted_total"]) == ROUNDS == _one(fams["flcoord_rounds_started_total"])
    assert _one(fams["flcoord_last_persisted_round"]) == ROUNDS
    # the process: /proc/<pid> of the coordinator, read by us
    pid = federation.coord.proc.pid
    rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    assert abs(_one(fams["flcoord_process_resident_memory_bytes"]) - rss) < 0.25 * rss
    assert abs(_one(fams["flcoord_process_open_fds"]) - len(os.listdir(f"/proc/{pid}/fd"))) <= 5
    assert federation.launched - 2 <= _one(fams["flcoord_process_start_time_seconds"]) <= federation.launched + 30
    assert 0 < _one(fams["flcoord_uptime_seconds"]) <= time.time() - federation.launched + 1
    for headers_ in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef"}):
        code, h, body = _get(federation.base + "/metrics", headers_)
        assert code == 401 and h["www-authenticate"].startswith("Bearer ") and b"flcoord_" not in body


def test_operator_json_views_and_the_public_status(federation: Federation) -> None:
    status = federation.coord.status()
    ids = [c["id"] for c in status["clients"]]
    rounds = federation.json("/status/operator/rounds")
    assert [q["round"] for q in rounds["points"]] == list(range(1, ROUNDS + 1))
    assert rounds["points"][-1]["accuracy"] == status["metrics"]["accuracy"]
    eps = [q["epsilon"] for q in rounds["points"]]
    assert eps == sorted(eps) and eps[-1] == status["privacy"]["epsilon"]
    events = federation.json("/status/operator/events")
    rejected = [e for e in events["events"] if "bad_format" in e["message"]]
    assert len(rejected) == 1 and rejected[0]["level"] == "warning" and rejected[0]["kind"] == "warning"
    assert events["counts"]["error"] == 0 and events["ban_count"] == 0 and events["bans"] == []
    for path in ("/status/operator/rounds", "/status/operator/events", "/status/operator"):
        code, _, body = federation.get(path, token=False)
        assert code == 401 and not any(cid.encode() in body for cid in ids), path
    secrets = [cid[:8] for cid in ids] + [repr(c["trust"]) for c in status["clients"]]
    for path in ("/status", "/dashboard", "/dashboard/dashboard.js"):
        code, _, body = federation.get(path, token=False)
        assert code == 200 and not any(s.encode() in body for s in secrets), path
    public = json.loads(federation.get("/status", token=False)[2])
    assert "clients" not in public and public["client_counts"] == {"registered": 3, "connected": 0, "banned": 0}
    page = federation.get("/dashboard", token=False)[2].decode()
    assert repr(status["metrics"]["accuracy"]) not in page and status["coordinator_key"][:16] not in page


@pytest.mark.browser
def test_dashboard_in_chromium_under_a_strict_csp(federation: Federation) -> None:
    from browser_support import launch_browser, wait_in_page
    from playwright.sync_api import sync_playwright

    status = federation.coord.status()
    base = federation.base
    external: list[str] = []
    problems: list[str] = []

    def with_csp(route: Any) -> None:
        """Our origin only, every response under CSP default-src 'self' (whatever headers the server sends)."""
        if not route.request.url.startswith(base + "/"):
            external.append(route.request.url)
            route.abort()
            return
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers,
                                                  "content-security-policy": "default-src 'self'"})

    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            def watched(**kw: Any) -> Any:
                p = browser.new_page(**kw)
                p.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
                p.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
                return p

            page = watched(viewport={"width": 1280, "height": 900})
            page.route("**/*", with_csp)
            page.goto(base + "/dashboard")
            assert page.evaluate("() => window.flDashboard.status") == "login"
            # the policy is in force (an inline script is refused), and the page still runs
            inline_ran = page.evaluate("""() => { const s = document.createElement("script");
                s.textContent = "window.inlineRan = true"; document.head.append(s); return !!window.inlineRan; }""")
            assert inline_ran is False
            assert any("Content Security Policy" in p for p in problems), problems  # the refusal is logged
            problems.clear()
            assert page.is_visible("#login") and not page.is_visible("#board")
            # a wrong token: a clear 401 message, no data
            page.fill("#token", "wrong-token-0123456789abcdef")
            page.click("#token-form button[type=submit]")
            wait_in_page(page, lambda: page.evaluate("() => window.flDashboard.status") == "unauthorized", 15,
                         "the 401 message")
            assert page.is_visible("#auth-error") and "401" in page.inner_text("#auth-error")
            assert not page.is_visible("#board") and page.evaluate("() => sessionStorage.length") == 0
            problems[:] = [p for p in problems if "401" not in p]  # the refused fetch itself is logged
            # the right token
            page.fill("#token", OPERATOR_TOKEN)
            page.click("#token-form button[type=submit]")
            wait_in_page(page, lambda: page.evaluate("() => window.flDashboard.polls") >= 1, 15, "the first poll",
                         federation.coord.log_text)
            assert page.is_visible("#board") and not page.is_visible("#auth-error")
            state = page.evaluate("() => window.flDashboard")
            assert state["points"] == {"accuracy": ROUNDS, "loss": ROUNDS, "epsilon": ROUNDS, "clip": ROUNDS}
            for chart in ("accuracy", "loss", "epsilon", "clip"):
                assert page.locator(f"#chart-{chart} circle.pt").count() == ROUNDS, chart
                assert page.get_attribute(f"#chart-{chart} svg", "data-points") == str(ROUNDS)
            rounds_drawn = page.eval_on_selector_all("#chart-epsilon circle.pt", "cs => cs.map(c => c.dataset.round)")
            assert rounds_drawn == [str(r) for r in range(1, ROUNDS + 1)]
            rows = page.eval_on_selector_all("#clients tbody tr", "rs => rs.map(r => [...r.cells].map(c => "
                                             "c.textContent.trim()))")
            assert [r[0] for r in rows] == [c["id"][:12] for c in status["clients"]]
            assert all(r[2] == "offline" and r[4] == "no" for r in rows), rows
            assert page.inner_text("#c-round") == f"{ROUNDS} / {ROUNDS}"
            assert "bad_format" in page.inner_text("#events") and page.inner_text("#bans") == "no client banned"
            assert page.evaluate("() => sessionStorage.getItem('flOperatorToken')") == OPERATOR_TOKEN
            assert page.evaluate("() => localStorage.length") == 0
            page.click("#logout")
            assert page.is_visible("#login") and page.evaluate("() => sessionStorage.length") == 0
            page.close()
            # a coordinator without an operator token answers 404 on the operator views: the page says so
            off = watched()

            def operator_view_off(route: Any) -> None:
                if route.request.url.startswith(base + "/status/operator"):
                    route.fulfill(status=404, content_type="application/json", body='{"error": "not_found"}')
                else:
                    with_csp(route)

            off.route("**/*", operator_view_off)
            off.goto(base + "/dashboard")
            off.fill("#token", OPERATOR_TOKEN)
            off.click("#token-form button[type=submit]")
            wait_in_page(off, lambda: off.evaluate("() => window.flDashboard.status") == "disabled", 15,
                         "the disabled message")
            assert "disabled" in off.inner_text("#auth-error") and not off.is_visible("#board")
            problems[:] = [p for p in problems if "404" not in p]  # the refused fetches themselves are logged
        finally:
            browser.close()
    assert external == []
    assert problems == [], problems  # no CSP violation, no script error
