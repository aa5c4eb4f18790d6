"""The ``[http]`` settings of ``fl-coordinator serve`` (coordinator.service.settings.HttpSettings): safe defaults,
TOML values, invalid values refused with SettingsError, and ``start_service`` wiring them into the HTTP side of
the port (the CSP header, the static-bytes budget) – over a real port."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
from pathlib import Path

import pytest

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
    assert (s.http.static_inflight_mb, s.http.static_inflight_per_ip_mb, s.http.static_wait_s) == (128.0, 48.0, 3.0)
    assert s.http.content_security_policy == ""  # the built-in policy


def test_values_from_toml(tmp_path: Path) -> None:
    policy = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; frame-ancestors 'none'"
    s = settings(tmp_path, f"[http]\nstatic_inflight_mb = 64\nstatic_inflight_per_ip_mb = 16.5\nstatic_wait_s = 0\n"
                           f"content_security_policy = {json.dumps('  ' + policy + ' ')}\n")
    assert s.http == HttpSettings(64.0, 16.5, 0.0, policy)
    assert s.http.static_inflight_bytes == 64 << 20 and s.http.static_inflight_per_ip_bytes == int(16.5 * (1 << 20))


@pytest.mark.parametrize(("toml", "message"), [
    ("[http]\nstatic_inflight = 3\n", "[http]: unknown option(s) ['static_inflight']"),
    ("http = 3\n", "[http] must be a table"),
    ("[http]\nstatic_inflight_mb = 0\n", "static_inflight_mb must be in (0, 65536]"),
    ("[http]\nstatic_inflight_mb = -1\n", "static_inflight_mb must be in (0, 65536]"),
    ("[http]\nstatic_inflight_mb = nan\n", "static_inflight_mb must be in (0, 65536]"),
    ("[http]\nstatic_inflight_mb = inf\n", "static_inflight_mb must be in (0, 65536]"),
    ("[http]\nstatic_inflight_mb = 'lots'\n", "option static_inflight_mb"),
    ("[http]\nstatic_inflight_mb = true\n", "option static_inflight_mb"),
    ("[http]\nstatic_inflight_mb = 8\nstatic_inflight_per_ip_mb = 9\n", "must not exceed static_inflight_mb"),
    ("[http]\nstatic_wait_s = 9\n", "static_wait_s must be in [0, 8]"),
    ("[http]\nstatic_wait_s = -1\n", "static_wait_s must be in [0, 8]"),
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
    toml = "[http]\nstatic_inflight_mb = 20\nstatic_inflight_per_ip_mb = 10\nstatic_wait_s = 0.5\n"
    if policy:
        toml += f"content_security_policy = {json.dumps(policy)}\n"
    s = settings(tmp_path, toml, "--data-dir", str(tmp_path / "data"), "--ws-port", "0", "--grpc-port", "0",
                 "--rounds", "1", "--clients-per-round", "1", "--group-size", "1", "--aggregator", "mean")

    async def main() -> tuple[tuple[int, dict[str, str]], object]:
        service = await start_service(s, static={}, index=None)
        try:
            return await asyncio.to_thread(_get, service.ws_port, "/health"), service.ws.routes.inflight
        finally:
            await service.stop()

    (status, headers), budget = asyncio.run(main())
    assert status == 200 and headers["content-security-policy"] == (policy or DEFAULT_CSP)
    assert headers["x-frame-options"] == "DENY"
    assert (budget.limit, budget.per_peer_limit, budget.wait) == (20 << 20, 10 << 20, 0.5)
