"""The browser SDK's lifecycle against a real `fl-coordinator serve` (headless Chromium, the demo page):
- the coordinator is SIGKILLed mid-federation and restarted: the tab reconnects with back-off and finishes;
- the identity (IndexedDB) survives a reload: same client id, the coordinator key pinned on first use matches;
- another coordinator (another key) on the same origin is refused: a fatal ``handshake`` error, no reconnects;
- a second client in the same tab gets its own identity slot (Web Lock), ``leave()`` says bye and ends
  participation; ``forgetIdentity`` gives a fresh identity;
- the privacy ledger comes back with the identity after the reload: one entry per masked input the tab sent
  (its completed rounds, plus the round cut by the SIGKILL if its masked input had left – never fewer).

Everything runs on the safe defaults: the coordinator's groups of 5 (two-thirds threshold, t = 4) and z = 2.5
meet the default policy of the tab and of the native clients; 6 rounds (7 participations at most, with the
repeated round) cost the tab ε ≈ 6.6 of its default budget of 10.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import check_prerequisites, launch_browser, origin_guard, wait_in_page
from e2e_support import Coordinator, Workers

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FLAGS = ["--rounds", "6", "--clients-per-round", "5", "--group-size", "5", "--aggregator", "mean",
         "--local-epochs", "1", "--noise-multiplier", "2.5", "--epsilon", "10", "--train-timeout", "30",
         "--phase-timeout", "2"]
INIT = """
window.__fl = { events: [] };
window.addEventListener("fl-demo-client", (e) => {
  e.detail.addEventListener("event", (ev) => window.__fl.events.push(ev.detail));
});
"""


@pytest.fixture
def workers() -> Iterator[Workers]:
    w = Workers()
    yield w
    w.kill()


def _events(page: Any, type_: str) -> list[dict]:
    return page.evaluate("(t) => window.__fl.events.filter((e) => e.type === t)", type_)


def test_reconnect_identity_pinning_and_leave(tmp_path: Path, workers: Workers) -> None:
    check_prerequisites()
    from playwright.sync_api import sync_playwright

    coord = Coordinator(tmp_path / "a", FLAGS)
    (tmp_path / "a").mkdir()
    coord.start()
    workers.spawn(tmp_path, f"127.0.0.1:{coord.grpc_port}", [1, 2, 3, 4], 5, "--partition", "iid")
    base = f"http://127.0.0.1:{coord.ws_port}"
    url = f"{base}/?shard=0/5&partition=iid&identity=sdk-test"
    external: list[str] = []
    guard = origin_guard(base + "/", external)

    with sync_playwright() as pw:
        browser = launch_browser(pw)
        try:
            context = browser.new_context()
            context.route("**/*", guard)
            context.add_init_script(INIT)
            page = context.new_page()
            page.goto(url)

            # SIGKILL the coordinator after round 2: the tab reports the loss and reconnects to the restarted one
            wait_in_page(page, lambda: coord.status()["round"] >= 2, 90, "round 2")
            coord.kill()
            wait_in_page(page, lambda: _events(page, "disconnected"), 30, "disconnected event")
            coord.start()
            page.wait_for_function("() => window.flDemo.summary || window.flDemo.error", timeout=90_000)
            summary = page.evaluate("() => window.flDemo.summary")
            assert page.evaluate("() => window.flDemo.error") is None
            assert summary["stopReason"] == "all 6 rounds done" and summary["reconnects"] >= 1, summary
            assert summary["errors"] == [] and summary["rounds"][-1] == 6, summary
            connected = _events(page, "connected")
            assert len(connected) >= 2 and connected[0]["firstUse"] and not connected[-1]["firstUse"], connected
            client_id, key = connected[0]["clientId"], connected[0]["coordinatorKey"]
            assert key == coord.key
            waits = [e["retryInMs"] for e in _events(page, "disconnected")]
            assert all(0 < w <= 15_000 for w in waits), waits
            ledger_events = _events(page, "ledger")
            ledger = page.evaluate("() => window.flDemo.client.ledger")
            assert ledger["participations"] == len(ledger_events) >= len(summary["rounds"]) == 6, ledger
            assert all(e["persisted"] for e in ledger_events) and ledger["epsilon"] <= 10
            counted = next(c["participations"] for c in coord.status()["clients"] if c["id"] == client_id)
            assert counted <= ledger["participations"] <= counted + 1, (counted, ledger)

            # reload: the identity and the pinned key come back from IndexedDB (the federation is over: stop)
            page.reload()
            page.wait_for_function("() => window.flDemo.summary || window.flDemo.error", timeout=60_000)
            again = _events(page, "connected")
            assert again and again[0]["clientId"] == client_id and not again[0]["firstUse"], again
            assert page.evaluate("() => window.flDemo.ledger") == ledger  # restored from IndexedDB, then nothing new
            assert page.evaluate("() => window.flDemo.summary.stopReason") == "all 6 rounds done"

            # another coordinator (another key) on the same origin: refused, fatal, not retried
            coord.kill()
            impostor = Coordinator(tmp_path / "b", FLAGS, ws_port=coord.ws_port, grpc_port=coord.grpc_port)
            (tmp_path / "b").mkdir()
            impostor.start()
            assert impostor.key != key
            page.reload()
            page.wait_for_function("() => window.flDemo.summary || window.flDemo.error", timeout=60_000)
            assert "handshake" in page.evaluate("() => window.flDemo.error")
            errors = _events(page, "error")
            assert errors and errors[-1]["code"] == "handshake" and errors[-1]["fatal"], errors
            assert not _events(page, "disconnected")
            assert impostor.status()["clients"] == []  # it never authenticated

            # a second client in the same tab cannot take the slot the demo holds (Web Lock): it gets the next one,
            # a new identity, which pins this coordinator's key on first use; leave() says bye
            out = page.evaluate("""async () => {
                const sdk = await import("/sdk/sdk/fl-client.js");
                const client = await sdk.connect(location.origin, { runtime: window.flDemo.client.runtime,
                                                                    identityName: "sdk-test",
                                                                    data: { x: new Float32Array(64 * 4), y: [0, 1, 2, 3] } });
                const joined = new Promise((resolve) => client.addEventListener("connected", (e) => resolve(e.detail)));
                const done = client.participate();
                const info = await joined;
                await client.leave("test over");
                return { slot: client.identityName, info, summary: await done };
            }""")
            assert out["slot"] == "sdk-test~2" and out["info"]["firstUse"], out
            assert out["info"]["clientId"] != client_id and out["info"]["coordinatorKey"] == impostor.key
            assert out["summary"]["stopReason"] == "test over", out
            wait_in_page(page, lambda: impostor.status()["connected"] == 0 and len(impostor.status()["clients"]) == 1,
                  10, "bye")

            # forgetIdentity: after a reload the demo's slot holds a new identity, which trusts this coordinator
            page.evaluate("""async () => {
                const sdk = await import("/sdk/sdk/fl-client.js");
                await sdk.forgetIdentity(location.origin, "sdk-test");
            }""")
            page.reload()
            fresh = wait_in_page(page, lambda: _events(page, "connected"), 60, "connected after forgetIdentity")
            assert fresh[0]["firstUse"] and fresh[0]["clientId"] not in (client_id, out["info"]["clientId"])
            assert page.evaluate("() => window.flDemo.client.identityName") == "sdk-test"
            impostor.kill()
        finally:
            browser.close()
    assert not external, external
