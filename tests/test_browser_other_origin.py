"""A page on another origin uses a coordinator that allows it (issue 14: importing the SDK from the coordinator
was blocked by CORS, and `/status` too, so no accuracy or ε): the page, served by a plain HTTP server on another
port, imports the SDK from the coordinator (no import map: the SDK's worker – a blob: module importing the coordinator's
fl-worker.js – loads Pyodide, libsodium, the kernel and the Python bundle from it), takes part in
rounds over its WebSocket and shows the global accuracy and ε from its `/status`. Without `--allowed-origins` the
same page cannot even load the SDK. Real `fl-coordinator serve`, four native clients, headless Chromium."""

from __future__ import annotations

import json
import threading
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from browser_support import check_prerequisites, launch_browser, wait_in_page
from e2e_support import Coordinator, Workers

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>another origin</title>
</head>
<body><p id="out">loading</p>
<script type="module">
window.__page = { status: null, error: null, summary: null };
try {
  const { connect } = await import("COORD/sdk/sdk/fl-client.js");
  const r = await fetch("COORD/demo/shard?i=0&n=5&partition=iid");
  if (!r.ok) throw new Error(`shard: HTTP ${r.status}`);
  const shard = await r.json();
  const bin = atob(shard.x);
  const bytes = new Uint8Array(bin.length);
  for (let k = 0; k < bin.length; k++) bytes[k] = bin.charCodeAt(k);
  const client = await connect("COORD", { identityName: "other-origin" });
  await client.setData(new Float32Array(bytes.buffer), Int32Array.from(shard.y));
  client.addEventListener("status", (e) => {
    window.__page.status = e.detail;
    document.getElementById("out").textContent = `accuracy ${e.detail.accuracy} epsilon ${e.detail.epsilon}`;
  });
  window.__page.summary = await client.participate();
} catch (err) {
  window.__page.error = String(err && err.stack || err);
}
</script></body></html>
"""
FLAGS = ["--rounds", "2", "--clients-per-round", "5", "--group-size", "5", "--aggregator", "mean",
         "--local-epochs", "1", "--noise-multiplier", "2.5", "--epsilon", "10", "--train-timeout", "60",
         "--phase-timeout", "30", "--population", "5"]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(directory: Path, handler: type[SimpleHTTPRequestHandler] = _Quiet) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _run_page(tmp_path: Path, coord: Coordinator, timeout: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{coord.ws_port}"
    (site / "index.html").write_text(PAGE.replace("COORD", base))
    httpd = _serve(site)
    page_origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    external: list[str] = []

    def guard(route: Any) -> None:
        if route.request.url.startswith((base + "/", page_origin + "/")):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    try:
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                context = browser.new_context()
                context.route("**/*", guard)
                page = context.new_page()
                page.goto(page_origin + "/index.html")
                wait_in_page(page, lambda: page.evaluate(
                    "() => window.__page && (window.__page.summary !== null || window.__page.error !== null)"),
                    timeout, "the page's federation")
                if page.evaluate("() => window.__page.error") is None:  # the final status poll after the end
                    wait_in_page(page, lambda: page.evaluate("() => window.__page.status?.finished === true"), 20,
                                 "the final status")
                out = page.evaluate("() => window.__page")
                out["text"] = page.text_content("#out")
            finally:
                browser.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not external, external
    out["origin"] = page_origin
    return out


def test_a_page_on_an_allowed_origin_runs_rounds_and_shows_accuracy_and_epsilon(tmp_path: Path,
                                                                                 workers: Workers) -> None:
    check_prerequisites()
    (tmp_path / "c").mkdir()
    coord = Coordinator(tmp_path / "c", [*FLAGS, "--allowed-origins", "*"]).start()
    workers.spawn(tmp_path, f"127.0.0.1:{coord.grpc_port}", [1, 2, 3, 4], 5, "--partition", "iid")
    out = _run_page(tmp_path, coord, 240)
    assert out["error"] is None, out["error"]
    assert out["summary"]["stopReason"] == "all 2 rounds done" and out["summary"]["rounds"], out["summary"]
    status = out["status"]
    assert status["accuracy"] is not None and status["epsilon"] is not None and status["round"] == 2, status
    assert out["text"].startswith("accuracy "), out["text"]


def test_without_allowed_origins_the_other_origin_cannot_load_the_sdk(tmp_path: Path) -> None:
    check_prerequisites()
    (tmp_path / "c").mkdir()
    coord = Coordinator(tmp_path / "c", FLAGS).start()
    out = _run_page(tmp_path, coord, 60)
    assert out["error"] is not None and out["summary"] is None, out


SELF_HOSTED = """<!doctype html>
<html><head><meta charset="utf-8"><title>self-hosted</title></head>
<body><p id="out">loading</p>
<script type="module">
window.__page = { error: null, connected: null, stages: [] };
try {
  // everything from this origin: the SDK, its worker, the runtime's files and the Python bundle
  const { connect } = await import("/sdk/sdk/fl-client.js");
  const x = Float32Array.from({ length: 64 * 20 }, (_, k) => (k * 7919 % 17) / 16);  // 20 examples of its own
  const y = Int32Array.from({ length: 20 }, (_, k) => k % 10);
  const client = await connect("COORD", { identityName: "self-hosted", assetsUrl: "/sdk/assets.json",
    pythonUrl: "/py/", data: { x, y }, onEvent: (e) => { if (e.type === "loading") window.__page.stages.push(e.stage); } });
  client.addEventListener("connected", (e) => { window.__page.connected = e.detail.clientId; });
  client.participate().catch((err) => { window.__page.error = String(err && err.message || err); });
} catch (err) {
  window.__page.error = String(err && err.message || err);
}
</script></body></html>
"""


def _mirror(site: Path, base: str) -> list[str]:
    """What a self-hosting site copies from the coordinator: the SDK's JS, /sdk/assets.json with every file it lists
    (at the same relative paths) and the Python bundle. Returns the assets' paths."""
    def get(path: str) -> bytes:
        with urllib.request.urlopen(base + path, timeout=30) as r:
            return r.read()

    def put(path: str, body: bytes) -> None:
        (site / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (site / path.lstrip("/")).write_bytes(body)

    for path in ("/sdk/sdk/fl-client.js", "/sdk/sdk/fl-worker.js", "/sdk/js/runtime.js", "/sdk/js/loader.js",
                 "/sdk/assets.json", "/py/manifest.json"):
        put(path, get(path))
    assets = [rel.removeprefix("..") for rel in json.loads(get("/sdk/assets.json"))["files"]]
    for path in assets:
        put(path, get(path))
    for f in json.loads(get("/py/manifest.json"))["files"]:
        put(f"/py/{f}", get(f"/py/{f}"))
    return assets


class _Typed(_Quiet):
    extensions_map: ClassVar[dict[str, str]] = {**SimpleHTTPRequestHandler.extensions_map,
                                                ".mjs": "text/javascript", ".js": "text/javascript",
                                                ".wasm": "application/wasm", ".py": "text/x-python"}


def _self_hosted(tmp_path: Path, base: str, variant: str) -> tuple[dict[str, Any], set[str]]:
    """Mirror the coordinator's files into a site (one byte of the kernel changed for "tampered"), open its page;
    returns the page's state and the paths it asked the coordinator for."""
    from playwright.sync_api import sync_playwright

    site = tmp_path / variant
    site.mkdir()
    assets = _mirror(site, base)
    (site / "index.html").write_text(SELF_HOSTED.replace("COORD", base))
    if variant == "tampered":
        kernel = site / next(p for p in assets if p.endswith("flkernel.wasm")).lstrip("/")
        data = bytearray(kernel.read_bytes())
        data[len(data) // 2] ^= 1
        kernel.write_bytes(bytes(data))
    httpd = _serve(site, _Typed)
    origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    seen: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                context = browser.new_context()
                context.on("request", lambda r: seen.append(r.url))
                page = context.new_page()
                page.goto(origin + "/index.html")
                wait_in_page(page, lambda: page.evaluate(
                    "() => window.__page && (window.__page.connected || window.__page.error)"), 120, variant)
                state = page.evaluate("() => window.__page")
            finally:
                browser.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    return state, {u.removeprefix(base).split("?")[0] for u in seen if u.startswith(base)}


def test_a_self_hosted_sdk_and_runtime_load_and_a_tampered_file_is_refused(tmp_path: Path) -> None:
    """docs/operations.md "Other origins": a site serves the SDK, the runtime's files and the Python bundle itself
    and only talks to the coordinator's /ws (and /status); the hashes in assets.json and the Python manifest are
    checked wherever the files come from – a copy with one changed byte is refused (fatal: no retries)."""
    check_prerequisites()
    (tmp_path / "c").mkdir()
    coord = Coordinator(tmp_path / "c", [*FLAGS, "--allowed-origins", "*"]).start()
    base = f"http://127.0.0.1:{coord.ws_port}"
    honest, asked = _self_hosted(tmp_path, base, "honest")
    assert honest["error"] is None and honest["connected"], honest
    assert asked <= {"/ws", "/status"}, asked  # the coordinator was asked for nothing but its WebSocket and status
    tampered, asked = _self_hosted(tmp_path, base, "tampered")
    assert tampered["connected"] is None and "SHA-256" in tampered["error"] and "flkernel.wasm" in tampered["error"], \
        tampered
    assert "retry" not in tampered["stages"] and asked <= {"/ws", "/status"}, tampered  # fatal at once
