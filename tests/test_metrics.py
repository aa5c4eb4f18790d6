"""coordinator.service.metrics: the Prometheus text page parses (tests/prometheus_text.py, a strict parser) and the
driver's counters count what passes – frames and bytes per transport, rejected frames by the error code the
coordinator sent back, engine exceptions – with a real engine and no network. The values after a real federation
are checked in tests/test_dashboard_e2e.py."""

from __future__ import annotations

import math
import os
import time

import pytest
from prometheus_text import ParseError, parse

import mle
from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.federation.events import Connected
from coordinator.service.driver import EngineDriver
from coordinator.service.metrics import Exposition, process_figures, render
from coordinator.service.recent_events import RecentEvents
from flcore.modelspec import mlp
from flcore.wire import client_id_for

CLIENT_KEYS = [bytes([i]) * 32 for i in range(1, 4)]
CLIENT_IDS = [client_id_for(k) for k in CLIENT_KEYS]
FAMILIES = {
    "flcoord_info", "flcoord_rounds_completed_total", "flcoord_rounds_started_total", "flcoord_rounds_configured", "flcoord_current_round",
    "flcoord_round_in_progress_groups", "flcoord_finished", "flcoord_last_round_duration_seconds",
    "flcoord_last_round_timestamp_seconds", "flcoord_last_round_accuracy_ratio", "flcoord_last_round_loss",
    "flcoord_last_round_groups", "flcoord_last_round_survivors", "flcoord_epsilon_spent",
    "flcoord_client_epsilon_max", "flcoord_epsilon_budget", "flcoord_dp_delta", "flcoord_noise_multiplier",
    "flcoord_l2_clip", "flcoord_last_round_clip", "flcoord_connections", "flcoord_connections_opened_total",
    "flcoord_clients_registered", "flcoord_clients_connected", "flcoord_clients_ready", "flcoord_clients_banned",
    "flcoord_clients_selectable", "flcoord_frames_received_total", "flcoord_frames_sent_total",
    "flcoord_received_bytes_total", "flcoord_sent_bytes_total", "flcoord_frames_rejected_total",
    "flcoord_engine_exceptions_total", "flcoord_admission_refusals_total", "flcoord_rounds_persisted_total", "flcoord_last_persisted_round",
    "flcoord_log_messages_total", "flcoord_bans_logged_total", "flcoord_process_resident_memory_bytes",
    "flcoord_process_open_fds", "flcoord_process_max_fds", "flcoord_process_start_time_seconds",
    "flcoord_uptime_seconds"}


class ListLink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = ""

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self, reason: str) -> None:
        self.closed = reason


def _driver(noise: float = 0.0) -> EngineDriver:
    cfg = FederationConfig(model=mlp([4, 3]), rounds=2, clients_per_round=2, group_size=1, aggregator="mean",
                           noise_multiplier=noise, epsilon=10.0 if noise else math.inf)
    engine = Engine(cfg, b"\x07" * 32, seed=0, registry=dict(zip(CLIENT_IDS, CLIENT_KEYS, strict=True)))
    return EngineDriver(engine, clock=lambda: 1000.0)


def test_exposition_escapes_label_values_and_leaves_out_missing_values() -> None:
    x = Exposition()
    x.add("flcoord_a_total", "counter", "A counter.\nwith a newline", [({"reason": 'a"b\\c\nd'}, 3)])
    x.add("flcoord_b", "gauge", "Nothing yet.", None)
    x.add("flcoord_c", "gauge", "Special values.", [({"k": "inf"}, math.inf), ({"k": "nan"}, math.nan),
                                                    ({"k": "int"}, 7), ({"k": "float"}, 0.1), ({"k": "bool"}, True)])
    fams = parse(x.text())
    assert fams["flcoord_a_total"].value(reason='a"b\\c\nd') == 3
    assert fams["flcoord_b"].samples == {} and fams["flcoord_b"].type == "gauge"
    c = fams["flcoord_c"].values("k")
    assert c["inf"] == math.inf and math.isnan(c["nan"]) and c["int"] == 7 and c["float"] == 0.1 and c["bool"] == 1
    with pytest.raises(AssertionError):
        x.add("flcoord_not_a_counter", "counter", "Counters end in _total.", 1)
    with pytest.raises(AssertionError):
        x.add("other_prefix", "gauge", "Our names start with flcoord_.", 1)


def test_the_parser_refuses_what_prometheus_would() -> None:
    for bad in ("flcoord_x 1\n", "# TYPE flcoord_x gauge\nflcoord_x 1\n",  # no TYPE first / no HELP
                "# HELP flcoord_x h\n# TYPE flcoord_x gauge\nflcoord_x one\n",
                "# HELP flcoord_x h\n# TYPE flcoord_x gauge\nflcoord_x{a=\"1} 1\n",
                "# HELP flcoord_x h\n# TYPE flcoord_x gauge\nflcoord_x 1\nflcoord_x 2\n",
                "# HELP flcoord_x h\n# TYPE flcoord_x counter\nflcoord_x 1\n",
                "# HELP flcoord_x h\n# TYPE flcoord_x gauge\nflcoord_x 1"):
        with pytest.raises(ParseError):
            parse(bad)


