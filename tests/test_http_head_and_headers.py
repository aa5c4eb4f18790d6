"""The HTTP side of the WebSocket port, over the real port: HEAD is GET without the body (issue 13, F20), and every
response carries the security headers (F18): Content-Security-Policy (the demo page's inline import map allowed by
its hash, an operator's policy sent verbatim), X-Frame-Options DENY + frame-ancestors 'none', nosniff, no referrer;
a 304 keeps the file's caching headers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from e2e_support import http_get

from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.service.driver import EngineDriver
from coordinator.service.http_routes import HttpRoutes
from coordinator.service.security_headers import DEFAULT_CSP, csp_for, inline_script_hashes
from coordinator.service.transport_ws import WebSocketTransport
from flcore.modelspec import mlp

IMPORT_MAP = '{"imports": {"pyodide": "/sdk/p.mjs"}}'
PAGE = f'<!doctype html><script type="importmap">{IMPORT_MAP}</script><script type="module" src="/sdk/a.js"></script>'
PATHS = ("/", "/health", "/status", "/sdk/a.js", "/sdk/k.wasm", "/nope", "/status/operator")


@pytest.fixture()
def site(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "sdk"
    root.mkdir()
    (root / "a.js").write_text("export const a = 1;\n" * 2000)  # 40 KB: above the budget's counting threshold
    (root / "k.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00")
    index = tmp_path / "index.html"
    index.write_text(PAGE)
    return root, index


def _serve(routes: HttpRoutes, calls: list[tuple[str, str, dict[str, str] | None]]
           ) -> list[tuple[int, dict[str, str], bytes]]:
    async def main() -> list[tuple[int, dict[str, str], bytes]]:
        engine = Engine(FederationConfig(model=mlp([4, 3]), rounds=2, clients_per_round=2, group_size=1,
                                         aggregator="mean"), b"\x07" * 32, seed=0)
        routes.status = engine.status
        ws = WebSocketTransport(EngineDriver(engine), routes, 1 << 20)
        port = await ws.start("127.0.0.1", 0)
        try:
            return [await asyncio.to_thread(http_get, port, p, h, m) for m, p, h in calls]
        finally:
            await ws.stop()

    return asyncio.run(main())


def test_head_is_get_without_the_body(site: tuple[Path, Path]) -> None:
    root, index = site
    routes = HttpRoutes(dict, {"/sdk/": root}, index, operator_token="op-token-0123456789abcdef")
    got = _serve(routes, [(m, p, None) for p in PATHS for m in ("GET", "HEAD")])
    for k, path in enumerate(PATHS):
        (gs, gh, gb), (hs, hh, hb) = got[2 * k], got[2 * k + 1]
        assert hs == gs and hb == b"", path  # 200, 401 or 404 alike – and never a body
        assert int(hh["content-length"]) == len(gb), path
        for name in ("content-type", "etag", "cache-control", "content-security-policy", "www-authenticate"):
            assert hh.get(name) == gh.get(name), (path, name)
    assert got[1][0] == 200 and got[7][0] == 200  # HEAD / and HEAD /sdk/a.js: 405 before


def test_every_response_has_the_security_headers(site: tuple[Path, Path]) -> None:
    root, index = site
    routes = HttpRoutes(dict, {"/sdk/": root}, index)
    calls = [("GET", p, None) for p in PATHS] + [("POST", "/health", None), ("HEAD", "/sdk/a.js", None)]
    got = _serve(routes, calls)
    etag = got[3][1]["etag"]
    got += _serve(routes, [("GET", "/sdk/a.js", {"If-None-Match": etag})])
    assert got[-1][0] == 304 and got[-1][1]["cache-control"] == "no-cache"
    for (method, path, _), (status, h, _) in zip([*calls, ("GET", "/sdk/a.js 304", None)], got, strict=True):
        assert h["x-frame-options"] == "DENY", (method, path, status)
        assert h["x-content-type-options"] == "nosniff" and h["referrer-policy"] == "no-referrer", path
        csp = h["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp, path
        assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0], path  # no inline script
        assert "'unsafe-eval'" not in csp and "'wasm-unsafe-eval'" in csp, path
    # the page: its inline import map is allowed by its own hash, nothing else inline
    page_csp = got[0][1]["content-security-policy"]
    (digest,) = inline_script_hashes(PAGE.encode())
    assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]+' 'wasm-unsafe-eval'", page_csp)
    assert digest in page_csp and page_csp == csp_for("text/html", PAGE.encode())
    assert got[1][1]["content-security-policy"] == DEFAULT_CSP  # JSON: no hashes


def test_an_operator_policy_is_sent_verbatim(site: tuple[Path, Path]) -> None:
    root, index = site
    policy = "default-src 'none'; frame-ancestors 'none'"
    got = _serve(HttpRoutes(dict, {"/sdk/": root}, index, csp=policy), [("GET", "/", None), ("GET", "/health", None)])
    assert [h["content-security-policy"] for _, h, _ in got] == [policy, policy]
    assert all(h["x-frame-options"] == "DENY" for _, h, _ in got)


def test_inline_script_hashes() -> None:
    html = (b'<script>a()</script><SCRIPT type="importmap">\n{}\n</SCRIPT><script src="x.js"></script>'
            b"<script>a()</script>")
    assert inline_script_hashes(html) == ["'sha256-qVpDBgj7bpq5hMAcGp3AOc79J3Y1Z4HvySTwKrWDoy4='",
                                          "'sha256-mStsuk6tXQZUQnBANrxib2jrZTl4uAW3mHJbbb97898='"]
