"""The coordinator's own HTTP/1.1 server (coordinator.service.http_server) with a real browser: a real
``fl-coordinator serve`` whose Pyodide files are already gzip-encoded serves the demo page to headless Chromium,
which loads Pyodide's wasm and ``.mjs`` with ``Content-Encoding: gzip`` over keep-alive connections, starts the
runtime and joins over the WebSocket – with no page error."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import check_prerequisites, launch_browser, origin_guard
from e2e_support import Coordinator

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FLAGS = ["--rounds", "1", "--clients-per-round", "2", "--group-size", "1", "--aggregator", "mean",
         "--noise-multiplier", "0"]
GZIPPED_NAMES = ("pyodide/pyodide.asm.wasm", "pyodide/pyodide.asm.mjs")  # under /assets/<hash>/ (assets.json)


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    coord = Coordinator(tmp_path, FLAGS).start()
    yield coord
    coord.kill()


def _encoding(port: int, path: str) -> str | None:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("HEAD", path, headers={"Accept-Encoding": "gzip"})
        r = c.getresponse()
        r.read()
        return r.getheader("Content-Encoding")
    finally:
        c.close()


def _asset_paths(port: int) -> list[str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", "/sdk/assets.json")
        files = json.loads(c.getresponse().read())["files"]
    finally:
        c.close()
    return [rel.removeprefix("..") for rel in files if rel.endswith(GZIPPED_NAMES)]


def test_the_demo_loads_gzip_encoded_pyodide_and_joins(coordinator: Coordinator) -> None:
    check_prerequisites()
    from playwright.sync_api import sync_playwright

    port = coordinator.ws_port
    gzipped = _asset_paths(port)
    assert len(gzipped) == 2, gzipped
    deadline = time.monotonic() + 30
    while not all(_encoding(port, p) == "gzip" for p in gzipped):  # the first requests start the compression
        assert time.monotonic() < deadline, "the gzip encodings were not ready within 30 s"
        time.sleep(0.2)
    base = f"http://127.0.0.1:{port}"
    external: list[str] = []
    errors: list[str] = []
    responses: dict[str, dict[str, Any]] = {}
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            context = browser.new_context()
            context.route("**/*", origin_guard(base + "/", external))
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # (the context's responses: the runtime is loaded by the SDK's worker, not the page)
            context.on("response", lambda r: responses.__setitem__(r.url.removeprefix(base), {
                "status": r.status, "encoding": r.headers.get("content-encoding")}))
            page.goto(f"{base}/?shard=0/10&partition=iid&identity=ephemeral&sw=off")
            page.wait_for_function("() => window.flDemo && (window.flDemo.error || (window.flDemo.client && "
                                   "window.flDemo.client.clientId))", timeout=90_000)
            client = page.evaluate("() => window.flDemo.client && window.flDemo.client.clientId")
            error = page.evaluate("() => window.flDemo.error ? String(window.flDemo.error) : null")
            connected: list[str] = []
            for _ in range(100):  # the client id exists before the WebSocket is up: wait for it to be connected
                connected = [c["kind"] for c in coordinator.status()["clients"] if c["connected"]]
                if connected:
                    break
                page.wait_for_timeout(100)
        finally:
            browser.close()
    assert error is None and client and errors == [] and external == [], (error, errors, external)
    for path in gzipped:
        assert responses.get(path) == {"status": 200, "encoding": "gzip"}, (path, responses.get(path))
    assert connected == ["websocket"], connected
