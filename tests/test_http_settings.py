"""The ``[http]`` settings of ``fl-coordinator serve`` (coordinator.service.settings.HttpSettings): safe defaults,
TOML values, flags over TOML, invalid values refused with SettingsError, the options of the removed in-flight
budget ignored with a warning, and ``start_service`` wiring them into the HTTP side of the port (the CSP header, the
connection timeouts) – over a real port."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
from pathlib import Path

import pytest

from coordinator.service.http_server import HttpLimits
from coordinator.service.security_headers import DEFAULT_CSP
from coordinator.service.server import start_service
from coordinator.service.settings import HttpSettings, SettingsError, add_serve_arguments, load_settings


def settings(tmp_path: Path, toml: str, *flags: str):
    path = tmp_path / "fl.toml"
    path.write_text(toml)
    p = argparse.ArgumentParser(prog="serve")
    add_serve_arguments(p)
    return load_settings(p.parse_args(["--config", str(path), "--evaluation", "none", *flags]))


def test_defaults(tmp_path: Path) -> None:
    s = settings(tmp_path, "")
    assert s.http == HttpSettings()
    assert (s.http.header_timeout_s, s.http.idle_timeout_s, s.http.send_stall_timeout_s) == (10.0, 30.0, 60.0)
    assert s.http.content_security_policy == ""  # the built-in policy
    assert s.http.limits() == HttpLimits()


def test_values_from_toml_and_flags(tmp_path: Path) -> None:
    policy = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; frame-ancestors 'none'"
    s = settings(tmp_path, f"[http]\nheader_timeout_s = 5\nidle_timeout_s = 7.5\nsend_stall_timeout_s = 120\n"
                           f"content_security_policy = {json.dumps('  ' + policy + ' ')}\n")
    assert s.http == HttpSettings(5.0, 7.5, 120.0, policy)
    limits = s.http.limits()
    assert (limits.header_timeout_s, limits.idle_timeout_s, limits.send_stall_timeout_s) == (5.0, 7.5, 120.0)
    s = settings(tmp_path, "[http]\nheader_timeout_s = 5\nidle_timeout_s = 7.5\n", "--idle-timeout-s", "2",
                 "--send-stall-timeout-s", "9")
    assert (s.http.header_timeout_s, s.http.idle_timeout_s, s.http.send_stall_timeout_s) == (5.0, 2.0, 9.0)


def test_the_removed_budget_options_are_ignored_with_a_warning(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = settings(tmp_path, "[http]\nstatic_inflight_mb = 64\nstatic_wait_s = 1\nidle_timeout_s = 3\n")
    assert s.http == HttpSettings(idle_timeout_s=3.0)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "static_inflight_mb is no longer used" in warned and "static_wait_s is no longer used" in warned


@pytest.mark.parametrize(("toml", "message"), [
    ("[http]\nheader_timeout = 3\n", "[http]: unknown option(s) ['header_timeout']"),
    ("http = 3\n", "[http] must be a table"),
    ("[http]\nheader_timeout_s = 0\n", "header_timeout_s must be in (0, 600]"),
    ("[http]\nheader_timeout_s = 601\n", "header_timeout_s must be in (0, 600]"),
    ("[http]\nidle_timeout_s = -1\n", "idle_timeout_s must be in (0, 3600]"),
    ("[http]\nidle_timeout_s = nan\n", "idle_timeout_s must be in (0, 3600]"),
    ("[http]\nsend_stall_timeout_s = inf\n", "send_stall_timeout_s must be in (0, 3600]"),
    ("[http]\nsend_stall_timeout_s = 'lots'\n", "option send_stall_timeout_s"),
    ("[http]\nsend_stall_timeout_s = true\n", "option send_stall_timeout_s"),
    ("[http]\ncontent_security_policy = \"default-src 'self'\\r\\nX-Evil: 1\"\n", "content_security_policy"),
    ("[http]\ncontent_security_policy = \"default-src 'self' é\"\n", "content_security_policy"),
    ("[http]\ncontent_security_policy = 3\n", "content_security_policy: expected a string"),
    ("[http]\ncontent_security_policy = \"   \"\n", "content_security_policy"),
])
def test_invalid_values_are_refused(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(SettingsError) as e:
        settings(tmp_path, toml)
    assert message in str(e.value)


def _get(port: int, path: str) -> tuple[int, dict[str, str]]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


@pytest.mark.parametrize("policy", ["", "default-src 'none'; frame-ancestors 'none'"])
def test_start_service_applies_them(tmp_path: Path, policy: str) -> None:
    toml = "[http]\nheader_timeout_s = 4\nidle_timeout_s = 5\nsend_stall_timeout_s = 6\n"
    if policy:
        toml += f"content_security_policy = {json.dumps(policy)}\n"
    s = settings(tmp_path, toml, "--data-dir", str(tmp_path / "data"), "--ws-port", "0", "--grpc-port", "0",
                 "--rounds", "1", "--clients-per-round", "1", "--group-size", "1", "--aggregator", "mean")

    async def main() -> tuple[tuple[int, dict[str, str]], object]:
        service = await start_service(s, static={}, index=None)
        try:
            return await asyncio.to_thread(_get, service.ws_port, "/health"), service.ws.http_limits
        finally:
            await service.stop()

    (status, headers), limits = asyncio.run(main())
    assert status == 200 and headers["content-security-policy"] == (policy or DEFAULT_CSP)
    assert headers["x-frame-options"] == "DENY"
    assert (limits.header_timeout_s, limits.idle_timeout_s, limits.send_stall_timeout_s) == (4.0, 5.0, 6.0)
