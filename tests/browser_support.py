"""Fixtures for the browser tests: a local HTTP server and one headless Chromium page per test module with the
runtime loaded (Pyodide + our Python files + the WASM kernel + libsodium-wrappers).

The server serves client_web/ (our JS, the kernel, harness.html and node_modules/ with Pyodide and
libsodium-wrappers) at ``/`` and the Python bundle (client_pyodide.bundle: the repository's own files) at ``/py/``.
Only 127.0.0.1; nothing is fetched from the internet. Chromium is Debian's (/usr/bin/chromium): Playwright never
downloads a browser here.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from client_pyodide import bundle

REPO = Path(__file__).resolve().parent.parent
CLIENT_WEB = REPO / "client_web"
CHROMIUM = os.environ.get("FL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


class _Handler(SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
                      ".py": "text/x-python", ".zip": "application/zip"}

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/py/"):
            rel = path[len("/py/"):]
            if rel == "manifest.json":
                body = json.dumps(bundle.manifest()).encode()
            else:
                f = bundle.resolve(rel)
                if f is None:
                    self.send_error(404)
                    return
                body = f.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/json" if rel.endswith(".json") else "text/x-python")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


class StaticServer:
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) for client_web/ and the Python bundle."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(CLIENT_WEB)))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def check_prerequisites() -> None:
    missing = []
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    if not (CLIENT_WEB / "node_modules" / "pyodide" / "pyodide.mjs").exists():
        missing.append("client_web/node_modules (npm ci in client_web/)")
    if missing:
        pytest.fail("browser tests need " + ", ".join(missing) + ": run `make web-setup`", pytrace=False)


class BrowserPage:
    """One harness page with the runtime loaded. ``run(code)`` executes Python in Pyodide and returns its
    ``result`` variable (JSON round trip); ``js(expr, arg)`` evaluates a JS function in the page."""

    def __init__(self, page: Any, timings: dict, external: list[str]) -> None:
        self.page, self.timings = page, timings
        self.external_requests = external  # every request not to our server (aborted)

    def run(self, code: str) -> Any:
        return self.page.evaluate("code => window.fl.run(code)", code)

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)


def launch_browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def wait_in_page(page: Any, pred: Any, timeout: float, what: str, logs: Any = None) -> Any:
    """Poll ``pred()`` until it is truthy (and return it), letting the page run between polls; ``TimeoutError``
    naming ``what`` (and ``logs()``, e.g. the coordinator's log) after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        page.wait_for_timeout(100)
    raise TimeoutError(f"{what} not reached in {timeout}s\n{logs() if logs else ''}")


def origin_guard(origin: str, external: list[str]) -> Callable[[Any], None]:
    """A Playwright route handler: requests under ``origin`` go through, anything else (the internet) is aborted
    and recorded in ``external``."""

    def guard(route: Any) -> None:
        if route.request.url.startswith(origin):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    return guard


def open_runtime_page(browser: Any, server: StaticServer) -> BrowserPage:
    page = browser.new_page()
    errors: list[str] = []
    external: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.route("**/*", origin_guard(server.url, external))
    page.goto(server.url + "harness.html")
    try:
        timings = page.evaluate("() => window.flRuntime")
    except Exception as exc:
        raise RuntimeError(f"runtime failed to load: {exc}; page errors: {errors}") from None
    return BrowserPage(page, timings, external)


@pytest.fixture(scope="module")
def browser_page() -> Iterator[BrowserPage]:
    """A loaded runtime page shared by one test module (Pyodide's cold start is ~3 s)."""
    check_prerequisites()
    from playwright.sync_api import sync_playwright

    server = StaticServer()
    try:
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                yield open_runtime_page(browser, server)
            finally:
                browser.close()
    finally:
        server.close()


# ── the browser's stored identity records ────────────────────────────────────────────────────────────────
# JS: the SDK's IndexedDB record of an identity slot ({seed, coordinatorKey, ledger, …}) – read independently of
# the SDK (database "fl-coordinator-sdk", store "identities", key "<origin>#<identity name>")
READ_IDENTITY_RECORD = """(key) => new Promise((resolve, reject) => {
  const open = indexedDB.open("fl-coordinator-sdk");
  let absent = false;
  open.onupgradeneeded = () => { absent = true; open.transaction.abort(); };  // never create it for the SDK
  open.onerror = () => (absent ? resolve(null) : reject(open.error));
  open.onsuccess = () => {
    const db = open.result;
    if (!db.objectStoreNames.contains("identities")) { db.close(); resolve(null); return; }
    const req = db.transaction("identities", "readonly").objectStore("identities").get(key);
    req.onsuccess = () => {
      db.close();
      const r = req.result;
      resolve(r ? { coordinatorKey: r.coordinatorKey ?? null, clientId: r.clientId ?? null, ledger: r.ledger ?? null,
                    seedLength: r.seed ? r.seed.length : 0 } : null);
    };
    req.onerror = () => { db.close(); reject(req.error); };
  };
})"""