def test_render_of_a_fresh_engine_parses_with_every_family() -> None:
    driver = _driver(noise=0.5)
    events = RecentEvents()
    text = render(driver.engine, driver.counters, events, started_at=time.time() - 5)
    fams = parse(text)
    assert set(fams) == FAMILIES
    assert all(f.help and f.type in ("counter", "gauge") for f in fams.values())
    assert fams["flcoord_rounds_completed_total"].value() == 0
    assert fams["flcoord_rounds_configured"].value() == 2
    assert fams["flcoord_clients_registered"].value() == 3
    assert fams["flcoord_clients_banned"].value() == 0 and fams["flcoord_clients_selectable"].value() == 0
    assert fams["flcoord_last_round_accuracy_ratio"].samples == {}  # no round yet: no sample, not 0
    assert fams["flcoord_epsilon_spent"].value(against="coordinator") == 0
    assert fams["flcoord_noise_multiplier"].value() == 0.5
    assert set(fams["flcoord_connections"].samples.values()) == {0}  # every transport × state, present at 0
    assert len(fams["flcoord_connections"].samples) == 2 * 5
    assert 5 <= fams["flcoord_uptime_seconds"].value() < 60
    info = fams["flcoord_info"].samples
    assert list(info.values()) == [1] and dict(next(iter(info)))["coordinator_key"] == driver.engine.public_key.hex()


def test_driver_counts_frames_bytes_and_rejections_by_the_code_sent_back() -> None:
    driver = _driver()
    ws, grpc = ListLink(), ListLink()
    a = driver.open("websocket", ws)
    b = driver.open("grpc", grpc)
    driver.receive(a, b"\x00" * 100)  # not an .mle file
    unsigned = mle.dumps({}, {"fl": {"v": 1}})
    driver.receive(b, unsigned)  # an .mle file without a signature
    driver.receive(b, unsigned)
    c = driver.counters
    assert c.connections_opened == {"websocket": 1, "grpc": 1}
    assert c.frames_received == {"websocket": 1, "grpc": 2}
    assert c.bytes_received == {"websocket": 100, "grpc": 2 * len(unsigned)}
    assert c.rejected == {"bad_format": 1, "unsigned": 2}
    assert c.frames_sent == {"websocket": len(ws.sent), "grpc": len(grpc.sent)} == {"websocket": 1, "grpc": 2}
    assert c.bytes_sent["grpc"] == sum(map(len, grpc.sent))
    fams = parse(render(driver.engine, c))
    assert fams["flcoord_frames_rejected_total"].values("reason") == {"bad_format": 1, "unsigned": 2}
    assert fams["flcoord_frames_received_total"].values("transport") == {"websocket": 1, "grpc": 2}
    assert fams["flcoord_received_bytes_total"].value(transport="grpc") == 2 * len(unsigned)
    conns = fams["flcoord_connections"]
    assert conns.value(transport="websocket", state="hello") == 1 and conns.value(transport="grpc", state="hello") == 1
    assert "flcoord_log_messages_total" not in fams  # no RecentEvents given
    driver.closed(a)
    assert parse(render(driver.engine, c))["flcoord_connections"].value(transport="websocket", state="hello") == 0


def test_an_engine_exception_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = _driver()
    conn = driver.open("grpc", ListLink())

    def boom(event: object) -> list:
        raise RuntimeError("engine bug")

    monkeypatch.setattr(driver.engine, "handle", boom)
    driver.receive(conn, b"x")
    assert driver.counters.engine_exceptions == 1 and driver.counters.rejected == {}
    assert parse(render(driver.engine, driver.counters))["flcoord_engine_exceptions_total"].value() == 1


def test_admission_refusals_of_the_engine_and_the_transports_are_exported() -> None:
    """The engine's refusals (here: a connection that never said hello, closed by the deadline sweep) and the
    transports' (the shared Admission's counters, here a foreign Origin) appear by layer and kind."""
    from coordinator.federation.events import Close, TimerFired
    from coordinator.service.admission import Admission, LimitSettings

    driver = _driver()
    driver.engine.handle(Connected("ws-1", "websocket", 0.0))
    late = driver.engine.admission.hello_timeout + 1.0
    assert any(isinstance(a, Close) for a in driver.engine.handle(TimerFired("deadline", late)))
    admission = Admission(LimitSettings())
    admission.refused("origin", "Origin http://evil.example")
    fams = parse(render(driver.engine, driver.counters, admission_refusals=admission.counters))
    refusals = fams["flcoord_admission_refusals_total"]
    assert refusals.value(layer="engine", kind="hello_timeout") == 1
    assert refusals.value(layer="transport", kind="origin") == 1


def test_connections_are_counted_by_transport_and_state() -> None:
    driver = _driver()
    for i in range(3):
        driver.engine.handle(Connected(f"grpc-{i + 10}", "grpc", 0.0))
    driver.engine.conns["grpc-10"].state = "ready"
    fams = parse(render(driver.engine, driver.counters))
    assert fams["flcoord_connections"].value(transport="grpc", state="hello") == 2
    assert fams["flcoord_connections"].value(transport="grpc", state="ready") == 1


def test_process_figures_come_from_proc_self() -> None:
    pf = process_figures()
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    assert pf["rss"] is not None and abs(pf["rss"] - rss) < 0.2 * rss
    assert pf["fds"] is not None and abs(pf["fds"] - len(os.listdir("/proc/self/fd"))) <= 2
    assert pf["start"] is not None and time.time() - 7 * 86400 < pf["start"] <= time.time() + 1
    assert pf["max_fds"] is None or pf["max_fds"] >= pf["fds"]
