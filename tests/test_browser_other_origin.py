"""A page on another origin uses a coordinator that allows it (issue 14: importing the SDK from the coordinator
was blocked by CORS, and `/status` too, so no accuracy or ε): the page, served by a plain HTTP server on another
port, imports the SDK from the coordinator (no import map: the SDK's worker – a blob: module importing the coordinator's
fl-worker.js – loads Pyodide, libsodium, the kernel and the Python bundle from it), takes part in
rounds over its WebSocket and shows the global accuracy and ε from its `/status`. Without `--allowed-origins` the
same page cannot even load the SDK. Real `fl-coordinator serve`, four native clients, headless Chromium."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


def _serve(directory: Path) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(directory)))
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
