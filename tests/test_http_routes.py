"""coordinator.http_routes: /health, /status JSON, static files (content types), path traversal refused, methods;
and the same routes through the real WebSocket transport (HTTP on the WebSocket port)."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
from pathlib import Path

import pytest

from coordinator.config import FederationConfig
from coordinator.driver import EngineDriver
from coordinator.engine import Engine
from coordinator.http_routes import HttpRoutes
from coordinator.transport_ws import WebSocketTransport
from flcore.modelspec import mlp


def _engine() -> Engine:
    cfg = FederationConfig(model=mlp([4, 3]), rounds=2, clients_per_round=2, group_size=1, aggregator="mean")
    return Engine(cfg, b"\x07" * 32, seed=0)


@pytest.fixture()
def site(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "sdk"
    (root / "sub").mkdir(parents=True)
    (root / "flkernel.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00")
    (root / "runtime.js").write_text("export const x = 1;\n")
    (root / "sub" / "mod.mjs").write_text("export default 2;\n")
    (root / "data.bin").write_bytes(b"\x01\x02")
    (root / "flcore.py").write_text("x = 1\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    os.symlink(secret, root / "escape.txt")  # a symlink inside the root pointing out of it
    os.symlink(root / "runtime.js", root / "alias.js")  # a symlink that stays inside
    index = tmp_path / "index.html"
    index.write_text("<!doctype html><title>fl</title>\n")
    return {"root": root, "index": index, "secret": secret}


def _routes(site: dict[str, Path], engine: Engine | None = None) -> HttpRoutes:
    engine = engine or _engine()
    return HttpRoutes(engine.status, {"/sdk/": site["root"]}, site["index"])


def test_health_and_status_are_strict_json(site: dict[str, Path]) -> None:
    engine = _engine()
    routes = _routes(site, engine)
    r = routes.handle("GET", "/health")
    assert r.status == 200 and r.content_type == "application/json"
    assert json.loads(r.body) == {"ok": True, "round": 0, "finished": False}
    r = routes.handle("GET", "/status?verbose=1")  # the query string is ignored
    assert r.status == 200 and r.content_type == "application/json" and r.headers["Cache-Control"] == "no-store"

    def no_constants(name: str) -> float:
        raise AssertionError(f"non-standard JSON constant {name}")

    status = json.loads(r.body, parse_constant=no_constants)
    assert status["round"] == 0 and status["rounds"] == 2 and status["finished"] is False
    assert status["privacy"]["epsilon"] == 0.0 and status["privacy"]["epsilon_budget"] is None  # ε = ∞ → null
    assert status["coordinator_key"] == engine.public_key.hex()
    assert status["clients"] == [] and status["connected"] == 0 and status["ready"] == 0


def test_status_refuses_to_emit_nan() -> None:
    routes = HttpRoutes(lambda: {"round": 0, "finished": False, "x": math.nan})
    with pytest.raises(ValueError):
        routes.handle("GET", "/status")  # allow_nan=False: never invalid JSON on the wire


@pytest.mark.parametrize(("path", "ctype"), [
    ("/sdk/flkernel.wasm", "application/wasm"),  # required for WebAssembly.instantiateStreaming
    ("/sdk/runtime.js", "text/javascript"),
    ("/sdk/sub/mod.mjs", "text/javascript"),
    ("/sdk/alias.js", "text/javascript"),
    ("/sdk/data.bin", "application/octet-stream"),
])
def test_static_files_with_content_types(site: dict[str, Path], path: str, ctype: str) -> None:
    r = _routes(site).handle("GET", path)
    assert r.status == 200 and r.content_type == ctype
    assert r.body == (site["root"] / path[len("/sdk/"):]).read_bytes()
    assert r.headers["Cache-Control"] == "no-cache"


def test_index_page(site: dict[str, Path]) -> None:
    r = _routes(site).handle("GET", "/")
    assert r.status == 200 and r.content_type == "text/html" and b"<title>fl</title>" in r.body
    assert HttpRoutes(_engine().status).handle("GET", "/").status == 404  # no index configured


@pytest.mark.parametrize("path", [
    "/sdk/../../etc/passwd",
    "/sdk/../secret.txt",
    "/sdk/sub/../../secret.txt",
    "/sdk//etc/passwd",  # an absolute path after the prefix
    "/sdk/%2e%2e/secret.txt",  # percent-encoded dots are not decoded: no such file
    "/sdk/%2e%2e%2fsecret.txt",
    "/sdk/..%2fsecret.txt",
    "/sdk/..%5csecret.txt",
    "/sdk/....//secret.txt",
    "/sdk/escape.txt",  # symlink out of the root
    "/sdk/a\x00b",  # NUL byte
    "/sdk/",  # a directory
    "/sdk/sub",
    "/sdk",
    "/etc/passwd",
    "/nope",
])
def test_traversal_and_unknown_paths_are_404(site: dict[str, Path], path: str) -> None:
    r = _routes(site).handle("GET", path)
    assert r.status == 404 and r.content_type == "application/json"
    assert json.loads(r.body)["error"] == "not_found"
    assert b"top secret" not in r.body and b"root:" not in r.body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"])
def test_non_get_is_405(site: dict[str, Path], method: str) -> None:
    for path in ("/health", "/status", "/sdk/runtime.js"):
        r = _routes(site).handle(method, path)
        assert r.status == 405 and json.loads(r.body) == {"error": "method_not_allowed"}


# ── the same routes through the WebSocket transport's HTTP side ────────────────────────────────────────
def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path)  # http.client sends the path as given (no normalisation of "..")
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_routes_over_the_websocket_port(site: dict[str, Path]) -> None:
    async def main() -> dict[str, tuple[int, dict[str, str], bytes]]:
        engine = _engine()
        driver = EngineDriver(engine)
        ws = WebSocketTransport(driver, HttpRoutes(engine.status, {"/sdk/": site["root"]}, site["index"]),
                                1 << 20)
        port = await ws.start("127.0.0.1", 0)
        try:
            out = {}
            for p in ("/health", "/status", "/sdk/flkernel.wasm", "/sdk/runtime.js", "/sdk/../../etc/passwd",
                      "/sdk/%2e%2e/secret.txt", "/sdk/escape.txt", "/"):
                out[p] = await asyncio.to_thread(_get, port, p)
            return out
        finally:
            await ws.stop()

    got = asyncio.run(main())
    assert got["/health"][0] == 200 and json.loads(got["/health"][2])["ok"] is True
    assert got["/status"][0] == 200 and got["/status"][1]["content-type"] == "application/json"
    assert json.loads(got["/status"][2])["rounds"] == 2
    assert got["/sdk/flkernel.wasm"][0] == 200 and got["/sdk/flkernel.wasm"][1]["content-type"] == "application/wasm"
    assert got["/sdk/flkernel.wasm"][2] == b"\x00asm\x01\x00\x00\x00"
    assert got["/sdk/runtime.js"][1]["content-type"] == "text/javascript"
    for p in ("/sdk/../../etc/passwd", "/sdk/%2e%2e/secret.txt", "/sdk/escape.txt"):
        assert got[p][0] == 404 and b"top secret" not in got[p][2], p
    assert got["/"][0] == 200 and got["/"][1]["content-type"] == "text/html"


def test_non_get_is_405_over_the_websocket_port() -> None:
    async def main() -> list[int]:
        engine = _engine()
        ws = WebSocketTransport(EngineDriver(engine), HttpRoutes(engine.status), 1 << 20)
        port = await ws.start("127.0.0.1", 0)
        try:
            return [(await asyncio.to_thread(_get, port, "/health", m))[0] for m in ("POST", "PUT", "DELETE")]
        finally:
            await ws.stop()

    assert asyncio.run(main()) == [405, 405, 405]
