"""The pure parts of admission control (issue 13 F1, F10, F11, F12): token buckets, connection and buffered-byte
accounting, refusals logged once per interval, the log filter (line length, repeats) and the ``[limits]``
settings."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import pytest

from coordinator.service.admission import Admission, LimitSettings, TokenBucket, is_loopback, peer_ip
from coordinator.service.log_hygiene import LogHygiene
from coordinator.service.settings import SettingsError, add_serve_arguments, load_settings


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_burst_then_rate() -> None:
    b = TokenBucket(rate=10, burst=5)
    assert [b.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert b.take(0.1) and not b.take(0.1)  # one token back after 0.1 s at 10/s
    assert sum(b.take(100.0) for _ in range(10)) == 5  # never more than the burst


def test_peer_addresses() -> None:
    assert peer_ip(("10.0.0.1", 5)) == "10.0.0.1"
    assert peer_ip("ipv4:10.0.0.1:443") == "10.0.0.1"
    assert peer_ip("ipv6:[::1]:443") == "::1"
    assert is_loopback("127.3.2.1") and is_loopback("::1") and not is_loopback("10.0.0.1")


def test_connection_caps_per_ip_and_global_with_loopback_exempt_from_per_ip_only() -> None:
    a = Admission(LimitSettings(max_connections=5, max_connections_per_ip=2), clock=Clock())
    assert [a.open("10.0.0.1") for _ in range(3)][2] is not None  # third from one IP refused
    assert all(a.open("127.0.0.1") is None for _ in range(3))  # loopback: only the global cap
    assert a.open("10.0.0.2") is not None and a.counters == {"connections_per_ip": 1, "connections": 1}
    for ip in ("10.0.0.1", "10.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1"):
        a.close(ip)
    assert a.connections == 0 and a.peers() == 0  # per-IP state is freed with its last connection


def test_the_default_connection_cap_follows_the_open_file_limit() -> None:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert LimitSettings().connection_cap() == max(64, min(soft, 65536) - 128)
    assert LimitSettings(max_connections=7).connection_cap() == 7


def test_per_ip_message_rate_is_shared_and_per_connection_rate_is_not() -> None:
    clock = Clock()
    a = Admission(LimitSettings(conn_msg_burst=3, conn_msg_rate=1, ip_msg_burst=5, ip_msg_rate=1,
                                exempt_loopback=False), clock=clock)
    a.open("10.0.0.1"), a.open("10.0.0.1")
    one, two = a.connection_bucket(), a.connection_bucket()
    assert [a.allow_message(one, "10.0.0.1") for _ in range(4)][:3] == [None] * 3
    assert "one connection" in (a.allow_message(one, "10.0.0.1") or "")
    assert [a.allow_message(two, "10.0.0.1") is None for _ in range(3)] == [True, True, False]  # 5 from the IP
    assert a.counters == {"message_rate": 2, "message_rate_per_ip": 1}
    clock.t += 2.0
    assert a.allow_message(two, "10.0.0.1") is None


def test_buffered_bytes_are_accounted_per_connection_and_released() -> None:
    a = Admission(LimitSettings(max_buffered_mb=1.0), clock=Clock())
    assert a.set_buffered("x", 600_000) and a.set_buffered("y", 400_000)
    assert not a.set_buffered("y", 500_000)  # 1.1 MB > 1 MiB: the one that crosses it is refused
    assert a.set_buffered("x", 100_000)  # shrinking is always fine
    a.open("10.0.0.1")
    a.close("10.0.0.1", key="y")
    assert a.buffered == 100_000 and a.counters["buffered_bytes"] == 1


def test_refusals_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    a = Admission(LimitSettings(max_connections=1), clock=clock)
    a.open("10.0.0.1")
    with caplog.at_level(logging.WARNING, "fl-coordinator.admission"):
        for _ in range(1000):
            a.open("10.0.0.2")
        clock.t += 61
        a.open("10.0.0.2")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "999 more since the last report" in lines[1]
    assert a.counters["connections"] == 1001


def _record(msg: str, *args: object, name: str = "fl-coordinator") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_log_records_are_cut_to_the_limit() -> None:
    f = LogHygiene(max_chars=2000)
    r = _record("rejected message: %s", "A" * 15_000_000)
    assert f.filter(r) and len(r.getMessage()) <= 2000 and r.getMessage().endswith("… (15000018 chars)")
    try:
        raise ValueError("B" * 100_000)
    except ValueError:
        import sys

        r = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert f.filter(r) and len(logging.Formatter().format(r)) <= 2100


def test_repeats_of_one_template_are_suppressed_then_summarised() -> None:
    clock = Clock()
    f = LogHygiene(max_chars=2000, per_window=10, window=60.0, clock=clock)
    kept = [r.getMessage() for i in range(1000)
            if f.filter(r := _record(f"rejected message on websocket-{i} (client {i:08x}ab): bad signature"))]
    assert len(kept) == 11 and "suppressing" in kept[-1]
    assert f.filter(_record("another message")), "other templates are not affected"
    clock.t += 60
    r = _record("rejected message on websocket-5000 (client 0000abcdab): bad signature")
    assert f.filter(r) and "989 similar messages suppressed" in r.getMessage()


def _settings(tmp_path: Path, toml: str | None, *flags: str):
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    args = list(flags)
    if toml is not None:
        (tmp_path / "s.toml").write_text(toml)
        args = ["--config", str(tmp_path / "s.toml"), *args]
    return load_settings(p.parse_args([*args, "--evaluation", "none"]))


def test_limits_from_toml_and_flags(tmp_path: Path) -> None:
    assert _settings(tmp_path, None).limits == LimitSettings()
    values = {"pre_auth_max_frame_kb": 32, "max_buffered_mb": 64.0, "max_connections": 900,
              "max_connections_per_ip": 50, "exempt_loopback": False, "conn_msg_rate": 20.0, "conn_msg_burst": 40,
              "ip_msg_rate": 100.0, "ip_msg_burst": 200, "grpc_max_streams_per_connection": 2,
              "close_timeout": 1.5, "log_line_max_chars": 500, "log_repeats_per_minute": 5}
    assert set(values) == {f.name for f in dataclasses.fields(LimitSettings)}
    toml = "[limits]\n" + "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in values.items())
    assert dataclasses.asdict(_settings(tmp_path, toml).limits) == values
    flags = [x for k, v in values.items() if k != "exempt_loopback" for x in ("--" + k.replace("_", "-"), str(v))]
    assert dataclasses.asdict(_settings(tmp_path, None, "--no-exempt-loopback", *flags).limits) == values


@pytest.mark.parametrize(("toml", "needle"), [
    ("[limits]\nmax_conections = 3\n", "[limits]: unknown option(s) ['max_conections']"),
    ("[limits]\nconn_msg_rate = 0\n", "conn_msg_rate must be > 0"),
    ("[limits]\nmax_connections_per_ip = 0\n", "max_connections_per_ip must be >= 1"),
    ("limits = 3\n", "[limits] must be a table"),
    ("[server]\nallowed_origins = ['evil.example']\n", "allowed_origins: 'evil.example'"),
])
def test_bad_limits_are_refused(tmp_path: Path, toml: str, needle: str) -> None:
    with pytest.raises(SettingsError) as exc:
        _settings(tmp_path, toml)
    assert needle in str(exc.value)
