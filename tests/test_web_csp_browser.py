"""The browser client under the coordinator's security headers (issue 13, F18): a real ``fl-coordinator serve``
serves the demo page with its Content-Security-Policy and the ``/sdk/`` allow-list; a headless-Chromium tab loads
Pyodide, libsodium-wrappers, the kernel and the Python bundle, and joins over WebSocket – with no CSP violation, no
page error and no request leaving the origin – without ``'unsafe-eval'``. The browser does enforce the header: a
policy without ``'wasm-unsafe-eval'`` stops the runtime (in the SDK's worker, which gets the same header) with a
fatal error naming the violated directive."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import check_prerequisites, launch_browser, origin_guard
from e2e_support import Coordinator

from coordinator.service.security_headers import csp_for
from coordinator.service.web_assets import CLIENT_WEB

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FLAGS = ["--rounds", "1", "--clients-per-round", "2", "--group-size", "1", "--aggregator", "mean",
         "--noise-multiplier", "0"]
# installed before the page's scripts: every CSP violation the browser reports
INIT = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push({ directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample });
});
"""


@pytest.fixture
def coordinator(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Coordinator]:
    policy = getattr(request, "param", "")
    flags = list(FLAGS)
    if policy:
        (tmp_path / "fl.toml").write_text(f"[http]\ncontent_security_policy = {json.dumps(policy)}\n")
        flags += ["--config", str(tmp_path / "fl.toml")]
    coord = Coordinator(tmp_path, flags).start()
    yield coord
    coord.kill()


def _open_demo(coord: Coordinator) -> dict[str, Any]:
    check_prerequisites()
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{coord.ws_port}"
    external: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            context = browser.new_context()
            context.route("**/*", origin_guard(base + "/", external))
            context.add_init_script(INIT)
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            response = page.goto(f"{base}/?shard=0/10&partition=iid&identity=ephemeral")
            assert response is not None
            page.wait_for_function("() => (window.flDemo && (window.flDemo.error || (window.flDemo.client && "
                                   "window.flDemo.client.clientId))) || window.__csp.length", timeout=90_000)
            page.wait_for_timeout(200)
            connected = [c["kind"] for c in coord.status()["clients"] if c["connected"]]
            return {"connected": connected, "headers": response.headers, "csp": page.evaluate("() => window.__csp"), "errors": errors,
                    "external": external, "client": page.evaluate("() => window.flDemo.client && "
                                                                  "window.flDemo.client.clientId"),
                    "error": page.evaluate("() => window.flDemo.error ? String(window.flDemo.error) : null"),
                    "events": page.evaluate("() => window.flDemo.events.filter((e) => e.type === 'loading')")}
        finally:
            browser.close()


def test_demo_loads_and_joins_under_the_default_policy(coordinator: Coordinator) -> None:
    got = _open_demo(coordinator)
    h = got["headers"]
    assert h["content-security-policy"] == csp_for("text/html", (CLIENT_WEB / "demo" / "index.html").read_bytes())
    # the page has no inline script any more (no import map: the SDK's worker loads the runtime), so no hashes
    assert "'sha256-" not in h["content-security-policy"] and "'unsafe-eval'" not in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    assert got["csp"] == [] and got["errors"] == [] and got["external"] == [], got
    assert got["error"] is None and got["client"], (got, coordinator.log_text())
    assert got["connected"] == ["websocket"], got  # and it joined over the WebSocket (connect-src 'self')


# the default policy (an operator's policy is sent verbatim) without WebAssembly
NO_WASM = csp_for("text/html", (CLIENT_WEB / "demo" / "index.html").read_bytes()).replace(" 'wasm-unsafe-eval'", "")


@pytest.mark.parametrize("coordinator", [NO_WASM], indirect=True)
def test_the_policy_is_enforced_without_wasm_unsafe_eval_nothing_runs(coordinator: Coordinator) -> None:
    got = _open_demo(coordinator)
    assert got["headers"]["content-security-policy"] == NO_WASM  # [http] content_security_policy, verbatim
    assert got["client"] is None, got
    # the runtime compiles WebAssembly in the SDK's worker, which runs under the policy of its own script's response
    # (the same header): the violation is reported there, and loading ends with a fatal error naming it – no retries
    assert got["error"] and "Content-Security-Policy (script-src" in got["error"], got
    assert "retry" not in [e.get("stage") for e in got["events"]], got
