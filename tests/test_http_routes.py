"""coordinator.service.http_routes: /health, /status JSON (public) and /status/operator (bearer token), static files
(content types), path traversal refused, methods; and the same routes through the real WebSocket transport (HTTP
on the WebSocket port)."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
from pathlib import Path

import pytest

from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.service.driver import EngineDriver
from coordinator.service.http_routes import HttpRoutes
from coordinator.service.transport_ws import WebSocketTransport
from flcore.modelspec import mlp
from flcore.wire import client_id_for

TOKEN = "op-token-0123456789abcdef"
# registered clients (the engine lists them in its full status, with trust and state)
CLIENT_KEYS = [bytes([i]) * 32 for i in range(1, 4)]
CLIENT_IDS = [client_id_for(k) for k in CLIENT_KEYS]


def _engine(registry: bool = False) -> Engine:
    cfg = FederationConfig(model=mlp([4, 3]), rounds=2, clients_per_round=2, group_size=1, aggregator="mean")
    return Engine(cfg, b"\x07" * 32, seed=0, registry=dict(zip(CLIENT_IDS, CLIENT_KEYS, strict=True)) if registry
                  else None)


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
    # no noise: "not private" and ε null, never 0 (which would read as perfect privacy); no budget → null
    assert status["privacy"]["private"] is False and status["privacy"]["epsilon"] is None
    assert status["privacy"]["epsilon_budget"] is None
    assert status["coordinator_key"] == engine.public_key.hex()
    assert "clients" not in status and status["connected"] == 0 and status["ready"] == 0
    assert status["client_counts"] == {"registered": 0, "connected": 0, "banned": 0}


def test_status_refuses_to_emit_nan() -> None:
    routes = HttpRoutes(lambda: {"round": 0, "finished": False, "metrics": {"accuracy": math.nan}},
                        operator_token=TOKEN)
    with pytest.raises(ValueError):
        routes.handle("GET", "/status")  # allow_nan=False: never invalid JSON on the wire
    with pytest.raises(ValueError):
        routes.handle("GET", "/status/operator", authorization=f"Bearer {TOKEN}")


# ── /status (public) and /status/operator (bearer token) ───────────────────────────────────────────────
def test_public_status_has_counts_but_no_client_ids() -> None:
    engine = _engine(registry=True)
    r = HttpRoutes(engine.status, operator_token=TOKEN).handle("GET", "/status")
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert not any(cid.encode() in r.body for cid in CLIENT_IDS)
    status = json.loads(r.body)
    assert "clients" not in status and status["client_counts"] == {"registered": 3, "connected": 0, "banned": 0}
    assert {"round", "rounds", "metrics", "privacy", "finished", "connected"} <= set(status)  # the browser SDK


def test_operator_status_is_404_without_a_configured_token() -> None:
    for token in (None, ""):
        routes = HttpRoutes(_engine(registry=True).status, operator_token=token)
        for auth in (None, f"Bearer {TOKEN}", "Bearer "):
            r = routes.handle("GET", "/status/operator", authorization=auth)
            assert r.status == 404 and json.loads(r.body)["error"] == "not_found"
            assert b"clients" not in r.body


@pytest.mark.parametrize("auth", [
    None, "", "Bearer", "Bearer ", "Basic " + TOKEN, TOKEN, "Token " + TOKEN,
])
def test_operator_status_without_bearer_credentials_is_401(auth: str | None) -> None:
    r = HttpRoutes(_engine(registry=True).status, operator_token=TOKEN).handle("GET", "/status/operator",
                                                                             authorization=auth)
    assert r.status == 401 and r.content_type == "application/json" and r.headers["Cache-Control"] == "no-store"
    assert r.headers["WWW-Authenticate"].startswith("Bearer ") and "invalid_token" not in r.headers["WWW-Authenticate"]
    assert json.loads(r.body)["error"] == "unauthorized"
    assert TOKEN.encode() not in r.body and not any(cid.encode() in r.body for cid in CLIENT_IDS)


@pytest.mark.parametrize("given", [
    "wrong-token-0123456789abcdef", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), TOKEN[:16], "x",
    TOKEN + " " + TOKEN, "é" * 20, "\udcff" * 3,
])
def test_operator_status_with_a_wrong_token_is_401(given: str) -> None:
    r = HttpRoutes(_engine(registry=True).status, operator_token=TOKEN).handle("GET", "/status/operator",
                                                                             authorization=f"Bearer {given}")
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert TOKEN.encode() not in r.body and not any(cid.encode() in r.body for cid in CLIENT_IDS)


@pytest.mark.parametrize("auth", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} ", f" Bearer {TOKEN}"])
def test_operator_status_with_the_token_is_the_full_status(auth: str) -> None:
    engine = _engine(registry=True)
    r = HttpRoutes(engine.status, operator_token=TOKEN).handle("GET", "/status/operator?x=1", authorization=auth)
    assert r.status == 200 and r.content_type == "application/json" and r.headers["Cache-Control"] == "no-store"
    status = json.loads(r.body)
    assert status == json.loads(json.dumps(engine.status()))
    assert {c["id"] for c in status["clients"]} == set(CLIENT_IDS)
    assert all({"trust", "observations", "state", "kind", "banned", "connected"} <= set(c) for c in status["clients"])


@pytest.mark.parametrize("query", [
    f"token={TOKEN}", f"access_token={TOKEN}", f"authorization=Bearer%20{TOKEN}", f"operator_token={TOKEN}",
])
def test_operator_token_in_the_query_string_is_ignored(query: str) -> None:
    routes = HttpRoutes(_engine(registry=True).status, operator_token=TOKEN)
    r = routes.handle("GET", f"/status/operator?{query}")
    assert r.status == 401 and TOKEN.encode() not in r.body and not any(c.encode() in r.body for c in CLIENT_IDS)
    r = routes.handle("GET", f"/status?{query}")  # and the public view stays public
    assert r.status == 200 and not any(c.encode() in r.body for c in CLIENT_IDS)


def test_operator_status_only_at_its_exact_path() -> None:
    routes = HttpRoutes(_engine(registry=True).status, operator_token=TOKEN)
    for path in ("/status/operator/", "/status/operator.json", "/status/Operator", "/status/", "/status/x"):
        r = routes.handle("GET", path, authorization=f"Bearer {TOKEN}")
        assert r.status == 404 and not any(c.encode() in r.body for c in CLIENT_IDS), path
    for method in ("POST", "PUT"):
        assert routes.handle(method, "/status/operator", authorization=f"Bearer {TOKEN}").status == 405
    assert routes.handle("HEAD", "/status/operator").status == 401  # HEAD is GET without the body


def test_routes_repr_hides_the_token() -> None:
    assert TOKEN not in repr(HttpRoutes(_engine().status, operator_token=TOKEN))


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


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_methods_other_than_get_and_head_are_405(site: dict[str, Path], method: str) -> None:
    for path in ("/health", "/status", "/sdk/runtime.js"):
        r = _routes(site).handle(method, path)
        assert r.status == 405 and json.loads(r.body) == {"error": "method_not_allowed"}
        assert r.headers["Allow"] == "GET, HEAD"


# ── the same routes through the WebSocket transport's HTTP side ────────────────────────────────────────
def _get(port: int, path: str, method: str = "GET",
         headers: list[tuple[str, str]] | None = None) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.putrequest(method, path)  # http.client sends the path as given (no normalisation of "..")
        for name, value in headers or []:
            c.putheader(name, value)
        c.endheaders()
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


def test_operator_status_over_the_websocket_port() -> None:
    """The transport passes the Authorization header on; a repeated one counts as none."""
    bearer = [("Authorization", f"Bearer {TOKEN}")]
    cases = {
        "public": ("/status", bearer),
        "operator": ("/status/operator", bearer),
        "no header": ("/status/operator", []),
        "wrong": ("/status/operator", [("Authorization", "Bearer wrong-token-0123456789")]),
        "query": (f"/status/operator?token={TOKEN}&access_token={TOKEN}", []),
        "twice": ("/status/operator", [*bearer, *bearer]),
    }

    async def main() -> dict[str, tuple[int, dict[str, str], bytes]]:
        engine = _engine(registry=True)
        ws = WebSocketTransport(EngineDriver(engine), HttpRoutes(engine.status, operator_token=TOKEN), 1 << 20)
        port = await ws.start("127.0.0.1", 0)
        try:
            return {k: await asyncio.to_thread(_get, port, p, "GET", h) for k, (p, h) in cases.items()}
        finally:
            await ws.stop()

    got = asyncio.run(main())
    assert got["public"][0] == 200 and not any(c.encode() in got["public"][2] for c in CLIENT_IDS)
    assert got["operator"][0] == 200
    assert {c["id"] for c in json.loads(got["operator"][2])["clients"]} == set(CLIENT_IDS)
    for k in ("no header", "wrong", "query", "twice"):
        status, headers, body = got[k]
        assert status == 401 and headers["www-authenticate"].startswith("Bearer "), k
        assert not any(c.encode() in body for c in CLIENT_IDS) and TOKEN.encode() not in body, k


def test_health_is_o1_and_public_status_is_recomputed_at_most_once_per_ttl() -> None:
    """/health never builds the full status (it walks every identity), and the public /status – anyone may ask –
    is rebuilt at most once per ``public_status_ttl`` (bench_load: 10,000 identities behind every request)."""
    calls = {"status": 0}
    now = [100.0]

    def status() -> dict:
        calls["status"] += 1
        return {"round": calls["status"], "finished": False}

    routes = HttpRoutes(status, health=lambda: {"round": 7, "finished": False}, clock=lambda: now[0])
    for _ in range(50):
        assert json.loads(routes.handle("GET", "/health").body)["round"] == 7
    assert calls["status"] == 0
    first = [routes.handle("GET", "/status").body for _ in range(50)]
    assert calls["status"] == 1 and len(set(first)) == 1
    now[0] += 1.0
    routes.handle("GET", "/status")
    assert calls["status"] == 2
    uncached = HttpRoutes(status, public_status_ttl=0.0)
    uncached.handle("GET", "/status")
    uncached.handle("GET", "/status")
    assert calls["status"] == 4
