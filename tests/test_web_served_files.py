"""What the coordinator's port serves from client_web/ and the demo shards, over the real port (issue 13).

- F18: ``/sdk/`` serves an allow-list – every file the demo page, the SDK and Pyodide load (read from the files
  themselves: the page's import map and scripts, the JS modules' relative imports, the names in pyodide.mjs) and
  nothing else: Pyodide's console*.html (jQuery and xterm from CDNs, on the origin that holds the signing keys),
  READMEs, package.json, source maps, the kernel's C sources, the test harness, other npm packages.
- F2: ``/demo/shard``: a failing request is answered 400 from a cache – the partition is computed once, not per
  request –, the same partition serves every shard index, and valid shards are still served.
- F17: no response of the public routes carries a client id (a leak would fail here).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from e2e_support import http_get

from coordinator.federation.config import FederationConfig
from coordinator.federation.engine import Engine
from coordinator.service import asset_bundle, web_assets
from coordinator.service.driver import EngineDriver
from coordinator.service.http_routes import HttpRoutes
from coordinator.service.transport_ws import WebSocketTransport
from flcore.modelspec import mlp
from flcore.wire import client_id_for

CW = web_assets.CLIENT_WEB
CLIENT_KEYS = [bytes([i]) * 32 for i in range(1, 4)]
CLIENT_IDS = [client_id_for(k) for k in CLIENT_KEYS]


def _serve(paths: list[str], method: str = "GET") -> tuple[dict[str, tuple[int, dict[str, str], bytes]], HttpRoutes]:
    """``paths`` requested one by one from a real transport with the browser client mounted."""
    if web_assets.missing() is not None:
        pytest.skip(f"client_web not set up: {web_assets.missing()}")
    engine = Engine(FederationConfig(model=mlp([4, 3]), rounds=1, clients_per_round=1, group_size=1,
                                     aggregator="mean"), b"\x07" * 32, seed=0,
                    registry=dict(zip(CLIENT_IDS, CLIENT_KEYS, strict=True)))
    routes = HttpRoutes(engine.status, operator_token="op-token-0123456789abcdef")
    assert web_assets.mount(routes)

    async def main() -> dict[str, tuple[int, dict[str, str], bytes]]:
        ws = WebSocketTransport(EngineDriver(engine), routes, 1 << 20)
        port = await ws.start("127.0.0.1", 0)
        try:
            return {p: await asyncio.to_thread(http_get, port, p, None, method) for p in paths}
        finally:
            await ws.stop()
            routes.close()

    return asyncio.run(main()), routes


def _needed() -> set[str]:
    """Every URL of the coordinator's port the browser client loads, read from the files that load them: the page's
    scripts, the JS modules' relative imports, the SDK's worker, the service worker and what it precaches, and the
    runtime's large files under the content-hashed URLs of /sdk/assets.json (Pyodide's sibling files included)."""
    page = (CW / "demo" / "index.html").read_text()
    urls = set(re.findall(r'src="(/sdk/[^"]+)"', page))
    assert "importmap" not in page  # the worker needs none
    assert 'new URL(workerUrl ?? "./fl-worker.js", import.meta.url)' in (CW / "sdk" / "fl-client.js").read_text()
    urls |= {"/sdk/sdk/fl-worker.js", "/sdk/assets.json", "/sw.js", "/py/manifest.json"}
    shell = re.search(r"const SHELL = \[(.*?)\];", (CW / "sdk" / "fl-sw.js").read_text(), re.S)
    assert shell is not None
    urls |= set(re.findall(r'"(/[^"]*)"', shell.group(1)))
    bundle = asset_bundle.bundle(CW)
    index = json.loads(bundle.index)
    urls |= {u.removeprefix("..") for u in index["files"]}
    assert set(index["entry"]) == {"pyodide", "sodium", "kernel"}
    pyodide_dir = bundle.url("pyodide/pyodide.mjs").rsplit("/", 1)[0]
    for js in [*CW.glob("sdk/*.js"), *CW.glob("js/*.js"), *CW.glob("demo/*.js")]:
        imports = re.findall(r'^import\s.*?\sfrom\s+"([^"]+)";', js.read_text(), re.M)  # not the comments' examples
        for spec in imports:
            if spec.startswith("/sdk/"):
                urls.add(spec)
            elif spec.startswith("."):
                urls.add("/sdk/" + (js.parent / spec).resolve().relative_to(CW.resolve()).as_posix())
    pyodide = CW / "node_modules" / "pyodide"
    for name in set(re.findall(r"[\w.-]+\.(?:json|zip|wasm|mjs)\b", (pyodide / "pyodide.mjs").read_text())):
        if (pyodide / name).is_file():  # what pyodide.mjs fetches or imports from its own directory
            urls.add(f"{pyodide_dir}/{name}")
    return urls


NOT_SERVED = ["node_modules/pyodide/pyodide.asm.wasm", "node_modules/pyodide/pyodide.mjs",
              "node_modules/libsodium-wrappers/dist/modules-esm/libsodium-wrappers.mjs",
              "node_modules/pyodide/console.html", "node_modules/pyodide/console-v2.html",
              "node_modules/pyodide/README.md", "node_modules/pyodide/package.json",
              "node_modules/pyodide/pyodide.mjs.map", "node_modules/pyodide/pyodide.js",
              "node_modules/pyodide/ffi.d.ts", "node_modules/libsodium/package.json",
              "node_modules/libsodium-wrappers/dist/modules/libsodium-wrappers.js", "node_modules/ws/index.js",
              "node_modules/.package-lock.json", "harness.html", "package.json", "package-lock.json",
              "kernel/gemm.c", "kernel/build.sh", "node_modules/pyodide/", "node_modules/pyodide/./pyodide.mjs",
              "node_modules//pyodide/pyodide.mjs", "sdk/../node_modules/pyodide/console.html",
              "node_modules/pyodide/%2e%2e/pyodide/console.html", "js/../harness.html"]


def test_sdk_serves_what_the_browser_loads_and_nothing_else() -> None:
    needed = sorted(_needed())
    b = asset_bundle.bundle(CW)
    assert {b.url("pyodide/pyodide.asm.wasm"), b.url("pyodide/python_stdlib.zip"), b.url("pyodide/pyodide-lock.json"),
            b.url("pyodide/pyodide.asm.mjs"), b.url("sodium/libsodium.mjs"), b.url("kernel/flkernel.wasm"),
            "/sdk/js/runtime.js", "/sdk/js/loader.js", "/sdk/sdk/fl-client.js", "/sdk/demo/demo.js"} <= set(needed)
    existing = [p for p in NOT_SERVED if (CW / p).exists() or "%" in p or "//" in p or "./" in p]
    assert "node_modules/pyodide/console.html" in existing  # the npm package has it: the allow-list must hold
    got, _ = _serve(needed + ["/sdk/" + p for p in existing])
    for p in needed:
        assert got[p][0] == 200, p
    for p in existing:
        status, headers, body = got["/sdk/" + p]
        assert status == 404 and headers["content-type"] == "application/json", p
        assert b"jquery" not in body.lower()


def test_python_bundle_revalidates() -> None:
    """/py/ files and the manifest carry ETags: a reload of the page gets 304s, not the bundle again."""
    routes = HttpRoutes(dict)
    if web_assets.missing() is not None:
        pytest.skip(f"client_web not set up: {web_assets.missing()}")
    web_assets.mount(routes)
    for path in ("/py/manifest.json", "/py/flcore/session.py"):
        first = routes.handle("GET", path)
        assert first.status == 200 and first.headers["Cache-Control"] == "no-cache", path
        again = routes.handle("GET", path, if_none_match=first.headers["ETag"])
        assert again.status == 304 and again.body == b"" and again.headers["ETag"] == first.headers["ETag"], path


def test_failing_shard_requests_are_answered_from_a_cache() -> None:
    failing = [f"/demo/shard?i={i}&n=64" for i in (0, 0, 0, 5, 63)] * 4  # Dirichlet(0.5) cannot give 64 × 20
    same = ["/demo/shard?i=1&n=64&partition=dirichlet:0.50", "/demo/shard?i=2&n=64&partition=dirichlet"]
    valid = ["/demo/shard?i=3&n=64&partition=iid", "/demo/shard?i=4&n=64&partition=iid"]
    bad = ["/demo/shard?i=0&n=65", "/demo/shard?i=0&n=3&partition=zipf", "/demo/shard?i=x&n=3",
           "/demo/shard?i=0&n=3&partition=dirichlet:nan"]
    got, routes = _serve(failing + same + valid + bad)
    shards = routes.handlers[web_assets.DEMO_PREFIX]
    assert isinstance(shards, web_assets.ShardService)
    messages = {json.loads(got[p][2])["message"] for p in failing + same}
    assert all(got[p][0] == 400 for p in failing + same) and len(messages) == 1, messages
    assert "Dirichlet" in messages.pop()
    for p in valid:
        status, _, body = got[p]
        shard = json.loads(body)
        assert status == 200 and shard["partition"] == "iid" and shard["count"] == len(shard["y"]) > 0
    for p in bad:  # refused up front, never computed
        assert got[p][0] == 400 and json.loads(got[p][2])["error"] == "bad_request", p
    # one computation for the failing partition (20 + 2 requests, five shard indices, three spellings of α = 0.5)
    # and one for the iid partition (two shards)
    assert shards.computed == 2


def test_new_partitions_are_rate_limited_cached_ones_are_not() -> None:
    """A flood of distinct parameters (each a new partition to compute) gets 503 beyond the burst; requests for
    partitions already computed – failing or not, any shard index – are still answered."""
    shards = web_assets.ShardService(new_per_s=1e-6, burst=2)  # no refill within the test
    routes = HttpRoutes(dict, handlers={web_assets.DEMO_PREFIX: shards})
    first = [routes.handle("GET", f"/demo/shard?i=0&n=64&seed={s}") for s in (1, 2)]
    flood = [routes.handle("GET", f"/demo/shard?i=0&n=64&seed={s}") for s in range(3, 13)]
    again = [routes.handle("GET", f"/demo/shard?i={i}&n=64&seed={s}") for s in (1, 2) for i in (0, 7)]
    assert [r.status for r in first] == [400, 400] and shards.computed == 2
    assert {r.status for r in flood} == {503} and all(r.headers["Retry-After"] == "2" for r in flood)
    assert [r.status for r in again] == [400] * 4 and shards.computed == 2
    ok = web_assets.ShardService(new_per_s=1e-6, burst=1)
    routes = HttpRoutes(dict, handlers={web_assets.DEMO_PREFIX: ok})
    assert [routes.handle("GET", f"/demo/shard?i={i}&n=4&partition=iid").status for i in range(4)] == [200] * 4
    assert routes.handle("GET", "/demo/shard?i=0&n=5&partition=iid").status == 503 and ok.computed == 1


def test_public_routes_never_carry_a_client_id() -> None:
    paths = ["/", "/health", "/status", "/status/operator", "/sdk/nope", "/py/manifest.json", "/demo/shard?i=0&n=2",
             "/demo/nope", "/status?clients=1"]
    for method in ("GET", "HEAD"):
        got, _ = _serve(paths, method)
        for p, (_, headers, body) in got.items():
            text = body.decode(errors="replace") + json.dumps(headers)
            assert not any(cid in text for cid in CLIENT_IDS), (method, p)
    status: dict[str, Any] = json.loads(_serve(["/status"])[0]["/status"][2])
    assert status["client_counts"] == {"registered": 3, "connected": 0, "banned": 0} and "clients" not in status
